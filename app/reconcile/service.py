"""One reconcile period: poll the upstream, compare, repair (DESIGN §8).

A period, run under the period lock (app/reconcile/leader.py):

1. record the run (short transaction), poll `GET /vm/running` outside any transaction;
   an upstream error ends the period as a failed run (the loop backs off);
2. load every row the poll could concern in one query, and classify (app/reconcile/plan.py);
3. look up upstream, by their `corral-op-<id>` tag, the rows whose fork never answered;
4. repair each drift kind (app/reconcile/period.py says how a repair runs; one module per
   kind: `running` for stopped_upstream, woken_upstream and tier_changed, `unmanaged`,
   `unresolved`, `orphans`, and `sweep` for stopped sandboxes deleted outside Corral);
5. store the observed `concurrent_vm_limit` and finish the run record.

Every state change goes through `app.sandboxes.transitions`, the writer the API verbs use, so
a usage interval is open exactly while a sandbox is `running`, and every change writes its
event with its cause (`upstream` for what the upstream did on its own, `reconciler` for a
decision taken here) and its audit row. No transaction is open while the upstream is called.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from app import clock, metrics
from app.db import transaction
from app.reconcile import orphans, polled, repository, sweep, unmanaged, unresolved
from app.reconcile.leader import period_lock
from app.reconcile.period import BATCH_SIZE, Period, batched, guarded
from app.reconcile.plan import Plan, classify, started_since
from app.runtime import Runtime
from app.sandboxes.states import SandboxState
from app.settings import Settings
from app.upstream.errors import UpstreamError
from app.upstream.schemas import RunningVM, RunningVMs

log = logging.getLogger(__name__)

# New upstream activity of a running VM is written at most once per this many periods.
SIGHTING_REFRESH_PERIODS = 4


def intent_window(settings: Settings) -> timedelta:
    """How long a pending intent can explain what the upstream shows: its call's longest run
    (a reservation's length), two polls to notice, and the listing's lag."""
    return settings.reservation_ttl + timedelta(
        seconds=2 * settings.reconcile_interval + settings.reconcile_sighting_grace_seconds
    )


def replica_name(settings: Settings) -> str:
    return settings.replica or f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class RunSummary:
    run_id: int
    replica: str
    started_at: datetime
    outcome: str
    duration_ms: int
    finished_at: datetime | None = None
    upstream_running: int | None = None
    observed_limit: int | None = None
    drift: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    # Milliseconds spent polling, loading and classifying, and repairing (logged, not stored).
    phases: dict[str, int] = field(default_factory=dict)


async def reconcile_once(
    rt: Runtime, *, replica: str | None = None, wait_seconds: float = 0.0
) -> RunSummary:
    """Run one period now. Raises `PeriodBusy` if another period holds the lock after
    `wait_seconds`."""
    async with period_lock(rt.engine, wait_seconds=wait_seconds):
        return await run_period(rt, replica=replica)


async def run_period(
    rt: Runtime, *, replica: str | None = None, every_sighting: bool = False
) -> RunSummary:
    """One period, for a caller that already holds the period lock (a clock jump does).
    `every_sighting` writes the activity of every listed VM, not only news older than the
    refresh: a clock jump is about to hibernate them by it."""
    replica = replica or replica_name(rt.settings)
    began = time.perf_counter()
    started_at = clock.now()
    async with transaction(rt.sessions) as session:
        run_id = await repository.start_run(session, replica, started_at)
    summary = RunSummary(run_id, replica, started_at, "ok", 0)
    try:
        poll = await rt.upstream.running_vms()
    except UpstreamError as err:
        log.warning(
            "reconcile poll failed",
            extra={"operation": err.operation, "upstream_status": err.status},
        )
        summary.outcome = "failed"
        summary.error = f"upstream {err.operation} failed: {err.status or type(err).__name__}"
        return await _finish(rt, summary, began)
    summary.upstream_running = poll.concurrent_vm_count
    summary.observed_limit = poll.concurrent_vm_limit
    summary.phases["poll"] = _ms_since(began)
    try:
        async with transaction(rt.sessions) as session:
            await repository.mark_polled(
                session, run_id, running=poll.concurrent_vm_count, limit=poll.concurrent_vm_limit
            )
        refresh = timedelta(
            seconds=0
            if every_sighting
            else rt.settings.reconcile_interval * SIGHTING_REFRESH_PERIODS
        )
        drift = await _repair(rt, run_id, started_at, poll, summary.phases, refresh)
    except Exception as exc:
        # Reaching here means the database itself failed (each sandbox is guarded below).
        log.exception("reconcile period failed")
        summary.outcome = "failed"
        summary.error = f"{type(exc).__name__}: {exc}"[:500]
        return await _finish(rt, summary, began)
    summary.drift = dict(drift)
    return await _finish(rt, summary, began, poll=poll)


async def _finish(
    rt: Runtime, summary: RunSummary, began: float, *, poll: RunningVMs | None = None
) -> RunSummary:
    summary.duration_ms = _ms_since(began)
    summary.finished_at = clock.now()
    async with transaction(rt.sessions) as session:
        if poll is not None:
            await repository.store_observed_limit(session, poll.concurrent_vm_limit, clock.now())
        await repository.finish_run(
            session,
            summary.run_id,
            finished_at=summary.finished_at,
            duration_ms=summary.duration_ms,
            outcome=summary.outcome,
            error=summary.error,
            upstream_running=summary.upstream_running,
            observed_limit=summary.observed_limit,
            drift=summary.drift,
        )
    metrics.RECONCILE_RUNS.labels(summary.outcome).inc()
    metrics.RECONCILE_DURATION.observe(summary.duration_ms / 1000)
    for kind, count in summary.drift.items():
        metrics.RECONCILE_DRIFT.labels(kind).inc(count)
    log.info(
        "reconcile period",
        extra={
            "replica": summary.replica,
            "outcome": summary.outcome,
            "duration_ms": summary.duration_ms,
            "phases_ms": summary.phases,
            "drift": summary.drift,
        },
    )
    return summary


def _ms_since(began: float) -> int:
    return round((time.perf_counter() - began) * 1000)


async def _repair(
    rt: Runtime,
    run_id: int,
    poll_at: datetime,
    poll: RunningVMs,
    phases: dict[str, int],
    refresh: timedelta,
) -> Counter[str]:
    began = time.perf_counter()
    listed = {vm.id: vm for vm in poll.vms if vm.id}
    async with transaction(rt.sessions) as session:
        rows = await repository.load_rows(session, list(listed))
        previous = await repository.poll_times(session, run_id)
        intents = await repository.unknown_intents(
            session, [row.id for row in rows if row.state == SandboxState.UNKNOWN]
        )
    period = Period(rt, run_id, poll_at, listed)
    plan = classify(
        poll.vms,
        rows,
        poll_at=poll_at,
        previous_poll_at=previous.polled,
        written_poll_at=previous.written,
        grace=period.grace,
        refresh=refresh,
        intent_window=intent_window(rt.settings),
    )
    phases["load"] = _ms_since(began)
    began = time.perf_counter()
    # In-flight creates only matter if some VM is unknown here.
    pending = plan.pending if plan.unknown_vms else []
    lookups = await unresolved.look_up(period, [*pending, *plan.unresolved], intents)
    unknown: list[RunningVM] = []
    if not lookups.failed:
        theirs = set(lookups.found.values())
        unknown = [vm for vm in plan.unknown_vms if vm.id not in theirs]
    elif plan.unknown_vms:
        # A VM unknown here may be a create whose answer is still on its way: wait and see.
        log.warning("operation lookups failed; unmanaged VMs are left for the next period")
    # Sightings first: a resize batch would skip (SKIP LOCKED) a row a sighting holds.
    await _record_sightings(period, plan)
    # The kinds touch disjoint rows, so they run side by side, each in short transactions.
    outcomes = await asyncio.gather(
        batched(period, plan.closing, polled.close, key=lambda c: c.row.id),
        batched(period, plan.waking, polled.wake, key=lambda w: w.row.id),
        batched(period, plan.resizing, polled.resize, key=lambda r: r.row.id),
        batched(period, plan.restarted, polled.restart, key=lambda r: r.row.id),
        batched(period, unknown, unmanaged.record_unmanaged, key=lambda vm: vm.id or ""),
        return_exceptions=True,
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    # A create in flight whose fork is found running in a session begun since: its start is
    # done, whatever became of the process that asked.
    started = [
        row
        for row in pending
        if (vm := listed.get(lookups.found.get(row.id, ""))) is not None and started_since(vm, row)
    ]
    for row in [*plan.unresolved, *started]:
        await guarded(
            row.id, partial(unresolved.resolve, period, row, lookups, intents.get(row.id))
        )
    if rt.settings.unmanaged_policy == "shutdown":
        async with transaction(rt.sessions) as session:
            running = await repository.unmanaged_running(session)
        for row in running:
            await guarded(row.id, partial(unmanaged.shutdown_unmanaged, period, row))
    for row, vm in plan.orphans:
        await guarded(row.id, partial(orphans.shut_down, period, row, vm))
    for row in plan.deleting:
        await guarded(row.id, partial(unresolved.finish_delete, period, row))
    if plan.stale_intents:
        async with transaction(rt.sessions) as session:
            await repository.clear_intents(session, plan.stale_intents)
    await guarded("forks", partial(unresolved.remove_forks, period))
    await guarded("sweep", partial(sweep.check_stopped, period))
    phases["repair"] = _ms_since(began)
    return period.drift


# --- sightings and misses ----------------------------------------------------------------


async def _record_sightings(period: Period, plan: Plan) -> None:
    poll_at = period.poll_at
    sightings = [(row.id, active) for row, active in plan.sightings]
    for first in range(0, len(sightings), BATCH_SIZE):
        async with transaction(period.rt.sessions) as session:
            await repository.record_sightings(
                session, sightings[first : first + BATCH_SIZE], poll_at
            )
    if plan.resets:
        # Waits for a row an API request holds: a miss counter left at 1 would make the next
        # miss look like the second in a row. They are few (rows missed once, seen again).
        async with transaction(period.rt.sessions) as session:
            await repository.record_sightings(
                session,
                [(row.id, active) for row, active in plan.resets],
                poll_at,
                wait=True,
            )
    misses: list[tuple[str, int, datetime | None]] = [
        (row.id, row.missed_polls + 1, seen) for row, seen in plan.missed
    ]
    misses += [(row.id, 0, None) for row in plan.unobservable]
    for first in range(0, len(misses), BATCH_SIZE):
        async with transaction(period.rt.sessions) as session:
            await repository.record_misses(session, misses[first : first + BATCH_SIZE])
