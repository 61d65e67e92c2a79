"""The official `@codesandbox/sdk` (pinned in tests/node) against a running Corral backed by
the simulator, then the native API checked for the same sandboxes, events and intervals."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from app.models import BrowserSession
from app.runtime import Runtime
from tests.compat.sdk import run_script, serve
from tests.fixtures import factories

NOT_FOUND = "Sandbox not found"


async def _native(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    rows = (await client.get("/v1/sandboxes?limit=200", headers=headers)).json()["items"]
    return {row["upstream_id"]: row for row in rows}


async def test_sdk_lifecycle_goes_through_corral(
    client: httpx.AsyncClient, runtime: Runtime, sim: httpx.AsyncClient
) -> None:
    headers = await factories.team_with_key(client, "search-ui", max_concurrent=5)
    key = headers["Authorization"].removeprefix("Bearer ")
    other = await factories.team_with_key(client, "team-b")
    theirs = await factories.sandbox(client, other)
    # Enough stopped sandboxes that listing has to page past the upstream's 50.
    for _ in range(52):
        await factories.sandbox(client, headers, start=False)

    async with serve(runtime) as url:
        summary = await run_script(
            "sdk-lifecycle.mjs",
            {
                "CSB_BASE_URL": f"{url}/csb",
                "CSB_API_KEY": key,
                "OTHER_SANDBOX_ID": theirs["upstream_id"],
            },
        )
    steps = summary["steps"]
    vm = steps["create"]["id"]
    assert steps["session"] == {"sessionId": "alice", "sandboxId": vm}
    assert steps["listRunning"] == {
        "count": 1,
        "limit": 5,
        "ids": [vm],
        "creditBasis": ["40"],  # Small, after updateTier
        "startedYear": [steps["listRunning"]["startedYear"][0]],
    }
    assert steps["listRunning"]["startedYear"][0] >= 2025
    assert steps["resume"] == {"bootupType": "RESUME"}
    assert steps["restart"] == {"bootupType": "CLEAN"}
    assert steps["get"] == {"id": vm, "title": "acc", "tags": ["sdk"], "privacy": "private"}
    assert NOT_FOUND in steps["delete"]["afterwards"]
    # 52 made natively + the SDK's own; the deleted one is gone, the other team's never there.
    assert steps["list"] == {
        "count": 53,
        "totalCount": 53,
        "unique": 53,
        "includesCreated": True,
        "includesDeleted": False,
    }
    for verb, message in steps["otherTeam"].items():
        assert message.endswith(NOT_FOUND), (verb, message)

    native = await _native(client, headers)
    mine = native[vm]
    assert (mine["state"], mine["tier"], mine["hibernation_timeout_seconds"]) == (
        "shutdown",
        "Small",
        600,
    )
    assert native[steps["delete"]["id"]]["state"] == "deleted"
    events = (await client.get(f"/v1/sandboxes/{mine['id']}/events", headers=headers)).json()
    moves = [(e["from_state"], e["to_state"], e["cause"]) for e in events]
    assert moves == [
        (None, "starting", "api"),
        ("starting", "shutdown", "api"),  # the SDK's fork
        ("shutdown", "starting", "api"),  # its start
        ("starting", "running", "api"),
        ("running", "running", "api"),  # updateTier: a live resize splits the interval
        ("running", "hibernated", "api"),
        ("hibernated", "starting", "api"),  # resume
        ("starting", "running", "api"),
        ("running", "shutdown", "api"),  # restart = shutdown + start
        ("shutdown", "starting", "api"),
        ("starting", "running", "api"),
        ("running", "shutdown", "api"),
    ]
    cost = (await client.get(f"/v1/sandboxes/{mine['id']}/cost", headers=headers)).json()
    intervals = [(line["tier"], line["end_cause"]) for line in cost["lines"]]
    # Started at Nano, resized live to Small, then closed by hibernate, restart and shutdown.
    assert intervals == [("Nano", "resize"), ("Small", "api"), ("Small", "api"), ("Small", "api")]
    assert all(line["ended_at"] is not None for line in cost["lines"])
    async with runtime.sessions() as session:
        records = (await session.scalars(select(BrowserSession))).all()
    assert [
        (r.sandbox_id, r.session_id, r.permission, r.via) for r in records if r.via == "csb"
    ] == [(mine["id"], "alice", "read", "csb")]
    # Every start answer the SDK got (it holds the VM's shell tokens) is recorded as well.
    doomed = native[steps["delete"]["id"]]["id"]
    assert [(r.sandbox_id, r.bootup_type) for r in records if r.via == "csb-start"] == [
        (mine["id"], "FORK"),
        (mine["id"], "RESUME"),
        (mine["id"], "CLEAN"),
        (doomed, "FORK"),
    ]
    # The other team's sandbox was never touched.
    assert (await _native(client, other))[theirs["upstream_id"]]["state"] == "running"
    vms = {v["id"]: v for v in (await sim.get("/_simulator/vms")).json()["vms"]}
    assert vms[vm]["state"] == "shutdown"


async def test_sdk_reports_a_quota_refusal_naming_the_limit(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = await factories.team_with_key(client, "search-ui", max_concurrent=1)
    key = headers["Authorization"].removeprefix("Bearer ")
    async with serve(runtime) as url:
        summary = await run_script(
            "sdk-refusal.mjs", {"CSB_BASE_URL": f"{url}/csb", "CSB_API_KEY": key}
        )
    refused = summary["steps"]["refused"]
    assert refused["type"] == "rate-limit"
    assert refused["message"].startswith("Failed to start VM ")
    assert "Corral limit max_concurrent (team): 1 in use, maximum 1." in refused["message"]
    assert summary["steps"]["afterHibernate"]["bootupType"] == "FORK"
    native = await _native(client, headers)
    assert sorted(row["state"] for row in native.values()) == ["hibernated", "running"]
