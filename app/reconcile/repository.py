"""Set-based queries of the reconciler: one query loads every row a period may touch, and each
repair writes a whole batch with a handful of statements, whatever the number of sandboxes.

Claiming: API requests change the same rows concurrently, so a batch first claims its rows
with `FOR UPDATE SKIP LOCKED`, and only those whose state (and tier) are still what the period
loaded. A row that is locked or has moved on is left alone: the next period sees it afresh.

State changes are not written here: they go through `app.sandboxes.transitions`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import unnest
from app.models import Drift, OrgPlan, ReconcileRun, Sandbox, SandboxEvent
from app.reconcile.plan import Row
from app.sandboxes.states import LIVE, STOPPED, sql_list

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
    Sandbox.pending_intent,
    Sandbox.pending_at,
    Sandbox.updated_at,
)


def _row(values: Sequence[Any]) -> Row:
    return Row(*values)


_COLUMNS_SQL = ", ".join(f"s.{column.key}" for column in _ROW_COLUMNS)
_LIVE_SQL = sql_list(LIVE)
# The listed ids are joined, not tested with `upstream_id = ANY(...)`, which searches the array
# linearly for every row: both sides hold 10,000 entries at scale.
_LOAD = text(
    f"SELECT {_COLUMNS_SQL} FROM sandboxes s WHERE s.state IN ({_LIVE_SQL})"  # noqa: S608
    f" UNION SELECT {_COLUMNS_SQL} FROM sandboxes s"
    "  JOIN unnest(CAST(:ids AS varchar[])) AS u(id) ON s.upstream_id = u.id"
    f"  WHERE s.state NOT IN ({_LIVE_SQL})"
    f" UNION SELECT {_COLUMNS_SQL} FROM sandboxes s WHERE s.pending_intent IS NOT NULL"
)


async def load_rows(session: AsyncSession, upstream_ids: Sequence[str]) -> list[Row]:
    """Every live row, every other row of a VM the poll listed, and every row with a pending
    intent (each once)."""
    result = await session.execute(_LOAD, {"ids": list(upstream_ids)})
    return [_row(values) for values in result]


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
    """Set (miss counter, last sighting) of rows still running; others are left alone. Waits
    for a row an API request holds (its transactions are short and take no other row after
    it): a miss skipped would leave the counter at 0, which the next period reads as a
    sighting by this one."""
    if not misses:
        return
    await session.execute(
        text(
            "WITH u AS (SELECT * FROM unnest(CAST(:ids AS varchar[]), CAST(:missed AS int[]),"
            "  CAST(:seen AS timestamptz[])) AS u(id, missed, seen)),"
            " claimed AS (SELECT s.id FROM sandboxes s JOIN u ON s.id = u.id"
            "  WHERE s.state = 'running' ORDER BY s.id FOR UPDATE OF s)"
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


_DRIFT_COLUMNS = {
    "run_id": "bigint",
    "at": "timestamptz",
    "kind": "varchar",
    "sandbox_id": "varchar",
    "upstream_id": "varchar",
    "action": "varchar",
    "detail": "jsonb",
}
_INSERT_DRIFTS = text(unnest.insert("drifts", _DRIFT_COLUMNS))


async def add_drifts(session: AsyncSession, values: list[dict[str, Any]]) -> None:
    if values:
        await session.execute(_INSERT_DRIFTS, unnest.params(_DRIFT_COLUMNS, values))


async def start_run(session: AsyncSession, replica: str, started_at: datetime) -> int:
    run = ReconcileRun(replica=replica, started_at=started_at, outcome="running")
    session.add(run)
    await session.flush()
    return run.id


async def mark_polled(session: AsyncSession, run_id: int, *, running: int, limit: int) -> None:
    """The upstream answered this period's poll (`poll_times` counts it from now on)."""
    await session.execute(
        update(ReconcileRun)
        .where(ReconcileRun.id == run_id)
        .values(upstream_running=running, observed_limit=limit)
    )


@dataclass(frozen=True)
class PollTimes:
    """When the last periods (before a given one) polled, read together.

    `polled`: the last period whose poll the upstream answered, whether or not it finished: one
    the database failed half-way may have written the first misses that a second miss then
    dates the stop by. `written`: the last such period that also finished, so that it wrote
    the miss of every running row its poll did not list. Only that one implies a sighting of a
    row whose miss counter is 0 (`plan.last_sighting`): a period that failed before its misses
    were written may have missed the row and left its counter at 0."""

    polled: datetime | None
    written: datetime | None


def _last_poll(run_id: int | None, *, written: bool) -> Any:
    query = select(ReconcileRun.started_at).where(ReconcileRun.upstream_running.is_not(None))
    if written:
        query = query.where(ReconcileRun.outcome == "ok", ReconcileRun.finished_at.is_not(None))
    if run_id is not None:
        query = query.where(ReconcileRun.id < run_id)
    return query.order_by(ReconcileRun.id.desc()).limit(1).scalar_subquery()


async def poll_times(session: AsyncSession, run_id: int | None = None) -> PollTimes:
    """`PollTimes` before `run_id` (when given), in one round trip."""
    polled, written = (
        await session.execute(
            select(_last_poll(run_id, written=False), _last_poll(run_id, written=True))
        )
    ).one()
    return PollTimes(polled, written)


def row_of(sandbox: Sandbox) -> Row:
    """A loaded sandbox as the reconciler's plan sees it."""
    return Row(*(getattr(sandbox, column.key) for column in _ROW_COLUMNS))


async def finish_run(session: AsyncSession, run_id: int, **values: Any) -> None:
    await session.execute(update(ReconcileRun).where(ReconcileRun.id == run_id).values(**values))


async def store_observed_limit(session: AsyncSession, limit: int, at: datetime) -> None:
    await session.execute(
        update(OrgPlan).where(OrgPlan.id == 1).values(observed_limit=limit, observed_at=at)
    )


@dataclass(frozen=True)
class Intent:
    """What the call that left a sandbox `unknown` asked for, and the state it left."""

    intent: str
    from_state: str | None


async def unknown_intents(session: AsyncSession, sandbox_ids: Sequence[str]) -> dict[str, Intent]:
    """Each `unknown` sandbox's intent, from its latest event into `unknown` (rows whose fork
    never answered have none: they are creates)."""
    if not sandbox_ids:
        return {}
    latest = (
        select(func.max(SandboxEvent.id))
        .where(SandboxEvent.sandbox_id.in_(sandbox_ids), SandboxEvent.to_state == "unknown")
        .group_by(SandboxEvent.sandbox_id)
    )
    rows = await session.execute(
        select(SandboxEvent.sandbox_id, SandboxEvent.detail, SandboxEvent.from_state).where(
            SandboxEvent.id.in_(latest)
        )
    )
    return {
        sandbox_id: Intent(detail["intent"], from_state)
        for sandbox_id, detail, from_state in rows
        if "intent" in detail
    }


async def clear_intents(session: AsyncSession, rows: Sequence[Row]) -> None:
    """Drop intents too old to explain anything, unless a newer call has written its own."""
    if rows:
        await session.execute(
            text(
                "UPDATE sandboxes s SET pending_intent = NULL, pending_at = NULL"
                " FROM unnest(CAST(:ids AS varchar[]), CAST(:ats AS timestamptz[])) AS u(id, at)"
                " WHERE s.id = u.id AND s.pending_at = u.at"
            ),
            {"ids": [r.id for r in rows], "ats": [r.pending_at for r in rows]},
        )


async def unremoved_forks(session: AsyncSession, *, limit: int) -> list[tuple[str, str]]:
    """(id, upstream id) of failed creates whose fork is not yet confirmed deleted."""
    rows = await session.execute(
        select(Sandbox.id, Sandbox.upstream_id)
        .where(
            Sandbox.state == "failed",
            Sandbox.upstream_id.is_not(None),
            Sandbox.deleted_at.is_(None),
        )
        .order_by(Sandbox.updated_at)
        .limit(limit)
    )
    return [(sandbox_id, upstream_id) for sandbox_id, upstream_id in rows if upstream_id]


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


async def stopped_to_check(session: AsyncSession, *, before: datetime, limit: int) -> list[Row]:
    """Stopped rows with an upstream id, least recently checked first, that stopped before
    `before` and have no call in flight."""
    query = (
        select(*_ROW_COLUMNS)
        .where(
            Sandbox.state.in_(sorted(STOPPED)),
            Sandbox.upstream_id.is_not(None),
            Sandbox.pending_intent.is_(None),
            Sandbox.state_changed_at < before,
        )
        .order_by(Sandbox.upstream_checked_at.asc().nulls_first(), Sandbox.id)
        .limit(limit)
    )
    return [_row(values) for values in await session.execute(query)]


async def mark_checked(session: AsyncSession, sandbox_ids: Sequence[str], at: datetime) -> None:
    if sandbox_ids:
        await session.execute(
            update(Sandbox).where(Sandbox.id.in_(sandbox_ids)).values(upstream_checked_at=at)
        )


async def unmanaged_running(session: AsyncSession) -> list[Row]:
    query = select(*_ROW_COLUMNS).where(Sandbox.state == "running", Sandbox.managed.is_(False))
    return [_row(values) for values in await session.execute(query)]
