"""Identity queries: a team with only finished sandboxes is empty, and deleting one revokes
exactly its live keys."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from app.db import transaction
from app.identity import repository
from app.models import ApiKey
from app.runtime import Runtime
from tests.usage import rows


class TestTeams:
    async def test_only_unfinished_sandboxes_keep_a_team_busy(self, runtime: Runtime) -> None:
        async with runtime.engine.begin() as conn:
            await rows.teams(conn, ["team-a"])
            await rows.sandboxes(conn, {"sbx_a00000000001": ("team-a", None)}, state="deleted")
            await rows.sandboxes(conn, {"sbx_a00000000002": ("team-a", None)}, state="failed")
        async with transaction(runtime.sessions) as session:
            assert not await repository.has_unfinished_sandbox(session, "team-a")
        async with runtime.engine.begin() as conn:
            await rows.sandboxes(conn, {"sbx_a00000000003": ("team-a", None)}, state="unknown")
        async with transaction(runtime.sessions) as session:
            assert await repository.has_unfinished_sandbox(session, "team-a")


class TestKeys:
    async def test_revoking_a_team_keeps_earlier_revocations_and_other_teams(
        self, runtime: Runtime
    ) -> None:
        earlier = datetime(2026, 1, 1, tzinfo=UTC)
        async with runtime.engine.begin() as conn:
            await rows.teams(conn, ["team-a", "team-b"])
        async with transaction(runtime.sessions) as session:
            for key_id, team, revoked_at in (
                ("a1", "team-a", None),
                ("a2", "team-a", earlier),
                ("b1", "team-b", None),
            ):
                await repository.add_key(
                    session,
                    ApiKey(
                        id=key_id,
                        team_id=team,
                        name=key_id,
                        secret_sha256=b"\0" * 32,
                        scopes=[],
                        revoked_at=revoked_at,
                    ),
                )
        now = datetime.now(UTC)
        async with transaction(runtime.sessions) as session:
            await repository.revoke_team_keys(session, "team-a", now)
        async with transaction(runtime.sessions) as session:
            revoked = {k.id: k.revoked_at for k in await session.scalars(select(ApiKey))}
        assert revoked == {"a1": now, "a2": earlier, "b1": None}
