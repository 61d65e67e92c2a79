"""The admin verbs: each writes its change and its audit row in the caller's transaction and
commits neither, and the verbs that end a key's life forget it in the key cache."""

from __future__ import annotations

from decimal import Decimal

import httpx
from sqlalchemy import func, select

from app.admin import service
from app.admin.schemas import KeyCreate, TeamPatch
from app.db import transaction
from app.identity.actor import Actor
from app.identity.cache import KeyCache
from app.models import ApiKey, AuditEntry, Team
from app.runtime import Runtime
from tests.fixtures import factories

ADMIN = Actor(key_id="admin-1", team_id=None, scopes=frozenset({"admin"}), is_admin=True)


async def audits(runtime: Runtime, action: str) -> list[AuditEntry]:
    async with transaction(runtime.sessions) as session:
        rows = await session.scalars(select(AuditEntry).where(AuditEntry.action == action))
        return list(rows)


class TestUpdateTeam:
    async def test_sets_the_named_fields_and_audits_them(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await factories.team(client, "team-a")
        body = TeamPatch.model_validate({"name": None, "max_concurrent": 3, "max_tier": None})
        async with transaction(runtime.sessions) as session:
            team = await service.update_team(session, ADMIN, "team-a", body)
        assert (team.name, team.max_concurrent, team.max_tier) == ("team-a", 3, None)
        [row] = await audits(runtime, "team.update")
        assert (row.actor, row.team_id, row.target) == ("admin-1", "team-a", "team-a")
        # A null name is "unchanged", so it is neither set nor audited.
        assert row.detail == {"max_concurrent": "3", "max_tier": None}

    async def test_commits_nothing_itself(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await factories.team(client, "team-a")
        body = TeamPatch(monthly_budget_credits=Decimal("5"))
        async with runtime.sessions() as session, session.begin():
            await service.update_team(session, ADMIN, "team-a", body)
            await session.rollback()
        async with transaction(runtime.sessions) as session:
            team = await session.get(Team, "team-a")
            assert team is not None and team.monthly_budget_credits is None
        assert await audits(runtime, "team.update") == []


class TestKeys:
    async def test_revoking_forgets_the_key_and_audits_it(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await factories.team(client, "team-a")
        cache = KeyCache()
        async with transaction(runtime.sessions) as session:
            issued = await service.issue_key(
                session, ADMIN, "team-a", KeyCreate(name="ci", scopes=["sandboxes:read"])
            )
        actor = Actor(key_id=issued.row.id, team_id="team-a", scopes=frozenset())
        cache.put(issued.token, actor, None)
        async with transaction(runtime.sessions) as session:
            revoked = await service.revoke_key(session, ADMIN, issued.row.id, keys=cache)
        assert revoked.revoked_at is not None
        assert cache.get(issued.token) is None
        assert [(a.target, a.team_id) for a in await audits(runtime, "key.revoke")] == [
            (issued.row.id, "team-a")
        ]
        [created] = await audits(runtime, "key.create")
        assert created.target == issued.row.id

    async def test_deleting_a_team_forgets_its_keys(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await factories.team(client, "team-a")
        cache = KeyCache()
        cache.put("token-a", Actor(key_id="k1", team_id="team-a", scopes=frozenset()), None)
        cache.put("token-b", Actor(key_id="k2", team_id="team-b", scopes=frozenset()), None)
        async with transaction(runtime.sessions) as session:
            await service.delete_team(session, ADMIN, "team-a", keys=cache)
        assert cache.get("token-a") is None and cache.get("token-b") is not None
        async with transaction(runtime.sessions) as session:
            live = await session.scalar(
                select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
            )
        assert live == 0
        assert [a.target for a in await audits(runtime, "team.delete")] == ["team-a"]
