"""Set-based queries of the reconciler: one query loads every row a period may touch, and each
repair writes a whole batch with a handful of statements, whatever the number of sandboxes.

Claiming: API requests change the same rows concurrently, so a batch first claims its rows
with `FOR UPDATE SKIP LOCKED`, and only those whose state (and tier) are still what the period
loaded. A row that is locked or has moved on is left alone: the next period sees it afresh.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import context
from app.models import (
    AuditEntry,
    Drift,
    OrgPlan,
    ReconcileRun,
    Sandbox,
    SandboxEvent,
    UsageInterval,
)
from app.reconcile.plan import Row

LIVE_STATES = ("starting", "running", "unknown")

_ROW_COLUMNS = (
    Sandbox.id,
    Sandbox.upstream_id,
    Sandbox.team_id,
    Sandbox.owner,
    Sandbox.tier,
    Sandbox.state,
    Sandbox.managed,
    Sandbox.operation_id,
    Sandbox.hibernation_timeout_seconds,
    Sandbox.reservation_expires_at,
    Sandbox.state_changed_at,
    Sandbox.last_started_at,
    Sandbox.last_seen_running_at,
    Sandbox.upstream_last_active_at,
    Sandbox.missed_polls,
)


def _row(values: Sequence[Any]) -> Row:
    return Row(*values)


async def load_rows(session: AsyncSession, upstream_ids: Sequence[str]) -> list[Row]:
    """Every live row, and every row of a VM the poll listed whatever its state."""
    query = select(*_ROW_COLUMNS).where(
        Sandbox.state.in_(LIVE_STATES) | Sandbox.upstream_id.in_(upstream_ids)
    )
    return [_row(values) for values in await session.execute(query)]


async def load_row(session: AsyncSession, sandbox_id: str) -> Row | None:
    values = (await session.execute(select(*_ROW_COLUMNS).where(Sandbox.id == sandbox_id))).first()
    return _row(values) if values is not None else None


_CLAIM_SQL = (
    "SELECT s.id FROM sandboxes s"
    " JOIN unnest(CAST(:ids AS varchar[]), CAST(:states AS varchar[]),"
    "  CAST(:changed AS timestamptz[]), CAST(:tiers AS varchar[]))"
    "  AS u(id, state, changed, tier)"
    " ON s.id = u.id AND s.state = u.state AND s.state_changed_at = u.changed {tier}"
    " ORDER BY s.id FOR UPDATE OF s SKIP LOCKED"
)
_CLAIM = text(_CLAIM_SQL.format(tier=""))
_CLAIM_WITH_TIER = text(_CLAIM_SQL.format(tier="AND s.tier = u.tier"))

_SIGHTINGS_SQL = (
    "WITH u AS (SELECT * FROM unnest(CAST(:ids AS varchar[]),"
    "  CAST(:active AS timestamptz[])) AS u(id, active)),"
    " claimed AS (SELECT s.id FROM sandboxes s JOIN u ON s.id = u.id"
    "  WHERE s.state = 'running' ORDER BY s.id {lock})"
    " UPDATE sandboxes s SET last_seen_running_at = :seen_at,"
    "  upstream_last_active_at = coalesce(u.active, s.upstream_last_active_at),"
    "  missed_polls = 0"
    " FROM u, claimed WHERE s.id = u.id AND s.id = claimed.id RETURNING s.id"
)
_SIGHTINGS_SKIP_LOCKED = text(_SIGHTINGS_SQL.format(lock="FOR UPDATE SKIP LOCKED"))
_SIGHTINGS_WAIT = text(_SIGHTINGS_SQL.format(lock="FOR UPDATE"))


async def claim(
    session: AsyncSession, rows: Iterable[Row], *, check_tier: bool = False
) -> set[str]:
    """Lock the rows that nobody else holds and that have not changed state (or tier) since
    they were loaded; return their ids."""
    rows = list(rows)
    if not rows:
        return set()
    result = await session.execute(
        _CLAIM_WITH_TIER if check_tier else _CLAIM,
        {
            "ids": [r.id for r in rows],
            "states": [r.state for r in rows],
            "changed": [r.state_changed_at for r in rows],
            "tiers": [r.tier for r in rows],
        },
    )
    return {sandbox_id for (sandbox_id,) in result}


async def record_sightings(
    session: AsyncSession,
    sightings: Sequence[tuple[str, datetime | None]],
    seen_at: datetime,
    *,
    skip_locked: bool,
) -> set[str]:
    """Mark running rows seen running: sighting time, upstream activity, miss counter reset.
    Returns the ids updated."""
    if not sightings:
        return set()
    result = await session.execute(
        _SIGHTINGS_SKIP_LOCKED if skip_locked else _SIGHTINGS_WAIT,
        {"ids": [s[0] for s in sightings], "active": [s[1] for s in sightings], "seen_at": seen_at},
    )
    return {sandbox_id for (sandbox_id,) in result}


async def set_missed(session: AsyncSession, counts: Sequence[tuple[str, int]]) -> None:
    """Set the miss counter of running rows (rows that stopped running are left alone)."""
    if not counts:
        return
    await session.execute(
        text(
            "WITH u AS (SELECT * FROM unnest(CAST(:ids AS varchar[]), CAST(:missed AS int[]))"
            "  AS u(id, missed)),"
            " claimed AS (SELECT s.id FROM sandboxes s JOIN u ON s.id = u.id"
            "  WHERE s.state = 'running' ORDER BY s.id FOR UPDATE SKIP LOCKED)"
            " UPDATE sandboxes s SET missed_polls = u.missed"
            " FROM u, claimed WHERE s.id = u.id AND s.id = claimed.id"
        ),
        {"ids": [c[0] for c in counts], "missed": [c[1] for c in counts]},
    )


async def update_sandboxes(session: AsyncSession, values: list[dict[str, Any]]) -> None:
    """Bulk UPDATE by primary key; every dict carries `id` and the columns to set."""
    if values:
        await session.execute(update(Sandbox), values)


async def insert_sandboxes(session: AsyncSession, values: list[dict[str, Any]]) -> set[str]:
    """Insert new rows; a row whose upstream id got a row meanwhile is skipped. Returns the ids
    inserted."""
    if not values:
        return set()
    statement = text(
        "INSERT INTO sandboxes (id, upstream_id, team_id, template, tier,"
        " hibernation_timeout_seconds, state, last_cause, operation_id, managed,"
        " state_changed_at, last_started_at, last_seen_running_at, upstream_last_active_at)"
        " SELECT * FROM unnest(CAST(:id AS varchar[]), CAST(:upstream_id AS varchar[]),"
        "  CAST(:team_id AS varchar[]), CAST(:template AS varchar[]),"
        "  CAST(:tier AS varchar[]), CAST(:timeout AS int[]), CAST(:state AS varchar[]),"
        "  CAST(:cause AS varchar[]), CAST(:operation_id AS varchar[]),"
        "  CAST(:managed AS boolean[]), CAST(:changed AS timestamptz[]),"
        "  CAST(:started AS timestamptz[]), CAST(:seen AS timestamptz[]),"
        "  CAST(:active AS timestamptz[]))"
        " ON CONFLICT (upstream_id) DO NOTHING RETURNING id"
    )
    columns = {
        "id": "id",
        "upstream_id": "upstream_id",
        "team_id": "team_id",
        "template": "template",
        "tier": "tier",
        "timeout": "hibernation_timeout_seconds",
        "state": "state",
        "cause": "last_cause",
        "operation_id": "operation_id",
        "managed": "managed",
        "changed": "state_changed_at",
        "started": "last_started_at",
        "seen": "last_seen_running_at",
        "active": "upstream_last_active_at",
    }
    params = {name: [v[column] for v in values] for name, column in columns.items()}
    result = await session.execute(statement, params)
    return {sandbox_id for (sandbox_id,) in result}


async def close_intervals(
    session: AsyncSession, ends: Sequence[tuple[str, datetime]], cause: str
) -> None:
    """Close each sandbox's open interval at its time (never before the interval's start)."""
    if not ends:
        return
    await session.execute(
        text(
            "UPDATE usage_intervals i SET ended_at = greatest(i.started_at, u.at),"
            " end_cause = :cause"
            " FROM unnest(CAST(:ids AS varchar[]), CAST(:ats AS timestamptz[])) AS u(id, at)"
            " WHERE i.sandbox_id = u.id AND i.ended_at IS NULL"
        ),
        {"ids": [e[0] for e in ends], "ats": [e[1] for e in ends], "cause": cause},
    )


async def open_intervals(session: AsyncSession, values: list[dict[str, Any]]) -> None:
    if values:
        await session.execute(insert(UsageInterval), values)


async def add_events(session: AsyncSession, values: list[dict[str, Any]]) -> None:
    if values:
        request_id = context.request_id.get()
        await session.execute(
            insert(SandboxEvent), [{**v, "request_id": request_id} for v in values]
        )


async def add_audit(session: AsyncSession, values: list[dict[str, Any]]) -> None:
    if values:
        request_id = context.request_id.get()
        await session.execute(insert(AuditEntry), [{**v, "request_id": request_id} for v in values])


async def add_drifts(session: AsyncSession, values: list[dict[str, Any]]) -> None:
    if values:
        await session.execute(insert(Drift), values)


async def start_run(session: AsyncSession, replica: str, started_at: datetime) -> int:
    run = ReconcileRun(replica=replica, started_at=started_at, outcome="running")
    session.add(run)
    await session.flush()
    return run.id


async def previous_poll_at(session: AsyncSession, run_id: int) -> datetime | None:
    """When the last successful period before this one polled."""
    result: datetime | None = await session.scalar(
        select(ReconcileRun.started_at)
        .where(ReconcileRun.outcome == "ok", ReconcileRun.id < run_id)
        .order_by(ReconcileRun.id.desc())
        .limit(1)
    )
    return result


async def finish_run(session: AsyncSession, run_id: int, **values: Any) -> None:
    await session.execute(update(ReconcileRun).where(ReconcileRun.id == run_id).values(**values))


async def store_observed_limit(session: AsyncSession, limit: int, at: datetime) -> None:
    await session.execute(
        update(OrgPlan).where(OrgPlan.id == 1).values(observed_limit=limit, observed_at=at)
    )


async def state_before_start(session: AsyncSession, sandbox_id: str) -> str | None:
    """The state a `starting` sandbox came from (its latest move into `starting`)."""
    result: str | None = await session.scalar(
        select(SandboxEvent.from_state)
        .where(SandboxEvent.sandbox_id == sandbox_id, SandboxEvent.to_state == "starting")
        .order_by(SandboxEvent.id.desc())
        .limit(1)
    )
    return result


async def recent_runs(session: AsyncSession, limit: int) -> list[ReconcileRun]:
    rows = await session.scalars(select(ReconcileRun).order_by(ReconcileRun.id.desc()).limit(limit))
    return list(rows)


async def drifts_of(
    session: AsyncSession, run_ids: Sequence[int], *, kind: str | None, limit: int
) -> list[Drift]:
    query = select(Drift).where(Drift.run_id.in_(run_ids))
    if kind is not None:
        query = query.where(Drift.kind == kind)
    rows = await session.scalars(query.order_by(Drift.id.desc()).limit(limit))
    return list(rows)


async def unmanaged_running(session: AsyncSession) -> list[Row]:
    query = select(*_ROW_COLUMNS).where(Sandbox.state == "running", Sandbox.managed.is_(False))
    return [_row(values) for values in await session.execute(query)]
