"""A call whose outcome was never written (its process, or its database, went first) left its
intent on the row; the reconciler records what was asked, as of when it was asked."""

from __future__ import annotations

from datetime import timedelta

import httpx

from app.clock import now
from app.runtime import Runtime
from app.sandboxes import lifecycle
from tests.fixtures import factories
from tests.reconcile.helpers import intervals, reconcile, sandbox


async def test_a_shutdown_that_happened_unrecorded_is_recorded_as_asked(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
) -> None:
    # The simulator's listing is never stale: trust an absence at once.
    runtime.settings = runtime.settings.model_copy(update={"reconcile_sighting_grace_seconds": 0})
    headers = await factories.team_with_key(client)
    created = await factories.sandbox(client, headers)
    asked_at = now()
    # What `service.stop` writes before calling; the process then died after the call.
    await lifecycle.note_intent(
        runtime, await sandbox(runtime, created["id"]), "shutdown", asked_at
    )
    assert (await sim.post(f"/vm/{created['upstream_id']}/shutdown")).status_code == 200
    for _ in range(3):
        await reconcile(runtime)
    row = await sandbox(runtime, created["id"])
    assert (row.state, row.last_cause, row.pending_intent) == ("shutdown", "upstream", None)
    [interval] = await intervals(runtime, created["id"])
    assert interval.ended_at == asked_at


async def test_a_delete_that_happened_unrecorded_is_recorded_deleted(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = await factories.team_with_key(client)
    created = await factories.sandbox(client, headers, start=False)
    asked_at = now()
    await lifecycle.note_intent(runtime, await sandbox(runtime, created["id"]), "deleted", asked_at)
    assert (await sim.delete(f"/vm/{created['upstream_id']}")).status_code == 200
    summary = await reconcile(runtime)
    assert summary.drift == {"deleted_upstream": 1}
    row = await sandbox(runtime, created["id"])
    assert (row.state, row.deleted_at, row.pending_intent) == ("deleted", asked_at, None)


async def test_a_delete_that_did_not_happen_keeps_the_record(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = await factories.team_with_key(client)
    created = await factories.sandbox(client, headers, start=False)
    await lifecycle.note_intent(runtime, await sandbox(runtime, created["id"]), "deleted", now())
    assert (await reconcile(runtime)).drift == {}
    assert (await sandbox(runtime, created["id"])).state == "shutdown"


async def test_a_vm_that_hibernates_before_any_sighting_ends_at_its_start_plus_timeout(
    client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A new session's activity begins at its start: a VM started and hibernated by the
    upstream before any poll saw it ends its interval at start + timeout, not at its start."""
    runtime.settings = runtime.settings.model_copy(update={"reconcile_sighting_grace_seconds": 0})
    headers = await factories.team_with_key(client)
    created = await factories.sandbox(client, headers, hibernation_timeout_seconds=300)
    await reconcile(runtime)  # a sighting with its activity
    await client.post(f"/v1/sandboxes/{created['id']}/hibernate", headers=headers)
    await sim.post("/_simulator/clock/advance", json={"seconds": 3600})
    await client.post(f"/v1/sandboxes/{created['id']}/start", headers=headers)
    await sim.post("/_simulator/clock/advance", json={"seconds": 3600})  # hibernates it, unseen
    for _ in range(2):
        await reconcile(runtime)
    last = (await intervals(runtime, created["id"]))[-1]
    assert last.ended_at is not None
    assert last.ended_at - last.started_at == timedelta(seconds=300)
