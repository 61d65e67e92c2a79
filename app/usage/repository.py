"""Queries of the usage domain: price-book versions and the usage report.

The report is one SQL statement so that a year of ledger never leaves Postgres. It follows the
billing rule of `amounts` exactly (see there): intervals are found through the GiST index on
their period, cut into pieces at the window's bounds, at price-book version changes and (when
grouping by day) at local midnights, and each piece gets the billed minutes that *start* in it,
computed in whole microseconds (bigint) so that no rounding enters before the final division.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import Row, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.models import PriceBook, Team

# group_by key → (output column, SQL expression over the pieces)
GROUP_KEYS: dict[str, str] = {
    "team": "team_id",
    "owner": "owner",
    "tier": "tier",
    "sandbox": "sandbox_id",
    "day": "day",
}


# --- teams --------------------------------------------------------------------------------


async def team(session: AsyncSession, team_id: str) -> Team | None:
    """The team whose budget is asked about, deleted or not."""
    return await session.get(Team, team_id)


# --- price book ---------------------------------------------------------------------------


async def price_versions(session: AsyncSession) -> list[PriceBook]:
    rows = await session.scalars(select(PriceBook).order_by(PriceBook.effective_from))
    return list(rows)


# Every version, only the columns pricing reads: a Core query, so it runs on a session or on
# a bare connection alike.
_PRICE_POINTS = select(PriceBook.id, PriceBook.effective_from, PriceBook.credits_per_hour).order_by(
    PriceBook.effective_from
)


async def price_points(db: AsyncSession | AsyncConnection) -> Sequence[Row[Any]]:
    return (await db.execute(_PRICE_POINTS)).all()


# The price book's mark (`ledger.price_table_marked`), as two columns for a statement that
# is sent anyway to carry: how many versions, and the highest id.
BOOK_VERSIONS = "(SELECT count(*) FROM price_books)"
BOOK_LAST_ID = "(SELECT coalesce(max(id), 0) FROM price_books)"
BOOK_MARK = f"{BOOK_VERSIONS} AS book_versions, {BOOK_LAST_ID} AS book_last_id"


class PriceVersion(Protocol):
    """What pricing needs of a price-book version: a `PriceBook`, or a row of just these."""

    @property
    def id(self) -> int: ...

    @property
    def credits_per_hour(self) -> dict[str, Any]: ...


# The version in force at :at; built once, and only the two columns pricing reads.
_VERSION_AT = (
    select(PriceBook.id, PriceBook.credits_per_hour)
    .where(PriceBook.effective_from <= bindparam("at"))
    .order_by(PriceBook.effective_from.desc())
    .limit(1)
)


async def price_version_at(session: AsyncSession, at: datetime) -> PriceVersion | None:
    """The version in force at `at` (the latest whose effective_from is not after it)."""
    row: Row[tuple[int, dict[str, Any]]] | None = (
        await session.execute(_VERSION_AT, {"at": at})
    ).first()
    return row


async def price_version_from(session: AsyncSession, effective_from: datetime) -> PriceBook | None:
    row: PriceBook | None = await session.scalar(
        select(PriceBook).where(PriceBook.effective_from == effective_from)
    )
    return row


async def lock_price_book(session: AsyncSession) -> None:
    """Serialise writers of the price book (readers are not blocked)."""
    await session.execute(text("LOCK TABLE price_books IN SHARE ROW EXCLUSIVE MODE"))


# --- the usage report ---------------------------------------------------------------------


@dataclass(frozen=True)
class UsageQuery:
    start: datetime
    end: datetime
    at: datetime
    group_by: Sequence[str]
    timezone: str
    team_id: str | None = None
    owner: str | None = None
    # Whether to add the all-groups total as a last row (GROUPING SETS), flagged is_total.
    with_total: bool = False


@dataclass(frozen=True)
class VersionSpan:
    """A price-book version and the instant the next one takes over (None: still in force)."""

    id: int
    effective_from: datetime
    until: datetime | None
    rates: dict[str, Any]
    credit_usd: Decimal


async def version_spans(session: AsyncSession, start: datetime, end: datetime) -> list[VersionSpan]:
    """The versions in force at some instant of [start, end), oldest first."""
    versions = await price_versions(session)
    spans = [
        VersionSpan(
            v.id,
            v.effective_from,
            versions[n + 1].effective_from if n + 1 < len(versions) else None,
            v.credits_per_hour,
            v.credit_usd,
        )
        for n, v in enumerate(versions)
    ]
    return [v for v in spans if v.effective_from < end and (v.until is None or v.until > start)]


def _report_sql(query: UsageQuery, versions: Sequence[VersionSpan]) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {"start": query.start, "end": query.end, "at": query.at}
    filters = ""
    if query.team_id is not None:
        filters += "AND i.team_id = :team_id "
        params["team_id"] = query.team_id
    if query.owner is not None:
        filters += "AND i.owner = :owner "
        params["owner"] = query.owner
    keys = [GROUP_KEYS[k] for k in query.group_by]
    interval_keys = "".join(f"iv.{k}, " for k in keys if k != "day")

    # Price versions. The versions that overlap the window are few and known up front; when
    # one version covers the whole window (the usual case) no interval needs cutting, and the
    # join is skipped entirely.
    for n, v in enumerate(versions):
        params[f"v{n}_id"] = v.id
        params[f"v{n}_from"] = v.effective_from
        params[f"v{n}_until"] = v.until
        params[f"v{n}_rates"] = json.dumps(v.rates)
        params[f"v{n}_usd"] = v.credit_usd
    version_rows = ", ".join(
        f"(CAST(:v{n}_id AS bigint), CAST(:v{n}_from AS timestamptz), "
        f"coalesce(CAST(:v{n}_until AS timestamptz), 'infinity'::timestamptz), "
        f"CAST(:v{n}_rates AS jsonb), CAST(:v{n}_usd AS numeric))"
        for n in range(len(versions))
    )
    if len(versions) == 1:
        version_join = ""
        v_lo = ", CAST(:v0_from AS timestamptz)"
        v_hi = ", coalesce(CAST(:v0_until AS timestamptz), 'infinity'::timestamptz)"
        v_id = "CAST(:v0_id AS bigint)"
        # Pricing by constants, not a join: a join on the single version's id would make the
        # planner guess the rows wrong and sort where it should hash.
        price_source = "grouped AS g"
        v_rates, v_usd = "CAST(:v0_rates AS jsonb)", "CAST(:v0_usd AS numeric)"
    else:
        # No version in the window (only possible before 1970): a row that matches nothing.
        version_rows = version_rows or (
            "(CAST(0 AS bigint), 'infinity'::timestamptz, 'infinity'::timestamptz, "
            "'{}'::jsonb, CAST(0 AS numeric))"
        )
        version_join = "JOIN versions AS v ON v.v_from < iv.we AND v.v_to > iv.ws"
        v_lo, v_hi, v_id = ", v.v_from", ", v.v_to", "v.id"
        price_source = "grouped AS g JOIN versions AS v ON v.id = g.v_id"
        v_rates, v_usd = "v.rates", "v.credit_usd"

    day_join, d_lo, d_hi, day_col = "", "", "", ""
    if "day" in query.group_by:
        params["tz"] = query.timezone
        # One row per local calendar day the clipped interval touches.
        day_join = """
        CROSS JOIN LATERAL (
            SELECT CAST(g AS date) AS day,
                   g AT TIME ZONE CAST(:tz AS text) AS d_from,
                   (g + interval '1 day') AT TIME ZONE CAST(:tz AS text) AS d_to
            FROM generate_series(
                date_trunc('day', iv.ws AT TIME ZONE CAST(:tz AS text)),
                iv.we AT TIME ZONE CAST(:tz AS text),
                interval '1 day'
            ) AS g
        ) AS d"""
        d_lo, d_hi, day_col = ", d.d_from", ", d.d_to", "d.day, "

    key_list = ", ".join(keys)
    total_flag, group_clause, order_clause = "", "", ""
    if keys:
        ordered = ", ".join(f"{k} NULLS FIRST" for k in keys)
        if query.with_total:
            group_clause = f"GROUP BY GROUPING SETS (({key_list}), ())"
            total_flag = f", GROUPING({key_list}) <> 0 AS is_total"
            order_clause = f"ORDER BY GROUPING({key_list}), {ordered}"
        else:
            group_clause = f"GROUP BY {key_list}"
            order_clause = f"ORDER BY {ordered}"
    elif query.with_total:
        total_flag = ", true AS is_total"
    select_keys = f"{key_list}, " if keys else ""
    grouped_keys = "".join(f"{k}, " for k in keys)
    # (OFFSET 0 keeps Postgres from inlining a CTE into the next one, which would copy the
    # expressions of `a`, `b`, `a_us` and `b_us` into every use and compute them repeatedly.)
    # Offsets from the interval's start in whole microseconds (bigint): billed minutes are
    # F(b) - F(a) with F(x) = ceil(x / 60 s), and seconds are summed as integers too. Rows are
    # first summed per (keys, tier, version, own rate) in integers only; the numeric rates
    # multiply those few sums, and the one division left, done at scale 20, rounds exactly.
    sql = f"""
    WITH versions (id, v_from, v_to, rates, credit_usd) AS (VALUES {version_rows}),
    iv AS (
        SELECT i.team_id, i.owner, i.tier, i.sandbox_id, i.price_book_id, i.credits_per_hour,
               i.started_at AS s,
               greatest(i.started_at, CAST(:start AS timestamptz)) AS ws,
               least(greatest(i.started_at, coalesce(i.ended_at, CAST(:at AS timestamptz))),
                     CAST(:end AS timestamptz)) AS we
        FROM usage_intervals AS i
        WHERE i.period && tstzrange(CAST(:start AS timestamptz), CAST(:end AS timestamptz), '[)')
          {filters}
    ),
    pieces AS (
        SELECT {interval_keys}{day_col}iv.s, iv.tier AS rate_tier, {v_id} AS v_id,
               -- The interval keeps the rate it started at; later versions price the rest.
               CASE WHEN iv.price_book_id = {v_id} THEN iv.credits_per_hour END AS own_rate,
               greatest(iv.ws{v_lo}{d_lo}) AS a,
               least(iv.we{v_hi}{d_hi}) AS b
        FROM iv
        {version_join}{day_join}
        OFFSET 0
    ),
    measured AS (
        SELECT {grouped_keys}rate_tier, v_id, own_rate,
               CASE WHEN a = s THEN CAST(0 AS bigint)
                    ELSE CAST(extract(epoch FROM a - s) * 1000000 AS bigint) END AS a_us,
               CAST(extract(epoch FROM b - s) * 1000000 AS bigint) AS b_us
        FROM pieces
        WHERE a < b
        OFFSET 0
    ),
    grouped AS (
        SELECT {grouped_keys}rate_tier, v_id, own_rate,
               sum(b_us - a_us) AS us,
               sum((b_us + 59999999) / 60000000 - (a_us + 59999999) / 60000000) AS minutes
        FROM measured
        GROUP BY {grouped_keys}rate_tier, v_id, own_rate
    ),
    priced AS (
        SELECT g.*, coalesce(g.own_rate, CAST({v_rates} ->> g.rate_tier AS numeric)) AS rate,
               {v_usd} AS credit_usd
        FROM {price_source}
    )
    SELECT {select_keys}
           CAST(CAST(coalesce(sum(us), 0) AS numeric(40, 20)) / 1000000 AS numeric(38, 6))
               AS seconds,
           coalesce(sum(minutes), 0) AS billed_minutes,
           round(CAST(coalesce(sum(minutes * rate), 0) AS numeric(40, 20)) / 60, 6) AS credits,
           round(CAST(coalesce(sum(minutes * rate * credit_usd), 0) AS numeric(40, 20)) / 60, 6)
               AS usd{total_flag}
    FROM priced
    {group_clause}
    {order_clause}
    """  # noqa: S608
    return sql, params


async def _prepared(session: AsyncSession, query: UsageQuery) -> tuple[str, dict[str, Any]]:
    versions = await version_spans(session, query.start, query.end)
    # Reports aggregate tens of thousands of pieces: let the sort and hash stay in memory.
    await session.execute(text("SET LOCAL work_mem = '64MB'"))
    return _report_sql(query, versions)


async def usage_rows(
    session: AsyncSession, query: UsageQuery, *, limit: int | None = None
) -> list[Row[Any]]:
    sql, params = await _prepared(session, query)
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    result = await session.execute(text(sql), params)
    return list(result.all())


async def stream_usage_rows(
    session: AsyncSession, query: UsageQuery, *, batch: int = 2000
) -> AsyncIterator[Sequence[Row[Any]]]:
    """The report's rows through a server-side cursor, in batches, for exports too large to
    hold: memory stays bounded and round trips (and task switches) stay few."""
    sql, params = await _prepared(session, query)
    result = await session.stream(text(sql).execution_options(yield_per=batch), params)
    async for rows in result.partitions():
        yield rows


async def explain(session: AsyncSession, query: UsageQuery) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the report, for the benchmark's notes."""
    sql, params = await _prepared(session, query)
    result = await session.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql), params)
    return "\n".join(str(r[0]) for r in result)
