"""The aggregates the dashboard needs that no service offers: each one statement over all
teams at once, so a page costs the same few queries with 2 teams or 200.

Concurrency over time is swept from the ledger (`usage_intervals`), not sampled: every start
is +1 and every end -1, the deltas are summed per instant and then run in time order, so the
level after each instant is exact; a bucket's peak is the highest level at any instant in it,
or the level carried in from before it. A VM that ran for one minute inside a two-hour bucket
is counted, and two that only touch (one ends at the instant the other starts) are never
counted together. `concurrency.peaks` turns the rows into the series.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.sandboxes.states import LIVE, sql_list

_LIVE = text(
    f"""
    SELECT team_id, tier, state, managed, count(*) AS n
      FROM sandboxes
     WHERE state IN ({sql_list(LIVE)})
     GROUP BY team_id, tier, state, managed
    """  # noqa: S608 (the state names are the enum's constants)
)


async def live_sandboxes(session: AsyncSession) -> Sequence[Row[Any]]:
    """Live sandboxes counted by (team, tier, state, managed): the live figures, the running
    ones per team and every team's burn rate come from these few rows."""
    return (await session.execute(_LIVE)).all()


def _concurrency_sql(team: bool) -> str:
    team_filter = "AND i.team_id = :team_id" if team else ""
    # Each interval overlapping the window (found through the GiST index on the period) gives
    # a +1 at its start, or at the window's start if it began before, and a -1 at its end if
    # that falls inside the window. Zero-length intervals have an empty period and never match:
    # they never ran. The running sum in time order is the level; RANGE makes all the events
    # of one instant peers, so each row's level is the level after every start and end of its
    # instant, never a partial sum in between (two VMs that only touch are never counted
    # together). Buckets are `date_bin`s of the window's start: integer arithmetic on the
    # timestamps, no numeric division per event.
    return f"""
    WITH iv AS (
        SELECT greatest(i.started_at, CAST(:start AS timestamptz)) AS s, i.ended_at AS e
          FROM usage_intervals AS i
         WHERE i.period && tstzrange(CAST(:start AS timestamptz), CAST(:end AS timestamptz), '[)')
           {team_filter}
    ),
    events AS (
        SELECT s AS t, 1 AS delta FROM iv
        UNION ALL
        SELECT e AS t, -1 AS delta FROM iv WHERE e < CAST(:end AS timestamptz)
    ),
    levels AS (
        SELECT t, delta, sum(delta) OVER (ORDER BY t RANGE UNBOUNDED PRECEDING) AS level
          FROM events
    )
    SELECT date_bin(make_interval(secs => CAST(:width AS integer)), t,
                    CAST(:start AS timestamptz)) AS bucket,
           max(level) AS peak,
           sum(delta) AS net,
           min(t) AS first_at
      FROM levels
     GROUP BY 1
     ORDER BY 1
    """  # noqa: S608 (no input in the text: the filter is a constant, values are bound)


_CONCURRENCY = text(_concurrency_sql(team=False))
_TEAM_CONCURRENCY = text(_concurrency_sql(team=True))


async def concurrency(
    session: AsyncSession,
    *,
    start: datetime,
    end: datetime,
    width_seconds: int,
    team_id: str | None = None,
) -> Sequence[Row[Any]]:
    """Per bucket of `width_seconds` from `start` that holds an instant where the level
    changed: (bucket start, peak level at its instants, net change, first such instant)."""
    params: dict[str, Any] = {"start": start, "end": end, "width": width_seconds}
    # A month of ledger is some hundred thousand events to sort: keep the sort in memory, as
    # the usage report does.
    await session.execute(text("SET LOCAL work_mem = '64MB'"))
    if team_id is None:
        return (await session.execute(_CONCURRENCY, params)).all()
    params["team_id"] = team_id
    return (await session.execute(_TEAM_CONCURRENCY, params)).all()
