"""The sweep of stopped sandboxes (app/reconcile/sweep.py): one the upstream deleted behind
Corral's back is recorded deleted, once; one that still exists, or whose lookup fails, is left
as it is; a few are asked about per period, the least recently checked first."""

from __future__ import annotations

import httpx
import pytest

from app.reconcile import sweep
from app.runtime import Runtime
from tests.fixtures import factories
from tests.reconcile.helpers import configure, drifts, events, reconcile, sandbox


@pytest.fixture(autouse=True)
def no_grace(runtime: Runtime) -> None:
    # Stopped "a while ago" from the first period on.
    runtime.settings = runtime.settings.model_copy(update={"reconcile_sighting_grace_seconds": 0})


async def _hibernated(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, str]:
    created = await factories.sandbox(client, headers)
    stopped = await client.post(f"/v1/sandboxes/{created['id']}/hibernate", headers=headers)
    assert stopped.status_code == 200, stopped.text
    return created


async def test_a_stopped_sandbox_deleted_upstream_is_recorded_deleted(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = await factories.team_with_key(client)
    gone = await _hibernated(client, headers)
    kept = await _hibernated(client, headers)
    assert (await sim.delete(f"/vm/{gone['upstream_id']}")).status_code == 200

    summary = await reconcile(runtime)

    assert summary.drift == {"deleted_upstream": 1}
    assert (await sandbox(runtime, gone["id"])).state == "deleted"
    assert (await sandbox(runtime, kept["id"])).state == "hibernated"
    [last] = (await events(runtime, gone["id"]))[-1:]
    assert (last.from_state, last.to_state, last.cause) == ("hibernated", "deleted", "upstream")
    [drift] = await drifts(runtime, "deleted_upstream")
    assert (drift.sandbox_id, drift.action) == (gone["id"], "recorded_deleted")
    # Recorded once: the next period has nothing to say about it.
    assert (await reconcile(runtime)).drift == {}
    # What the API shows: the record stays, deleted, and starting it is refused.
    shown = await client.get(f"/v1/sandboxes/{gone['id']}", headers=headers)
    assert shown.json()["state"] == "deleted"


async def test_a_failed_lookup_changes_nothing(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = await factories.team_with_key(client)
    created = await _hibernated(client, headers)
    await configure(sim, faults={"get": {"error_rate": 1.0, "status": 503}})
    summary = await reconcile(runtime)
    assert summary.drift == {}
    assert (await sandbox(runtime, created["id"])).state == "hibernated"


async def test_each_period_asks_about_the_least_recently_checked(
    client: httpx.AsyncClient,
    sim: httpx.AsyncClient,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sweep, "SWEEP_BATCH", 2)
    headers = await factories.team_with_key(client)
    stopped = [await _hibernated(client, headers) for _ in range(3)]
    await reconcile(runtime)  # asks about two of them
    checked = {s["id"] for s in stopped if (await sandbox(runtime, s["id"])).upstream_checked_at}
    assert len(checked) == 2
    # The third, never asked about, is asked next; its deletion is found.
    [third] = [s for s in stopped if s["id"] not in checked]
    assert (await sim.delete(f"/vm/{third['upstream_id']}")).status_code == 200
    assert (await reconcile(runtime)).drift == {"deleted_upstream": 1}
