"""One reconcile period: poll the upstream, compare, repair (DESIGN §8).

A period, run under the period lock (app/reconcile/leader.py):

1. record the run (short transaction), poll `GET /vm/running` outside any transaction;
   an upstream error ends the period as a failed run (the loop backs off);
2. load every row the poll could concern in one query, and classify (app/reconcile/plan.py);
3. look up upstream, by their `corral-op-<id>` tag, the rows whose fork never answered;
4. repair each drift kind in batches: a batch claims its rows (SKIP LOCKED, re-checked against
   what was loaded), writes the state change, the ledger, an event, a drift row and an audit
   row with set-based statements, and commits. A batch that fails is retried sandbox by
   sandbox, so one bad sandbox is logged and skipped and never stops the period;
5. store the observed `concurrent_vm_limit` and finish the run record.

Invariants kept with the lifecycle service (app/sandboxes/service.py `transition`): a usage
interval is open exactly while a sandbox is `running`; every state change writes an event with
its cause (`upstream` for what the upstream did on its own, `reconciler` for a decision taken
here) and an audit row. No transaction is open while the upstream is called.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.audit import service as audit
from app.db import transaction
from app.reconcile import repository
from app.reconcile.leader import period_lock
from app.reconcile.plan import Closing, Plan, Resize, Row, Waking, clamp, classify, upstream_tier
from app.runtime import Runtime
from app.sandboxes import creation, lifecycle
from app.sandboxes import repository as sandboxes_repository
from app.settings import Settings
from app.upstream.errors import UpstreamError, UpstreamNotFound
from app.upstream.schemas import RunningVM, RunningVMs
from app.usage import ledger
from app.usage import repository as usage_repository

log = logging.getLogger(__name__)

ACTOR = "reconciler"
UNASSIGNED_TEAM = "unassigned"
BATCH_SIZE = 1000
# New upstream activity of a running VM is written at most once per this many periods.
SIGHTING_REFRESH_PERIODS = 4

T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


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


@dataclass
class _Period:
    rt: Runtime
    run_id: int
    poll_at: datetime
    listed: dict[str, RunningVM]
    drift: Counter[str] = field(default_factory=Counter)

    @property
    def grace(self) -> timedelta:
        return timedelta(seconds=self.rt.settings.reconcile_sighting_grace_seconds)


async def reconcile_once(
    rt: Runtime, *, replica: str | None = None, wait_seconds: float = 0.0
) -> RunSummary:
    """Run one period now. Raises `PeriodBusy` if another period holds the lock after
    `wait_seconds`."""
    replica = replica or replica_name(rt.settings)
    async with period_lock(rt.engine, wait_seconds=wait_seconds):
        return await _run(rt, replica)


async def _run(rt: Runtime, replica: str) -> RunSummary:
    clock = time.perf_counter()
    started_at = now()
    async with transaction(rt.sessions) as session:
        run_id = await repository.start_run(session, replica, started_at)
    summary = RunSummary(run_id, replica, started_at, "ok", 0)
    try:
        polled = await rt.upstream.running_vms()
    except UpstreamError as err:
        log.warning(
            "reconcile poll failed",
            extra={"operation": err.operation, "upstream_status": err.status},
        )
        summary.outcome = "failed"
        summary.error = f"upstream {err.operation} failed: {err.status or type(err).__name__}"
        return await _finish(rt, summary, clock)
    summary.upstream_running = polled.concurrent_vm_count
    summary.observed_limit = polled.concurrent_vm_limit
    summary.phases["poll"] = _ms_since(clock)
    try:
        drift = await _repair(rt, run_id, started_at, polled, summary.phases)
    except Exception as exc:
        # Reaching here means the database itself failed (each sandbox is guarded below).
        log.exception("reconcile period failed")
        summary.outcome = "failed"
        summary.error = f"{type(exc).__name__}: {exc}"[:500]
        return await _finish(rt, summary, clock)
    summary.drift = dict(drift)
    return await _finish(rt, summary, clock, polled=polled)


async def _finish(
    rt: Runtime, summary: RunSummary, clock: float, *, polled: RunningVMs | None = None
) -> RunSummary:
    summary.duration_ms = _ms_since(clock)
    summary.finished_at = now()
    async with transaction(rt.sessions) as session:
        if polled is not None:
            await repository.store_observed_limit(session, polled.concurrent_vm_limit, now())
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


def _ms_since(clock: float) -> int:
    return round((time.perf_counter() - clock) * 1000)


async def _repair(
    rt: Runtime, run_id: int, poll_at: datetime, polled: RunningVMs, phases: dict[str, int]
) -> Counter[str]:
    clock = time.perf_counter()
    listed = {vm.id: vm for vm in polled.vms if vm.id}
    async with transaction(rt.sessions) as session:
        rows = await repository.load_rows(session, list(listed))
        previous = await repository.previous_poll_at(session, run_id)
    period = _Period(rt, run_id, poll_at, listed)
    plan = classify(
        polled.vms,
        rows,
        poll_at=poll_at,
        previous_poll_at=previous,
        grace=period.grace,
        refresh=timedelta(seconds=rt.settings.reconcile_interval * SIGHTING_REFRESH_PERIODS),
    )
    phases["load"] = _ms_since(clock)
    clock = time.perf_counter()
    # In-flight creates only matter if some VM is unknown here.
    pending = plan.pending if plan.unknown_vms else []
    lookups = await _lookup_operations(period, [*pending, *plan.unresolved])
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
        _batched(period, plan.closing, _close, key=lambda c: c.row.id),
        _batched(period, plan.waking, _wake, key=lambda w: w.row.id),
        _batched(period, plan.resizing, _resize, key=lambda r: r.row.id),
        _batched(period, unknown, _record_unmanaged, key=lambda vm: vm.id or ""),
        return_exceptions=True,
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    for row in plan.unresolved:
        await _guarded(row.id, partial(_resolve, period, row, lookups))
    if rt.settings.unmanaged_policy == "shutdown":
        async with transaction(rt.sessions) as session:
            running = await repository.unmanaged_running(session)
        for row in running:
            await _guarded(row.id, partial(_shutdown_unmanaged, period, row))
    for row, vm in plan.orphans:
        await _guarded(row.id, partial(_shutdown_orphan, period, row, vm))
    phases["repair"] = _ms_since(clock)
    return period.drift


# --- batching ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One drift repaired: written as a sandbox event (unless `transition` wrote it), a drift
    row and an audit row."""

    kind: str
    action: str
    sandbox_id: str
    upstream_id: str | None
    team_id: str
    from_state: str | None
    to_state: str
    cause: str
    audit_action: str
    detail: dict[str, Any]
    with_event: bool = True


async def _write(
    session: AsyncSession, period: _Period, findings: Sequence[Finding]
) -> Counter[str]:
    await repository.add_events(
        session,
        [
            {
                "sandbox_id": f.sandbox_id,
                "from_state": f.from_state,
                "to_state": f.to_state,
                "cause": f.cause,
                "actor": ACTOR,
                "detail": f.detail,
            }
            for f in findings
            if f.with_event
        ],
    )
    await repository.add_drifts(
        session,
        [
            {
                "run_id": period.run_id,
                "at": period.poll_at,
                "kind": f.kind,
                "sandbox_id": f.sandbox_id,
                "upstream_id": f.upstream_id,
                "action": f.action,
                "detail": f.detail,
            }
            for f in findings
        ],
    )
    await repository.add_audit(
        session,
        [
            {
                "actor": ACTOR,
                "team_id": f.team_id,
                "action": f.audit_action,
                "target": f.sandbox_id,
                "cause": f.cause,
                "outcome": "ok",
                "detail": {**f.detail, "drift": f.kind, "repair": f.action},
            }
            for f in findings
        ],
    )
    return Counter(f.kind for f in findings)


Repair = Callable[["_Period", AsyncSession, Sequence[T]], Awaitable[Counter[str]]]


async def _guarded(sandbox_id: str, work: Callable[[], Awaitable[Any]]) -> None:
    try:
        await work()
    except Exception:
        log.exception("reconcile failed for one sandbox", extra={"sandbox_id": sandbox_id})


async def _batched(
    period: _Period, items: Sequence[T], repair: Repair[T], *, key: Callable[[T], str]
) -> None:
    """Repair items a batch per short transaction; a failed batch is redone item by item.
    Drift is counted only once its transaction has committed."""
    for first in range(0, len(items), BATCH_SIZE):
        batch = items[first : first + BATCH_SIZE]
        try:
            async with transaction(period.rt.sessions) as session:
                found = await repair(period, session, batch)
            period.drift.update(found)
            continue
        except Exception:
            log.warning("reconcile batch failed; retrying one by one", exc_info=True)
        for item in batch:

            async def one(item: T = item) -> None:
                async with transaction(period.rt.sessions) as session:
                    found = await repair(period, session, [item])
                period.drift.update(found)

            await _guarded(key(item), one)


async def _open(
    session: AsyncSession, opening: Sequence[tuple[str, str, str | None, str, datetime]]
) -> None:
    """Open intervals for (sandbox id, team, owner, tier, start), each at the price-book
    version in force at its start, with the (short) price book read once per batch."""
    prices = ledger.PriceTable(await usage_repository.price_versions(session))
    values = []
    for sandbox_id, team_id, owner, tier, at in opening:
        rate, price_book_id = prices.price(tier, at)
        values.append(
            {
                "sandbox_id": sandbox_id,
                "team_id": team_id,
                "owner": owner,
                "tier": tier,
                "credits_per_hour": rate,
                "price_book_id": price_book_id,
                "started_at": at,
            }
        )
    await repository.open_intervals(session, values)


# --- sightings and misses ----------------------------------------------------------------


async def _record_sightings(period: _Period, plan: Plan) -> None:
    poll_at = period.poll_at
    sightings = [(row.id, vm.last_active_at) for row, vm in plan.sightings]
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
                [(row.id, vm.last_active_at) for row, vm in plan.resets],
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


# --- the drift kinds ---------------------------------------------------------------------


async def _close(period: _Period, session: AsyncSession, batch: Sequence[Closing]) -> Counter[str]:
    """stopped_upstream: running here, gone upstream twice → hibernated at the estimate."""
    claimed = await repository.claim(session, (c.row for c in batch))
    todo = [c for c in batch if c.row.id in claimed]
    ends = [(c.row.id, c.ended_at) for c in todo]
    await repository.close_intervals(session, ends, "upstream")
    await repository.mark_stopped(session, ends, state="hibernated", cause="upstream")
    return await _write(
        session,
        period,
        [
            Finding(
                kind="stopped_upstream",
                action="hibernated",
                sandbox_id=c.row.id,
                upstream_id=c.row.upstream_id,
                team_id=c.row.team_id,
                from_state="running",
                to_state="hibernated",
                cause="upstream",
                audit_action="sandbox.hibernate",
                detail={**c.detail, "ended_at": c.ended_at.isoformat()},
            )
            for c in todo
        ],
    )


async def _wake(period: _Period, session: AsyncSession, batch: Sequence[Waking]) -> Counter[str]:
    """woken_upstream: running upstream, stopped here → running from the session start."""
    claimed = await repository.claim(session, (w.row for w in batch))
    todo = [w for w in batch if w.row.id in claimed]
    tiers = {w.row.id: upstream_tier(w.vm) or w.row.tier for w in todo}
    await repository.mark_running(
        session,
        [(w.row.id, w.started_at, tiers[w.row.id], w.vm.last_active_at) for w in todo],
        seen_at=period.poll_at,
        cause="upstream",
    )
    await _open(
        session,
        [(w.row.id, w.row.team_id, w.row.owner, tiers[w.row.id], w.started_at) for w in todo],
    )
    return await _write(
        session,
        period,
        [
            Finding(
                kind="woken_upstream",
                action="started",
                sandbox_id=w.row.id,
                upstream_id=w.row.upstream_id,
                team_id=w.row.team_id,
                from_state=w.row.state,
                to_state="running",
                cause="upstream",
                audit_action="sandbox.start",
                detail={
                    "started_at": w.started_at.isoformat(),
                    "session_started_at": _iso(w.vm.session_started_at),
                    "tier": tiers[w.row.id],
                },
            )
            for w in todo
        ],
    )


async def _resize(period: _Period, session: AsyncSession, batch: Sequence[Resize]) -> Counter[str]:
    """tier_changed: the interval is split at the sighting and the tier follows the upstream."""
    claimed = await repository.claim(session, (r.row for r in batch), check_tier=True)
    todo = [r for r in batch if r.row.id in claimed]
    at = period.poll_at
    await repository.close_intervals(session, [(r.row.id, at) for r in todo], "resize")
    await repository.set_tiers(session, [(r.row.id, r.tier) for r in todo])
    await _open(session, [(r.row.id, r.row.team_id, r.row.owner, r.tier, at) for r in todo])
    return await _write(
        session,
        period,
        [
            Finding(
                kind="tier_changed",
                action="split",
                sandbox_id=r.row.id,
                upstream_id=r.row.upstream_id,
                team_id=r.row.team_id,
                from_state="running",
                to_state="running",
                cause="upstream",
                audit_action="sandbox.update",
                detail={"from_tier": r.row.tier, "to_tier": r.tier},
            )
            for r in todo
        ],
    )


async def _record_unmanaged(
    period: _Period, session: AsyncSession, batch: Sequence[RunningVM]
) -> Counter[str]:
    """unmanaged: a VM Corral did not start → a row of team `unassigned`, counted against the
    org plan like any live row."""
    settings = period.rt.settings
    values: list[dict[str, Any]] = []
    for vm in batch:
        # The upstream's clock may run ahead of ours: never open an interval in the future.
        started = min(vm.session_started_at or period.poll_at, period.poll_at)
        values.append(
            {
                "id": creation.new_sandbox_id(),
                "upstream_id": vm.id,
                "team_id": UNASSIGNED_TEAM,
                "template": "unknown",
                "tier": upstream_tier(vm) or settings.default_tier,
                "hibernation_timeout_seconds": settings.default_hibernation_timeout_seconds,
                "state": "running",
                "last_cause": "upstream",
                "operation_id": uuid.uuid4().hex,
                "managed": False,
                "state_changed_at": started,
                "last_started_at": started,
                "last_seen_running_at": period.poll_at,
                "upstream_last_active_at": vm.last_active_at,
            }
        )
    inserted = await repository.insert_sandboxes(session, values)
    todo = [v for v in values if v["id"] in inserted]
    await _open(
        session,
        [(v["id"], UNASSIGNED_TEAM, None, v["tier"], v["last_started_at"]) for v in todo],
    )
    policy = settings.unmanaged_policy
    return await _write(
        session,
        period,
        [
            Finding(
                kind="unmanaged",
                action="shutdown" if policy == "shutdown" else "adopted",
                sandbox_id=v["id"],
                upstream_id=v["upstream_id"],
                team_id=UNASSIGNED_TEAM,
                from_state=None,
                to_state="running",
                cause="upstream",
                audit_action="sandbox.adopt",
                detail={"tier": v["tier"], "policy": policy},
            )
            for v in todo
        ],
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# --- rows whose creation never settled ---------------------------------------------------


@dataclass
class _Lookups:
    """Upstream ids found by operation tag, and the rows whose lookup did not answer."""

    found: dict[str, str] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)


async def _lookup_operations(period: _Period, rows: Sequence[Row]) -> _Lookups:
    lookups = _Lookups()
    for row in rows:
        if row.upstream_id is not None:
            lookups.found[row.id] = row.upstream_id
            continue
        tag = creation.operation_tag(row.operation_id)
        try:
            page = await period.rt.upstream.list_sandboxes(tags=[tag], page_size=50)
        except UpstreamError as err:
            log.warning(
                "operation lookup failed",
                extra={"sandbox_id": row.id, "upstream_status": err.status},
            )
            lookups.failed.add(row.id)
            continue
        for sandbox in page.sandboxes:
            if tag in sandbox.tags:
                lookups.found[row.id] = sandbox.id
                break
    return lookups


async def _resolve(period: _Period, row: Row, lookups: _Lookups) -> None:
    """unresolved: a `starting` row past its reservation, or an `unknown` row. Adopted if its
    fork exists upstream (running, or stopped), else failed, which releases its reservation."""
    if row.id in lookups.failed:
        return
    upstream_id = lookups.found.get(row.id)
    if (
        upstream_id is None
        and row.state == "unknown"
        and row.state_changed_at > period.poll_at - period.grace
    ):
        # Listings may lag a fresh fork: give it the grace before declaring it absent.
        return
    vm = period.listed.get(upstream_id) if upstream_id else None
    async with transaction(period.rt.sessions) as session:
        sandbox = await sandboxes_repository.get(session, row.id, team_id=None, for_update=True)
        if (
            sandbox is None
            or sandbox.state != row.state
            or sandbox.state_changed_at != row.state_changed_at
        ):
            return  # settled by someone else since the period loaded it
        detail: dict[str, Any] = {"state": row.state, "upstream_id": upstream_id}
        if upstream_id is not None and sandbox.upstream_id is None:
            other = await sandboxes_repository.get_by_upstream_id(
                session, upstream_id, team_id=None
            )
            if other is not None:
                # Already recorded under another row (e.g. as unmanaged): do not fork the books.
                detail["duplicate_of"] = other.id
                upstream_id = vm = None
            else:
                sandbox.upstream_id = upstream_id
        at = now()
        if upstream_id is None:
            to_state, action = "failed", "duplicate" if "duplicate_of" in detail else "failed"
        elif vm is not None:
            to_state, action = "running", "adopted"
            at = clamp(
                vm.session_started_at or period.poll_at, row.state_changed_at, period.poll_at
            )
            sandbox.tier = upstream_tier(vm) or sandbox.tier
            sandbox.last_seen_running_at = period.poll_at
            sandbox.upstream_last_active_at = vm.last_active_at
            sandbox.missed_polls = 0
            detail["started_at"] = at.isoformat()
        else:
            before = await repository.state_before_start(session, row.id)
            to_state = before if before in ("hibernated", "shutdown") else "shutdown"
            action = "adopted"
        await lifecycle.transition(
            session, sandbox, to_state, cause="reconciler", actor=ACTOR, at=at, detail=detail
        )
        found = await _write(
            session,
            period,
            [
                Finding(
                    kind="unresolved",
                    action=action,
                    sandbox_id=row.id,
                    upstream_id=upstream_id,
                    team_id=row.team_id,
                    from_state=row.state,
                    to_state=to_state,
                    cause="reconciler",
                    audit_action="sandbox.reconcile",
                    detail=detail,
                    with_event=False,
                )
            ],
        )
    period.drift.update(found)


# --- shutting down what should not run ---------------------------------------------------


async def _stop_upstream(period: _Period, upstream_id: str) -> bool:
    try:
        await period.rt.upstream.shutdown(upstream_id)
    except UpstreamNotFound:
        return True
    except UpstreamError as err:
        log.warning(
            "reconciler shutdown failed",
            extra={"upstream_id": upstream_id, "upstream_status": err.status},
        )
        return False
    return True


async def _shutdown_unmanaged(period: _Period, row: Row) -> None:
    assert row.upstream_id is not None
    if not await _stop_upstream(period, row.upstream_id):
        return
    async with transaction(period.rt.sessions) as session:
        sandbox = await sandboxes_repository.get(session, row.id, team_id=None, for_update=True)
        if sandbox is None or sandbox.state != "running":
            return
        await lifecycle.transition(
            session,
            sandbox,
            "shutdown",
            cause="reconciler",
            actor=ACTOR,
            detail={"policy": "shutdown"},
        )
        await audit.record(
            session,
            actor=ACTOR,
            action="sandbox.shutdown",
            team_id=sandbox.team_id,
            target=sandbox.id,
            cause="reconciler",
            detail={"policy": "shutdown", "upstream_id": row.upstream_id},
        )


async def _shutdown_orphan(period: _Period, row: Row, vm: RunningVM) -> None:
    """orphan: a VM running upstream for a sandbox that is deleted or failed here."""
    assert vm.id is not None
    stopped = await _stop_upstream(period, vm.id)
    action = "shutdown" if stopped else "shutdown_failed"
    async with transaction(period.rt.sessions) as session:
        found = await _write(
            session,
            period,
            [
                Finding(
                    kind="orphan",
                    action=action,
                    sandbox_id=row.id,
                    upstream_id=vm.id,
                    team_id=row.team_id,
                    from_state=row.state,
                    to_state=row.state,
                    cause="reconciler",
                    audit_action="sandbox.shutdown",
                    detail={"state": row.state},
                )
            ],
        )
    period.drift.update(found)
