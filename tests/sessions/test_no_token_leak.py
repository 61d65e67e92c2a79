"""Pitcher tokens reach only the caller that minted them.

A full run (teams, keys, sandboxes, API and browser-token mints, a wake-up, lists, reads,
events, costs, audit, metrics) with every log record captured at DEBUG (the request log is
Corral's access log) and every response kept. The simulator's pitcher tokens are random
strings, collected from the session answers; none may appear in any log record, in any
other response, or in any row of any table."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.models import Base
from app.runtime import Runtime
from tests.fixtures import factories

SESSION_ROUTES = ("/sessions", "/v1/browser/session")


def _is_session_answer(response: httpx.Response) -> bool:
    return response.request.method == "POST" and response.request.url.path.endswith(SESSION_ROUTES)


async def test_pitcher_tokens_appear_only_in_session_answers(
    client: httpx.AsyncClient,
    runtime: Runtime,
    sim: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    responses: list[httpx.Response] = []

    async def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = await client.request(method, url, **kwargs)
        assert response.status_code < 500, response.text
        responses.append(response)
        return response

    await factories.team(client, "search-ui")
    headers = await factories.key(client, "search-ui")
    created = await call("POST", "/v1/sandboxes", json={"owner": "alice"}, headers=headers)
    sandbox_id = created.json()["id"]
    base = f"/v1/sandboxes/{sandbox_id}"
    for user, permission in (("alice", "write"), ("bob", "read")):
        await call("POST", f"{base}/sessions", json={"user": user, "permission": permission},
                   headers=headers)  # fmt: skip
    issued = await call("POST", f"{base}/browser-tokens", json={"user": "alice"}, headers=headers)
    browser = {"Authorization": f"Bearer {issued.json()['token']}"}
    await call("POST", "/v1/browser/session", headers=browser)
    await call("POST", f"{base}/hibernate", headers=headers)
    await call("POST", "/v1/browser/session", json={"sandbox_id": sandbox_id}, headers=browser)
    await call("POST", f"{base}/sessions", json={"user": "carol"}, headers=headers)
    for url in (
        f"{base}/sessions",
        base,
        "/v1/sandboxes",
        f"{base}/events",
        f"{base}/cost",
        "/v1/quota",
    ):
        await call("GET", url, headers=headers)
    for url in ("/v1/admin/audit", "/v1/admin/teams", "/metrics"):
        await call("GET", url, headers=factories.ADMIN)

    minted = [r for r in responses if _is_session_answer(r)]
    assert len(minted) == 5 and all(r.status_code in (200, 201) for r in minted)
    secrets = {r.json()["pitcherToken"] for r in minted}
    assert len(secrets) == 5 and all(len(s) >= 16 for s in secrets)

    others = [r for r in responses if not _is_session_answer(r)]
    assert any(r.request.url.path.endswith("/audit") for r in others)
    for response in others:
        seen = response.text + str(response.headers)
        assert not any(s in seen for s in secrets), response.request.url

    assert caplog.records, "nothing was logged: the capture is not working"
    assert any(getattr(r, "route", None) for r in caplog.records), "no request log captured"
    logged = "\n".join(f"{record.getMessage()} {record.__dict__!r}" for record in caplog.records)
    assert not any(s in logged for s in secrets)

    async with runtime.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = await conn.execute(text(f"SELECT row_to_json(t)::text FROM {table.name} t"))
            dumped = "\n".join(row[0] for row in rows)
            assert not any(s in dumped for s in secrets), table.name
