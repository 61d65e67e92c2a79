"""The hourly meter of upstream work: forks, starts and sessions per team and per key, refused
with 429 + Retry-After naming the limit, given back when the work certainly did not happen,
and race-free across connections."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app import metering
from app.admission import service as admission
from app.errors import TooManyRequests
from app.identity.actor import Actor
from app.models import AuditEntry, UpstreamWork
from app.runtime import Runtime
from app.usage import budget
from tests.fixtures import factories
from tests.fixtures.metrics import scrape, value

LIMIT = 2
HOUR = 3600
PLENTY = 100


def _limits(settings: Any, **limits: int) -> Any:
    every = {f"{scope}_hourly_{kind}": PLENTY for scope in ("team", "key") for kind in KINDS}
    return settings.model_copy(update={**every, **limits})


KINDS = ("forks", "starts", "sessions")


async def _fork(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await client.post("/v1/sandboxes", json={"start": False, **body}, headers=headers)


async def _mint(
    client: httpx.AsyncClient, headers: dict[str, str], sandbox_id: str, user: str = "alice"
) -> httpx.Response:
    return await client.post(
        f"/v1/sandboxes/{sandbox_id}/sessions", json={"user": user}, headers=headers
    )


async def _faults(sim: httpx.AsyncClient, **per_operation: dict[str, Any]) -> None:
    response = await sim.put("/_simulator/config", json={"faults": per_operation})
    assert response.status_code == 200, response.text


async def _advance(sim: httpx.AsyncClient, seconds: int) -> None:
    response = await sim.post("/_simulator/clock/advance", json={"seconds": seconds})
    assert response.status_code == 200, response.text


async def _upstream_calls(sim: httpx.AsyncClient, operation: str) -> int:
    counts = (await sim.get("/_simulator/requests")).json()
    return int(counts.get(operation, 0))


def _refused(
    response: httpx.Response,
    limit: str,
    scope: str,
    maximum: int = LIMIT,
    current: int | None = None,
) -> int:
    """Assert a meter refusal naming `limit`; returns its Retry-After."""
    current = maximum if current is None else current
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["type"].endswith("upstream-work-limited")
    assert (body["limit"], body["scope"]) == (limit, scope)
    assert (body["current"], body["maximum"], body["window_seconds"]) == (current, maximum, HOUR)
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= HOUR
    return retry_after


class TestTeamLimit:
    @pytest.fixture
    def settings(self, settings: Any) -> Any:
        return _limits(
            settings,
            team_hourly_forks=LIMIT,
            team_hourly_starts=LIMIT + 1,
            team_hourly_sessions=LIMIT,
        )

    async def test_refuses_the_fork_over_the_limit_whatever_the_key_or_start(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        headers = await factories.team_with_key(client)
        source = await _fork(client, headers)
        assert source.status_code == 201, source.text
        # A fork of the team's sandbox with start=false, by an admin key for the team.
        forked = await client.post(
            f"/v1/sandboxes/{source.json()['id']}/fork", json={"start": False}, headers=admin
        )
        assert forked.status_code == 201, forked.text
        forks = await _upstream_calls(sim, "fork")
        await _advance(sim, 600)
        other_key = await factories.key(client, "search-ui")
        retry_after = _refused(await _fork(client, other_key), "hourly_forks", "team")
        # The oldest fork leaves the window an hour after it was made.
        assert HOUR - 600 - 5 <= retry_after <= HOUR - 600
        _refused(await _fork(client, headers, start=True), "hourly_forks", "team")
        assert await _upstream_calls(sim, "fork") == forks
        assert len((await client.get("/v1/sandboxes", headers=headers)).json()["items"]) == 2

    async def test_one_team_spending_its_limit_leaves_another_team_alone(
        self, client: httpx.AsyncClient
    ) -> None:
        spent = await factories.team_with_key(client)
        for _ in range(LIMIT):
            assert (await _fork(client, spent)).status_code == 201
        _refused(await _fork(client, spent), "hourly_forks", "team")
        other = await factories.team_with_key(client, "other")
        assert (await _fork(client, other)).status_code == 201

    async def test_refuses_the_start_over_the_limit_and_leaves_the_sandbox_as_it_was(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)  # start 1
        for _ in range(LIMIT):  # starts 2 and 3
            await client.post(f"/v1/sandboxes/{sandbox['id']}/hibernate", headers=headers)
            started = await client.post(f"/v1/sandboxes/{sandbox['id']}/start", headers=headers)
            assert started.status_code == 200, started.text
        await client.post(f"/v1/sandboxes/{sandbox['id']}/hibernate", headers=headers)
        refused = await client.post(f"/v1/sandboxes/{sandbox['id']}/start", headers=headers)
        _refused(refused, "hourly_starts", "team", LIMIT + 1)
        got = await client.get(f"/v1/sandboxes/{sandbox['id']}", headers=headers)
        assert got.json()["state"] == "hibernated"
        async with runtime.sessions() as session:
            outcome = await session.scalar(
                select(AuditEntry.outcome)
                .where(AuditEntry.target == sandbox["id"], AuditEntry.action == "sandbox.start")
                .order_by(AuditEntry.id.desc())
            )
        assert outcome == "refused"
        # A session would have to wake it: refused by the same limit, and no session made.
        _refused(await _mint(client, headers, sandbox["id"]), "hourly_starts", "team", LIMIT + 1)
        listed = await client.get(f"/v1/sandboxes/{sandbox['id']}/sessions", headers=headers)
        assert listed.json()["items"] == []

    async def test_a_start_of_a_running_sandbox_boots_nothing_and_is_not_metered(
        self, client: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)  # start 1
        for _ in range(LIMIT + 1):
            started = await client.post(f"/v1/sandboxes/{sandbox['id']}/start", headers=headers)
            assert started.json()["state"] == "running", started.text
        for _ in range(LIMIT):  # starts 2 and 3
            await client.post(f"/v1/sandboxes/{sandbox['id']}/hibernate", headers=headers)
            started = await client.post(f"/v1/sandboxes/{sandbox['id']}/start", headers=headers)
            assert started.status_code == 200, started.text
        await client.post(f"/v1/sandboxes/{sandbox['id']}/hibernate", headers=headers)
        refused = await client.post(f"/v1/sandboxes/{sandbox['id']}/start", headers=headers)
        _refused(refused, "hourly_starts", "team", LIMIT + 1)

    async def test_refuses_the_session_over_the_limit(self, client: httpx.AsyncClient) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        assert (await _mint(client, headers, sandbox["id"], "alice")).status_code == 201
        assert (await _mint(client, headers, sandbox["id"], "bob")).status_code == 201
        # Any user: the team's limit is not the per-user rate limit.
        _refused(await _mint(client, headers, sandbox["id"], "carol"), "hourly_sessions", "team")
        listed = await client.get(f"/v1/sandboxes/{sandbox['id']}/sessions", headers=headers)
        assert len(listed.json()["items"]) == LIMIT

    async def test_a_team_override_takes_effect_and_null_goes_back_to_the_setting(
        self, client: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        headers = await factories.team_with_key(client)
        for _ in range(LIMIT):
            assert (await _fork(client, headers)).status_code == 201
        _refused(await _fork(client, headers), "hourly_forks", "team")
        patched = await client.patch(
            "/v1/admin/teams/search-ui", json={"hourly_forks": LIMIT + 1}, headers=admin
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["hourly_forks"] == LIMIT + 1
        got = await client.get("/v1/admin/teams/search-ui", headers=admin)
        assert (got.json()["hourly_forks"], got.json()["hourly_starts"]) == (LIMIT + 1, None)
        assert (await _fork(client, headers)).status_code == 201
        _refused(await _fork(client, headers), "hourly_forks", "team", LIMIT + 1)
        audit = await client.get("/v1/admin/audit", params={"action": "team.update"}, headers=admin)
        assert audit.json()["items"][0]["detail"] == {"hourly_forks": str(LIMIT + 1)}
        reset = await client.patch(
            "/v1/admin/teams/search-ui", json={"hourly_forks": None}, headers=admin
        )
        assert reset.json()["hourly_forks"] is None
        _refused(await _fork(client, headers), "hourly_forks", "team", LIMIT, LIMIT + 1)

    async def test_a_team_created_with_a_limit_has_it(
        self, client: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        created = await client.post(
            "/v1/admin/teams",
            json={"id": "small", "name": "Small", "hourly_forks": 1, "hourly_sessions": 7},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        assert (created.json()["hourly_forks"], created.json()["hourly_sessions"]) == (1, 7)
        headers = await factories.key(client, "small")
        assert (await _fork(client, headers)).status_code == 201
        _refused(await _fork(client, headers), "hourly_forks", "team", 1)
        audit = await client.get("/v1/admin/audit", params={"action": "team.create"}, headers=admin)
        assert audit.json()["items"][0]["detail"] == {"hourly_forks": "1", "hourly_sessions": "7"}

    @pytest.mark.parametrize("bad", [0, -1, 1_000_001, "many", 1.5])
    async def test_a_bad_override_is_refused_and_changes_nothing(
        self, client: httpx.AsyncClient, admin: dict[str, str], bad: object
    ) -> None:
        await factories.team(client, hourly_starts=5)
        patched = await client.patch(
            "/v1/admin/teams/search-ui",
            json={"hourly_forks": 3, "hourly_starts": bad},
            headers=admin,
        )
        assert patched.status_code == 422, patched.text
        assert patched.headers["content-type"].startswith("application/problem+json")
        got = (await client.get("/v1/admin/teams/search-ui", headers=admin)).json()
        assert (got["hourly_forks"], got["hourly_starts"]) == (None, 5)
        created = await client.post(
            "/v1/admin/teams", json={"id": "x", "name": "x", "hourly_sessions": bad}, headers=admin
        )
        assert created.status_code == 422, created.text
        assert (await client.get("/v1/admin/teams/x", headers=admin)).status_code == 404

    async def test_the_window_slides_and_old_units_are_pruned(
        self, client: httpx.AsyncClient, runtime: Runtime, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        for _ in range(LIMIT):
            assert (await _fork(client, headers)).status_code == 201
        _refused(await _fork(client, headers), "hourly_forks", "team")
        await _advance(sim, HOUR)
        assert (await _fork(client, headers)).status_code == 201
        await budget.enforce_budgets(runtime)
        async with runtime.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(UpstreamWork)) == 1

    async def test_a_refusal_is_counted_in_the_metrics(self, client: httpx.AsyncClient) -> None:
        headers = await factories.team_with_key(client)
        for _ in range(LIMIT):
            assert (await _fork(client, headers)).status_code == 201
        labels = {"limit": "hourly_forks", "scope": "team"}
        before = value(await scrape(client), "corral_upstream_work_refused_total", **labels)
        _refused(await _fork(client, headers), "hourly_forks", "team")
        after = value(await scrape(client), "corral_upstream_work_refused_total", **labels)
        assert after == (before or 0) + 1

    async def test_the_facade_refuses_a_fork_in_the_upstream_shape(
        self, client: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        for _ in range(LIMIT):
            assert (await _fork(client, headers)).status_code == 201
        refused = await client.post("/csb/sandbox/pcz35m/fork", json={}, headers=headers)
        assert refused.status_code == 429, refused.text
        assert "hourly_forks (team)" in refused.json()["errors"][0]
        assert int(refused.headers["Retry-After"]) >= 1


class TestKeyLimit:
    @pytest.fixture
    def settings(self, settings: Any) -> Any:
        return _limits(settings, key_hourly_forks=LIMIT, key_hourly_sessions=LIMIT)

    async def test_refuses_the_key_over_its_limit_while_another_key_of_the_team_works(
        self, client: httpx.AsyncClient
    ) -> None:
        first = await factories.team_with_key(client)
        second = await factories.key(client, "search-ui")
        for _ in range(LIMIT):
            assert (await _fork(client, first)).status_code == 201
        _refused(await _fork(client, first), "hourly_forks", "key")
        assert (await _fork(client, second)).status_code == 201

    async def test_an_admin_key_is_metered_as_itself_across_teams(
        self, client: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        for team_id in ("a", "b"):
            await factories.team(client, team_id)
            assert (await _fork(client, admin, team=team_id)).status_code == 201
        await factories.team(client, "c")
        _refused(await _fork(client, admin, team="c"), "hourly_forks", "key")
        assert (await _fork(client, await factories.key(client, "a"))).status_code == 201

    async def test_a_browser_token_is_metered_as_the_key_that_issued_it(
        self, client: httpx.AsyncClient
    ) -> None:
        issuer = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, issuer)
        issued = await client.post(
            f"/v1/sandboxes/{sandbox['id']}/browser-tokens",
            json={"user": "alice", "permission": "write", "ttl_seconds": 300},
            headers=issuer,
        )
        assert issued.status_code == 201, issued.text
        page = {"Authorization": f"Bearer {issued.json()['token']}"}
        for _ in range(LIMIT):
            traded = await client.post("/v1/browser/session", headers=page)
            assert traded.status_code in (200, 201), traded.text
        _refused(await _mint(client, issuer, sandbox["id"], "bob"), "hourly_sessions", "key")
        other = await factories.key(client, "search-ui")
        assert (await _mint(client, other, sandbox["id"], "bob")).status_code == 201


class TestRefund:
    @pytest.fixture
    def settings(self, settings: Any) -> Any:
        return _limits(
            settings, team_hourly_forks=LIMIT, team_hourly_starts=LIMIT, team_hourly_sessions=1
        )

    async def test_a_fork_the_upstream_refused_gives_its_units_back(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        await _faults(sim, fork={"error_rate": 1.0, "status": 400})
        for _ in range(LIMIT + 1):
            failed = await client.post("/v1/sandboxes", json={}, headers=headers)
            assert failed.status_code in (422, 502), failed.text
        await _faults(sim)
        for _ in range(LIMIT):
            await factories.sandbox(client, headers)
        _refused(await _fork(client, headers), "hourly_forks", "team")

    async def test_a_fork_that_may_have_happened_keeps_its_unit_and_gives_the_start_back(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        await _faults(sim, fork={"error_rate": 1.0, "status": 500})
        failed = await client.post("/v1/sandboxes", json={}, headers=headers)
        assert failed.status_code == 502, failed.text
        await _faults(sim)
        await factories.sandbox(client, headers)
        _refused(await _fork(client, headers), "hourly_forks", "team")
        # Its start was never sent: one start is left after the second create's.
        sandbox = (await client.get("/v1/sandboxes", headers=headers)).json()["items"][0]
        await client.post(f"/v1/sandboxes/{sandbox['id']}/hibernate", headers=headers)
        started = await client.post(f"/v1/sandboxes/{sandbox['id']}/start", headers=headers)
        assert started.status_code == 200, started.text

    async def test_a_start_the_upstream_refused_gives_its_unit_back(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        await client.post(f"/v1/sandboxes/{sandbox['id']}/hibernate", headers=headers)
        await _faults(sim, start={"error_rate": 1.0, "status": 400})
        for _ in range(LIMIT + 1):
            failed = await client.post(f"/v1/sandboxes/{sandbox['id']}/start", headers=headers)
            assert failed.status_code == 502, failed.text
        await _faults(sim)
        started = await client.post(f"/v1/sandboxes/{sandbox['id']}/start", headers=headers)
        assert started.status_code == 200, started.text
        await client.post(f"/v1/sandboxes/{sandbox['id']}/hibernate", headers=headers)
        refused = await client.post(f"/v1/sandboxes/{sandbox['id']}/start", headers=headers)
        _refused(refused, "hourly_starts", "team")

    async def test_a_session_the_upstream_refused_gives_its_unit_back(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        sandbox = await factories.sandbox(client, headers)
        await _faults(sim, sessions={"error_rate": 1.0, "status": 400})
        assert (await _mint(client, headers, sandbox["id"])).status_code == 502
        await _faults(sim, sessions={"error_rate": 1.0, "status": 500})
        assert (await _mint(client, headers, sandbox["id"])).status_code == 502
        await _faults(sim)
        # The 400 gave its unit back; the 500 may have made a session, and keeps it.
        _refused(await _mint(client, headers, sandbox["id"]), "hourly_sessions", "team", 1)


class TestConcurrency:
    @pytest.fixture
    def settings(self, settings: Any) -> Any:
        return _limits(settings, team_hourly_forks=LIMIT, team_hourly_sessions=LIMIT)

    @pytest.mark.parametrize(
        ("kind", "under_org_row"),
        [(metering.Work.FORK, True), (metering.Work.SESSION, False)],
        ids=["fork-under-the-org-row", "session-under-the-meters-locks"],
    )
    async def test_two_charges_at_the_limit_admit_exactly_one(
        self, client: httpx.AsyncClient, runtime: Runtime, kind: metering.Work, under_org_row: bool
    ) -> None:
        await factories.team(client)
        actors = [Actor(key_id=f"key{i}", team_id="search-ui", scopes=frozenset()) for i in (1, 2)]

        async def charge_in(session: Any, actor: Actor) -> None:
            # As the callers do: forks and starts inside admission's hold of the org row.
            held = await admission.hold(session, "search-ui") if under_org_row else None
            await metering.charge(session, runtime.settings, actor, "search-ui", (kind,), held=held)

        for _ in range(LIMIT - 1):
            async with runtime.sessions() as session, session.begin():
                await charge_in(session, actors[0])

        async def charge(actor: Actor, hold: asyncio.Event | None = None) -> str:
            async with runtime.sessions() as session, session.begin():
                try:
                    await charge_in(session, actor)
                except TooManyRequests:
                    return "refused"
                if hold is not None:
                    await hold.wait()
            return "charged"

        # The first holds its transaction open after charging: the second must wait for it,
        # then see its unit, on its own connection.
        release = asyncio.Event()
        first = asyncio.create_task(charge(actors[0], release))
        await asyncio.sleep(0.2)
        second = asyncio.create_task(charge(actors[1]))
        try:
            await asyncio.sleep(0.3)
            waited = not second.done()
        finally:
            release.set()
            outcomes = sorted(await asyncio.gather(first, second))
        assert waited
        assert outcomes == ["charged", "refused"]

    async def test_a_fork_or_start_charged_outside_the_org_row_is_refused(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await factories.team(client)
        actor = Actor(key_id="key1", team_id="search-ui", scopes=frozenset())
        for kinds in metering.creating(False), metering.creating(True):
            async with runtime.sessions() as session, session.begin():
                with pytest.raises(ValueError, match="under the org row"):
                    await metering.charge(session, runtime.settings, actor, "search-ui", kinds)
        async with runtime.sessions() as session:
            units = await session.scalar(select(func.count()).select_from(UpstreamWork))
        assert units == 0

    async def test_concurrent_creates_at_the_limit_admit_exactly_the_limit(
        self, client: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        responses = await asyncio.gather(*(_fork(client, headers) for _ in range(LIMIT * 3)))
        assert sorted(r.status_code for r in responses) == [201] * LIMIT + [429] * LIMIT * 2
