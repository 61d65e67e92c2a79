"""Logs and secrets: one JSON access line per request with its request id, route template,
status, duration and key id; and no secret (the upstream key, an admin key, a team key)
appears in any log line, response, error body or metric, whatever the request did."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from app.db import session_factory
from app.logs import JsonFormatter
from app.main import create_app
from app.metrics import observe_upstream
from app.operations.circuit import UpstreamCircuit, chain
from app.runtime import Runtime
from app.settings import Settings
from app.upstream.client import UpstreamClient
from app.upstream.simulator import create_simulator_app
from tests.fixtures import factories

UPSTREAM_CANARY = "csb_CANARYupstreamKEY0123456789abcdef"
ADMIN_CANARY = "CANARYadminKEY-" + "z" * 32
ADMIN = {"Authorization": f"Bearer {ADMIN_CANARY}"}


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "corral.access"]


class TestAccessLog:
    async def test_one_json_line_per_request_with_the_request_id_echoed(
        self, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        headers = await factories.team_with_key(client, "team-a")
        created = await factories.sandbox(client, headers)
        caplog.clear()
        caplog.set_level(logging.INFO, logger="corral.access")
        response = await client.get(
            f"/v1/sandboxes/{created['id']}", headers={**headers, "X-Request-Id": "trace-42"}
        )
        assert response.headers["x-request-id"] == "trace-42"
        [line] = access_lines(caplog)
        assert line["request_id"] == "trace-42"
        assert line["route"] == "/v1/sandboxes/{sandbox_id}"
        assert line["method"] == "GET" and line["status"] == 200
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        key_id = headers["Authorization"].split("_")[1]
        assert line["key_id"] == key_id
        assert created["id"] not in json.dumps(line)

    async def test_a_missing_or_unusable_request_id_is_generated(
        self, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="corral.access")
        plain = await client.get("/healthz")
        odd = await client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
        generated = {plain.headers["x-request-id"], odd.headers["x-request-id"]}
        assert len(generated) == 2 and all(len(g) == 32 for g in generated)
        lines = access_lines(caplog)
        assert {line["request_id"] for line in lines} == generated
        assert {line["key_id"] for line in lines} == {None}


@pytest.fixture
async def canary_client(
    database_url: str, runtime: Runtime
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Corral configured with canary secrets: its upstream key and an env admin key."""
    simulator = create_simulator_app(api_key=UPSTREAM_CANARY)
    settings = Settings(
        database_url=database_url,
        admin_key=SecretStr(ADMIN_CANARY),
        upstream="simulator",
        upstream_key=SecretStr(UPSTREAM_CANARY),
        reconcile_enabled=False,
    )
    upstream = UpstreamClient(
        "http://simulator",
        UPSTREAM_CANARY,
        transport=httpx.ASGITransport(app=simulator),
        backoff_base=0.01,
        backoff_max=0.05,
        deadline=5,
        observer=chain(observe_upstream, UpstreamCircuit().observe),
    )
    canary = Runtime(
        settings=settings,
        engine=runtime.engine,
        sessions=session_factory(runtime.engine),
        upstream=upstream,
        simulator=simulator,
        circuit=UpstreamCircuit(),
    )
    app = create_app(runtime=canary)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://corral") as c,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=simulator), base_url="http://simulator"
        ) as s,
    ):
        yield c, s
    await upstream.aclose()


async def test_no_secret_leaks_anywhere(
    canary_client: tuple[httpx.AsyncClient, httpx.AsyncClient],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, sim = canary_client
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await client.request(method, path, **kwargs)
        seen.append(f"{response.status_code} {dict(response.headers)} {response.text}")
        return response

    created = await call(
        "POST", "/v1/admin/teams", json={"id": "team-a", "name": "A"}, headers=ADMIN
    )
    assert created.status_code == 201
    issued = await call(
        "POST",
        "/v1/admin/teams/team-a/keys",
        json={"name": "k", "scopes": factories.ALL_TEAM_SCOPES},
        headers=ADMIN,
    )
    team_key = issued.json()["key"]
    team = {"Authorization": f"Bearer {team_key}"}
    # The creation answer is the one place a team key may appear; nothing after it may.
    seen.clear()
    box = await call("POST", "/v1/sandboxes", json={"tier": "Nano"}, headers=team)
    assert box.status_code == 201, box.text
    await call("GET", f"/v1/sandboxes/{box.json()['id']}", headers=team)
    await call("GET", "/v1/admin/teams/team-a/keys", headers=ADMIN)
    rotated = await call(
        "POST", f"/v1/admin/keys/{issued.json()['id']}/rotate", json={}, headers=ADMIN
    )
    successor = rotated.json().pop("key")
    seen[-1] = seen[-1].replace(successor, "<successor shown once>")
    await call("GET", "/v1/admin/audit", headers=ADMIN)
    # Failures: upstream errors, wrong keys that resemble the real ones, bad input.
    await sim.put(
        "/_simulator/config",
        json={"faults": {"fork": {"error_rate": 1.0, "status": 500}}},
        headers={"Authorization": f"Bearer {UPSTREAM_CANARY}"},
    )
    failed = await call("POST", "/v1/sandboxes", json={"tier": "Nano"}, headers=team)
    assert failed.status_code in (502, 503)
    wrong_secret = team_key[:-4] + "AAAA"
    assert (
        await call("GET", "/v1/sandboxes", headers={"Authorization": f"Bearer {wrong_secret}"})
    ).status_code == 401
    assert (
        await call("GET", "/v1/admin/teams", headers={"Authorization": f"Bearer {ADMIN_CANARY}x"})
    ).status_code == 401
    await call("POST", "/v1/sandboxes", json={"tier": "Nano", "bogus": 1}, headers=team)
    await call("GET", "/healthz")
    await call("GET", "/readyz")
    await call("GET", "/metrics", headers=ADMIN)

    formatter = JsonFormatter()
    logs = "\n".join(formatter.format(r) for r in caplog.records)
    captured = capsys.readouterr()
    everything = "\n".join([*seen, logs, captured.out, captured.err])
    assert "corral.access" in logs  # the logs really were captured
    for secret in (UPSTREAM_CANARY, ADMIN_CANARY, team_key, successor):
        token_secret = secret.split("_", 2)[-1]
        assert secret not in everything
        assert token_secret not in everything
    assert "CANARY" not in everything
