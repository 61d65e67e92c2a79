"""`app.sandboxes.listing`: what a key may list, whatever filters it asks for."""

from __future__ import annotations

import httpx

from app.db import transaction
from app.identity.actor import Actor
from app.runtime import Runtime
from app.sandboxes import listing
from tests.fixtures import factories

SCOPES = frozenset({"sandboxes:read"})


async def listed(runtime: Runtime, actor: Actor, where: listing.Filters) -> set[str]:
    async with transaction(runtime.sessions) as session:
        rows, _ = await listing.page(session, actor, where, limit=50, cursor=None)
    return {row.id for row in rows}


class TestPage:
    async def test_keys_see_their_team_and_owner_only(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        a = await factories.team_with_key(client, "team-a")
        b = await factories.team_with_key(client, "team-b")
        alice = (await factories.sandbox(client, a, owner="alice"))["id"]
        bob = (await factories.sandbox(client, a, owner="bob"))["id"]
        other = (await factories.sandbox(client, b))["id"]

        team_key = Actor(key_id="k", team_id="team-a", scopes=SCOPES)
        # Naming another team does not widen a team key's view.
        assert await listed(runtime, team_key, listing.Filters(team="team-b")) == {alice, bob}
        alice_key = Actor(key_id="k", team_id="team-a", scopes=SCOPES, owner="alice")
        assert await listed(runtime, alice_key, listing.Filters(owner="bob")) == {alice}

        admin = Actor(key_id="admin", team_id=None, scopes=frozenset({"admin"}), is_admin=True)
        assert await listed(runtime, admin, listing.Filters()) == {alice, bob, other}
        assert await listed(runtime, admin, listing.Filters(team="team-b")) == {other}
        assert await listed(runtime, admin, listing.Filters(owner="bob")) == {bob}

    async def test_pages_newest_first_through_the_cursor(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        a = await factories.team_with_key(client, "team-a")
        made = [(await factories.sandbox(client, a))["id"] for _ in range(3)]
        actor = Actor(key_id="k", team_id="team-a", scopes=SCOPES)
        seen: list[str] = []
        cursor = None
        async with transaction(runtime.sessions) as session:
            while True:
                rows, cursor = await listing.page(
                    session, actor, listing.Filters(), limit=2, cursor=cursor
                )
                seen.extend(row.id for row in rows)
                if cursor is None:
                    break
        assert seen == list(reversed(made))
