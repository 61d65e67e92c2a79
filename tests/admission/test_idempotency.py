"""Idempotency-Key on creates and forks."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.fixtures import factories


async def forks(sim) -> int:
    count: int = (await sim.get("/_simulator/requests")).json().get("fork", 0)
    return count


async def test_concurrent_duplicates_fork_once(client, sim):
    headers = await factories.team_with_key(client)
    await sim.put("/_simulator/config", json={"latency_ms": 30})
    keyed = {**headers, "Idempotency-Key": "create-1"}
    responses = await asyncio.gather(
        *(client.post("/v1/sandboxes", json={"title": "x"}, headers=keyed) for _ in range(20))
    )
    codes = Counter(r.status_code for r in responses)
    assert codes[201] >= 1 and set(codes) <= {201, 409}
    created = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(created) == 1
    replays = [
        r
        for r in responses
        if r.status_code == 201 and r.headers.get("idempotent-replayed") == "true"
    ]
    assert len(replays) == codes[201] - 1
    assert await forks(sim) == 1
    assert len((await client.get("/v1/sandboxes", headers=headers)).json()["items"]) == 1


async def test_replay_returns_the_stored_response(client, sim):
    headers = {**await factories.team_with_key(client), "Idempotency-Key": "k-2"}
    first = await client.post("/v1/sandboxes", json={"title": "a"}, headers=headers)
    again = await client.post("/v1/sandboxes", json={"title": "a"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await forks(sim) == 1


async def test_same_key_with_another_body_is_422(client, sim):
    headers = {**await factories.team_with_key(client), "Idempotency-Key": "k-3"}
    assert (
        await client.post("/v1/sandboxes", json={"title": "a"}, headers=headers)
    ).status_code == 201
    reused = await client.post("/v1/sandboxes", json={"title": "b"}, headers=headers)
    assert reused.status_code == 422 and reused.json()["type"].endswith("idempotency-key-reused")
    assert await forks(sim) == 1


async def test_keys_are_per_api_key(client, sim):
    await factories.team(client, "team-a")
    one = {**await factories.key(client, "team-a"), "Idempotency-Key": "same"}
    two = {**await factories.key(client, "team-a"), "Idempotency-Key": "same"}
    a = await client.post("/v1/sandboxes", json={}, headers=one)
    b = await client.post("/v1/sandboxes", json={}, headers=two)
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]


async def test_a_refusal_is_not_remembered(client, sim):
    headers = await factories.team_with_key(client, "team-a", max_concurrent=1)
    blocker = await factories.sandbox(client, headers)
    keyed = {**headers, "Idempotency-Key": "after-refusal"}
    assert (await client.post("/v1/sandboxes", json={}, headers=keyed)).status_code == 429
    await client.post(f"/v1/sandboxes/{blocker['id']}/shutdown", headers=headers)
    retried = await client.post("/v1/sandboxes", json={}, headers=keyed)
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers


async def test_fork_honours_the_key(client, sim):
    headers = await factories.team_with_key(client)
    source = await factories.sandbox(client, headers)
    keyed = {**headers, "Idempotency-Key": "fork-1"}
    first = await client.post(f"/v1/sandboxes/{source['id']}/fork", json={}, headers=keyed)
    again = await client.post(f"/v1/sandboxes/{source['id']}/fork", json={}, headers=keyed)
    assert (
        first.status_code == again.status_code == 201 and first.json()["id"] == again.json()["id"]
    )
    assert await forks(sim) == 2  # the source's create and one fork
