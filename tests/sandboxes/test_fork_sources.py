"""What a create or a fork may copy (DESIGN §15, `app.templates.service.fork_source`): the
default template, the templates an admin allowed, and the caller's own sandboxes; anything
else is refused the same way whether or not it exists, on the native API and the facade."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fixtures import factories

# A template the simulator has besides the default one (`pcz35m`), which no admin allowed.
OTHER_TEMPLATE = "7ngcrf"
NOWHERE = "zz9nowhere"


def _problem(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"].endswith("/fork-source-not-allowed")
    return body


def _without(body: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in {"instance", *names}}


async def _create(
    client: httpx.AsyncClient, headers: dict[str, str], template: str, **body: Any
) -> httpx.Response:
    return await client.post(
        "/v1/sandboxes", json={"template": template, "start": False, **body}, headers=headers
    )


async def _forks(sim: httpx.AsyncClient) -> int:
    counts: dict[str, int] = (await sim.get("/_simulator/requests")).json()
    return counts.get("fork", 0)


class TestNativeCreate:
    async def test_another_teams_sandbox_is_refused_like_an_id_that_exists_nowhere(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        a = await factories.team_with_key(client, "team-a")
        b = await factories.team_with_key(client, "team-b")
        theirs = await factories.sandbox(client, a, start=False)
        forks = await _forks(sim)

        stolen = _problem(await _create(client, b, theirs["upstream_id"]))
        missing = _problem(await _create(client, b, NOWHERE))
        assert "default template" in stolen["detail"] and "allowed" in stolen["detail"]
        # The same answer but for the id the caller sent: no existence oracle.
        assert _without(stolen, "detail", "source") == _without(missing, "detail", "source")
        assert stolen["detail"].replace(theirs["upstream_id"], NOWHERE) == missing["detail"]
        # Nothing recorded, nothing forked upstream.
        assert (await client.get("/v1/sandboxes", headers=b)).json()["items"] == []
        assert await _forks(sim) == forks

    async def test_an_upstream_template_nobody_allowed_is_refused(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        b = await factories.team_with_key(client, "team-b")
        _problem(await _create(client, b, OTHER_TEMPLATE))
        assert (await client.get("/v1/sandboxes", headers=b)).json()["items"] == []

    async def test_the_default_template_and_the_teams_own_sandbox_are_forkable(
        self, client: httpx.AsyncClient
    ) -> None:
        a = await factories.team_with_key(client, "team-a")
        plain = await _create(client, a, "pcz35m")
        assert plain.status_code == 201, plain.text
        copy = await _create(client, a, plain.json()["upstream_id"])
        assert copy.status_code == 201, copy.text
        assert copy.json()["template"] == plain.json()["upstream_id"]

    async def test_an_owner_bound_key_forks_only_its_owners_sandboxes(
        self, client: httpx.AsyncClient
    ) -> None:
        team = await factories.team_with_key(client, "team-a")
        alice = await factories.key(client, "team-a", owner="alice")
        bobs = await factories.sandbox(client, team, owner="bob", start=False)
        alices = await factories.sandbox(client, alice, start=False)
        refused = _problem(await _create(client, alice, bobs["upstream_id"]))
        missing = _problem(await _create(client, alice, NOWHERE))
        assert _without(refused, "detail", "source") == _without(missing, "detail", "source")
        own = await _create(client, alice, alices["upstream_id"])
        assert own.status_code == 201 and own.json()["owner"] == "alice"

    async def test_a_deleted_own_sandbox_cannot_be_forked(self, client: httpx.AsyncClient) -> None:
        a = await factories.team_with_key(client, "team-a")
        gone = await factories.sandbox(client, a, start=False)
        assert (await client.delete(f"/v1/sandboxes/{gone['id']}", headers=a)).status_code == 200
        refused = await _create(client, a, gone["upstream_id"])
        assert refused.status_code == 409 and refused.json()["type"].endswith("/invalid-state")


class TestAllowedTemplates:
    async def test_an_organisation_template_is_forkable_by_every_team_until_disallowed(
        self, client: httpx.AsyncClient
    ) -> None:
        a = await factories.team_with_key(client, "team-a")
        b = await factories.team_with_key(client, "team-b")
        put = await client.put(
            f"/v1/admin/fork-templates/{OTHER_TEMPLATE}", headers=factories.ADMIN
        )
        assert put.status_code == 201, put.text
        for headers in (a, b):
            created = await _create(client, headers, OTHER_TEMPLATE)
            assert created.status_code == 201, created.text
            assert created.json()["template"] == OTHER_TEMPLATE
        gone = await client.delete(
            f"/v1/admin/fork-templates/{OTHER_TEMPLATE}", headers=factories.ADMIN
        )
        assert gone.status_code == 204, gone.text
        _problem(await _create(client, a, OTHER_TEMPLATE))

    async def test_a_team_template_is_forkable_by_that_team_only(
        self, client: httpx.AsyncClient
    ) -> None:
        a = await factories.team_with_key(client, "team-a")
        b = await factories.team_with_key(client, "team-b")
        put = await client.put(
            f"/v1/admin/teams/team-a/fork-templates/{OTHER_TEMPLATE}", headers=factories.ADMIN
        )
        assert put.status_code == 201, put.text
        assert (await _create(client, a, OTHER_TEMPLATE)).status_code == 201
        _problem(await _create(client, b, OTHER_TEMPLATE))

    async def test_an_admin_may_share_one_teams_sandbox_as_a_template(
        self, client: httpx.AsyncClient
    ) -> None:
        a = await factories.team_with_key(client, "team-a")
        b = await factories.team_with_key(client, "team-b")
        golden = await factories.sandbox(client, a, start=False)
        put = await client.put(
            f"/v1/admin/teams/team-b/fork-templates/{golden['upstream_id']}",
            headers=factories.ADMIN,
        )
        assert put.status_code == 201, put.text
        copy = await _create(client, b, golden["upstream_id"])
        assert copy.status_code == 201, copy.text
        assert copy.json()["team"] == "team-b"


class TestAdminCreate:
    async def test_an_admin_forks_a_known_sandbox_but_not_an_unknown_upstream_id(
        self, client: httpx.AsyncClient
    ) -> None:
        a = await factories.team_with_key(client, "team-a")
        theirs = await factories.sandbox(client, a, start=False)
        known = await _create(client, factories.ADMIN, theirs["upstream_id"], team="team-a")
        assert known.status_code == 201, known.text
        _problem(await _create(client, factories.ADMIN, OTHER_TEMPLATE, team="team-a"))
        _problem(await _create(client, factories.ADMIN, NOWHERE, team="team-a"))


class TestFacadeFork:
    async def test_another_teams_sandbox_is_refused_like_an_id_that_exists_nowhere(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        a = await factories.team_with_key(client, "team-a")
        b = await factories.team_with_key(client, "team-b")
        theirs = await factories.sandbox(client, a, start=False)
        forks = await _forks(sim)
        stolen = await client.post(f"/csb/sandbox/{theirs['upstream_id']}/fork", json={}, headers=b)
        missing = await client.post(f"/csb/sandbox/{NOWHERE}/fork", json={}, headers=b)
        unshared = await client.post(f"/csb/sandbox/{OTHER_TEMPLATE}/fork", json={}, headers=b)
        for refused, source in (
            (stolen, theirs["upstream_id"]),
            (missing, NOWHERE),
            (unshared, OTHER_TEMPLATE),
        ):
            assert refused.status_code == 403, refused.text
            body = refused.json()
            assert body["success"] is False
            assert body["errors"][0].replace(source, NOWHERE) == missing.json()["errors"][0]
        assert "default template" in missing.json()["errors"][0]
        assert (await client.get("/v1/sandboxes", headers=b)).json()["items"] == []
        assert await _forks(sim) == forks

    async def test_allowed_templates_and_own_sandboxes_fork(
        self, client: httpx.AsyncClient
    ) -> None:
        a = await factories.team_with_key(client, "team-a")
        put = await client.put(
            f"/v1/admin/teams/team-a/fork-templates/{OTHER_TEMPLATE}", headers=factories.ADMIN
        )
        assert put.status_code == 201, put.text
        forked = await client.post(f"/csb/sandbox/{OTHER_TEMPLATE}/fork", json={}, headers=a)
        assert forked.status_code == 201, forked.text
        again = await client.post(
            f"/csb/sandbox/{forked.json()['data']['id']}/fork", json={}, headers=a
        )
        assert again.status_code == 201, again.text
        templates = sorted(
            s["template"] for s in (await client.get("/v1/sandboxes", headers=a)).json()["items"]
        )
        assert templates == sorted([OTHER_TEMPLATE, forked.json()["data"]["id"]])
