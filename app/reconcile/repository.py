"""Set-based queries of the reconciler: one query loads every row a period may touch, and each
repair writes a whole batch with a handful of statements, whatever the number of sandboxes.

Claiming: API requests change the same rows concurrently, so a batch first claims its rows
with `FOR UPDATE SKIP LOCKED`, and only those whose state (and tier) are still what the period
loaded. A row that is locked or has moved on is left alone: the next period sees it afresh.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import TextClause, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import context
from app.models import Drift, OrgPlan, ReconcileRun, Sandbox, SandboxEvent
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


_COLUMNS_SQL = ", ".join(f"s.{column.key}" for column in _ROW_COLUMNS)
_LIVE_SQL = ", ".join(f"'{state}'" for state in LIVE_STATES)
# The listed ids are joined, not tested with `upstream_id = ANY(...)`, which searches the array
# linearly for every row: both sides hold 10,000 entries at scale.
_LOAD = text(
    f"SELECT {_COLUMNS_SQL} FROM sandboxes s WHERE s.state IN ({_LIVE_SQL})"  # noqa: S608
    f" UNION ALL SELECT {_COLUMNS_SQL} FROM sandboxes s"
    "  JOIN unnest(CAST(:ids AS varchar[])) AS u(id) ON s.upstream_id = u.id"
    f"  WHERE s.state NOT IN ({_LIVE_SQL})"
)


async def load_rows(session: AsyncSession, upstream_ids: Sequence[str]) -> list[Row]:
    """Every live row, and every other row of a VM the poll listed."""
    result = await session.execute(_LOAD, {"ids": list(upstream_ids)})
    return [_row(values) for values in result]


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


def _unnest_insert(table: str, columns: dict[str, str]) -> TextClause:
    """`INSERT INTO table (columns) SELECT … FROM unnest(one array per column)`: a whole
    batch in one statement. `columns` maps each column to its SQL type; jsonb travels as text.
    Table and column names are constants of this module, never input."""
    arrays = ", ".join(
        f"CAST(:{name} AS {'text' if kind == 'jsonb' else kind}[])"
        for name, kind in columns.items()
    )
    values = ", ".join(
        f"u.{name}::jsonb" if kind == "jsonb" else f"u.{name}" for name, kind in columns.items()
    )
    names = ", ".join(columns)
    return text(
        f"INSERT INTO {table} ({names}) SELECT {values}"  # noqa: S608
        f" FROM unnest({arrays}) AS u({names})"
    )


def _params(columns: dict[str, str], rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    return {
        name: [json.dumps(r[name]) if kind == "jsonb" else r[name] for r in rows]
        for name, kind in columns.items()
    }


_EVENT_COLUMNS = {
    "sandbox_id": "varchar",
    "from_state": "varchar",
    "to_state": "varchar",
    "cause": "varchar",
    "actor": "varchar",
    "request_id": "varchar",
    "detail": "jsonb",
}
_AUDIT_COLUMNS = {
    "actor": "varchar",
    "team_id": "varchar",
    "action": "varchar",
    "target": "varchar",
    "cause": "varchar",
    "request_id": "varchar",
    "outcome": "varchar",
    "detail": "jsonb",
}
_DRIFT_COLUMNS = {
    "run_id": "bigint",
    "at": "timestamptz",
    "kind": "varchar",
    "sandbox_id": "varchar",
    "upstream_id": "varchar",
    "action": "varchar",
    "detail": "jsonb",
}
_INTERVAL_COLUMNS = {
    "sandbox_id": "varchar",
    "team_id": "varchar",
    "owner": "varchar",
    "tier": "varchar",
    "credits_per_hour": "numeric",
    "price_book_id": "bigint",
    "started_at": "timestamptz",
}
_SANDBOX_COLUMNS = {
    "id": "varchar",
    "upstream_id": "varchar",
    "team_id": "varchar",
    "template": "varchar",
    "tier": "varchar",
    "hibernation_timeout_seconds": "int",
    "state": "varchar",
    "last_cause": "varchar",
    "operation_id": "varchar",
    "managed": "boolean",
    "state_changed_at": "timestamptz",
    "last_started_at": "timestamptz",
    "last_seen_running_at": "timestamptz",
    "upstream_last_active_at": "timestamptz",
}
_INSERT_EVENTS = _unnest_insert("sandbox_events", _EVENT_COLUMNS)
_INSERT_AUDIT = _unnest_insert("audit_log", _AUDIT_COLUMNS)
_INSERT_DRIFTS = _unnest_insert("drifts", _DRIFT_COLUMNS)
_INSERT_INTERVALS = _unnest_insert("usage_intervals", _INTERVAL_COLUMNS)
_INSERT_SANDBOXES = text(
    _unnest_insert("sandboxes", _SANDBOX_COLUMNS).text
    + " ON CONFLICT (upstream_id) DO NOTHING RETURNING id"
)


_SIGHTINGS_SQL = (
    "WITH u AS (SELECT * FROM unnest(CAST(:ids AS varchar[]),"
    "  CAST(:active AS timestamptz[])) AS u(id, active)),"
    " claimed AS (SELECT s.id FROM sandboxes s JOIN u ON s.id = u.id"
    "  WHERE s.state = 'running' ORDER BY s.id FOR UPDATE OF s{skip})"
    " UPDATE sandboxes s SET last_seen_running_at = :seen_at,"
    "  upstream_last_active_at = coalesce(u.active, s.upstream_last_active_at),"
    "  missed_polls = 0"
    " FROM u JOIN claimed ON claimed.id = u.id WHERE s.id = u.id"
)
_SIGHTINGS = text(_SIGHTINGS_SQL.format(skip=" SKIP LOCKED"))
_SIGHTINGS_WAIT = text(_SIGHTINGS_SQL.format(skip=""))


async def record_sightings(
    session: AsyncSession,
    sightings: Sequence[tuple[str, datetime | None]],
    seen_at: datetime,
    *,
    wait: bool = False,
) -> None:
    """Mark running rows seen running now: sighting time, upstream activity, no misses.
    Rows an API request holds are skipped (they are written next period) unless `wait`."""
    if sightings:
        await session.execute(
            _SIGHTINGS_WAIT if wait else _SIGHTINGS,
            {
                "ids": [s[0] for s in sightings],
                "active": [s[1] for s in sightings],
                "seen_at": seen_at,
            },
        )


async def record_misses(
    session: AsyncSession, misses: Sequence[tuple[str, int, datetime | None]]
) -> None:
    """Set (miss counter, last sighting) of rows still running; others are left alone."""
    if not misses:
        return
    await session.execute(
        text(
            "WITH u AS (SELECT * FROM unnest(CAST(:ids AS varchar[]), CAST(:missed AS int[]),"
            "  CAST(:seen AS timestamptz[])) AS u(id, missed, seen)),"
            " claimed AS (SELECT s.id FROM sandboxes s JOIN u ON s.id = u.id"
            "  WHERE s.state = 'running' ORDER BY s.id FOR UPDATE OF s SKIP LOCKED)"
            " UPDATE sandboxes s SET missed_polls = u.missed,"
            "  last_seen_running_at = coalesce(u.seen, s.last_seen_running_at)"
            " FROM u JOIN claimed ON claimed.id = u.id WHERE s.id = u.id"
        ),
        {
            "ids": [m[0] for m in misses],
            "missed": [m[1] for m in misses],
            "seen": [m[2] for m in misses],
        },
    )


async def mark_stopped(
    session: AsyncSession, stops: Sequence[tuple[str, datetime]], *, state: str, cause: str
) -> None:
    """Claimed rows leave `running` at their time (the ledger is closed separately)."""
    await session.execute(
        text(
            "UPDATE sandboxes s SET state = :state, last_cause = :cause,"
            " state_changed_at = u.at, updated_at = now(), reservation_expires_at = NULL,"
            " missed_polls = 0"
            " FROM unnest(CAST(:ids AS varchar[]), CAST(:ats AS timestamptz[])) AS u(id, at)"
            " WHERE s.id = u.id"
        ),
        {
            "ids": [x[0] for x in stops],
            "ats": [x[1] for x in stops],
            "state": state,
            "cause": cause,
        },
    )


async def mark_running(
    session: AsyncSession,
    starts: Sequence[tuple[str, datetime, str, datetime | None]],
    *,
    seen_at: datetime,
    cause: str,
) -> None:
    """Claimed rows enter `running` at their time, at their tier, seen now (the ledger is
    opened separately)."""
    await session.execute(
        text(
            "UPDATE sandboxes s SET state = 'running', last_cause = :cause, tier = u.tier,"
            " state_changed_at = u.at, last_started_at = u.at, updated_at = now(),"
            " reservation_expires_at = NULL, last_seen_running_at = :seen_at,"
            " upstream_last_active_at = u.active, missed_polls = 0"
            " FROM unnest(CAST(:ids AS varchar[]), CAST(:ats AS timestamptz[]),"
            "  CAST(:tiers AS varchar[]), CAST(:active AS timestamptz[]))"
            "  AS u(id, at, tier, active)"
            " WHERE s.id = u.id"
        ),
        {
            "ids": [x[0] for x in starts],
            "ats": [x[1] for x in starts],
            "tiers": [x[2] for x in starts],
            "active": [x[3] for x in starts],
            "seen_at": seen_at,
            "cause": cause,
        },
    )


async def set_tiers(session: AsyncSession, tiers: Sequence[tuple[str, str]]) -> None:
    await session.execute(
        text(
            "UPDATE sandboxes s SET tier = u.tier, updated_at = now()"
            " FROM unnest(CAST(:ids AS varchar[]), CAST(:tiers AS varchar[])) AS u(id, tier)"
            " WHERE s.id = u.id"
        ),
        {"ids": [x[0] for x in tiers], "tiers": [x[1] for x in tiers]},
    )


async def insert_sandboxes(session: AsyncSession, values: list[dict[str, Any]]) -> set[str]:
    """Insert new rows; a row whose upstream id got a row meanwhile is skipped. Returns the ids
    inserted."""
    if not values:
        return set()
    result = await session.execute(_INSERT_SANDBOXES, _params(_SANDBOX_COLUMNS, values))
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
        await session.execute(_INSERT_INTERVALS, _params(_INTERVAL_COLUMNS, values))


async def add_events(session: AsyncSession, values: list[dict[str, Any]]) -> None:
    if values:
        request_id = context.request_id.get()
        rows = [{**v, "request_id": request_id} for v in values]
        await session.execute(_INSERT_EVENTS, _params(_EVENT_COLUMNS, rows))


async def add_audit(session: AsyncSession, values: list[dict[str, Any]]) -> None:
    if values:
        request_id = context.request_id.get()
        rows = [{**v, "request_id": request_id} for v in values]
        await session.execute(_INSERT_AUDIT, _params(_AUDIT_COLUMNS, rows))


async def add_drifts(session: AsyncSession, values: list[dict[str, Any]]) -> None:
    if values:
        await session.execute(_INSERT_DRIFTS, _params(_DRIFT_COLUMNS, values))


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
