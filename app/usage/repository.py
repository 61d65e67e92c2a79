"""Queries of the usage domain: price-book versions and the usage report.

The report is one SQL statement so that a year of ledger never leaves Postgres. It follows the
billing rule of `amounts` exactly (see there): intervals are found through the GiST index on
their period, cut into pieces at the window's bounds, at price-book version changes and (when
grouping by day) at local midnights, and each piece gets the billed minutes that *start* in it,
computed in whole microseconds (bigint) so that no rounding enters before the final division.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import PriceBook

# group_by key → (output column, SQL expression over the pieces)
GROUP_KEYS: dict[str, str] = {
    "team": "team_id",
    "owner": "owner",
    "tier": "tier",
    "sandbox": "sandbox_id",
    "day": "day",
}


# --- price book ---------------------------------------------------------------------------


async def price_versions(session: AsyncSession) -> list[PriceBook]:
    rows = await session.scalars(select(PriceBook).order_by(PriceBook.effective_from))
    return list(rows)


async def price_version_at(session: AsyncSession, at: datetime) -> PriceBook | None:
    """The version in force at `at` (the latest whose effective_from is not after it)."""
    row: PriceBook | None = await session.scalar(
        select(PriceBook)
        .where(PriceBook.effective_from <= at)
        .order_by(PriceBook.effective_from.desc())
        .limit(1)
    )
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


def _report_sql(query: UsageQuery) -> tuple[str, dict[str, Any]]:
    by_day = "day" in query.group_by
    params: dict[str, Any] = {
        "start": query.start,
        "end": query.end,
        "at": query.at,
    }
    filters = ""
    if query.team_id is not None:
        filters += "AND i.team_id = :team_id "
        params["team_id"] = query.team_id
    if query.owner is not None:
        filters += "AND i.owner = :owner "
        params["owner"] = query.owner
    day_join, day_cols, day_lo, day_hi = "", "", "", ""
    if by_day:
        params["tz"] = query.timezone
        # One row per local calendar day the clipped interval touches.
        day_join = """
        CROSS JOIN LATERAL (
            SELECT g::date AS day,
                   g AT TIME ZONE CAST(:tz AS text) AS d_from,
                   (g + interval '1 day') AT TIME ZONE CAST(:tz AS text) AS d_to
            FROM generate_series(
                date_trunc('day', iv.ws AT TIME ZONE CAST(:tz AS text)),
                iv.we AT TIME ZONE CAST(:tz AS text),
                interval '1 day'
            ) AS g
        ) AS d"""
        day_cols, day_lo, day_hi = ", d.day", ", d.d_from", ", d.d_to"
    keys = [GROUP_KEYS[k] for k in query.group_by]
    key_list = ", ".join(keys)
    total_flag = ""
    group_clause = ""
    order_clause = ""
    if keys:
        if query.with_total:
            group_clause = f"GROUP BY GROUPING SETS (({key_list}), ())"
            total_flag = f", GROUPING({key_list}) <> 0 AS is_total"
            order_clause = f"ORDER BY GROUPING({key_list}), " + ", ".join(
                f"{k} NULLS FIRST" for k in keys
            )
        else:
            group_clause = f"GROUP BY {key_list}"
            order_clause = "ORDER BY " + ", ".join(f"{k} NULLS FIRST" for k in keys)
    elif query.with_total:
        total_flag = ", true AS is_total"
    select_keys = (key_list + ", ") if keys else ""
    # Only fixed fragments and GROUP_KEYS columns are interpolated; every value is a parameter.
    sql = f"""
    WITH versions AS (
        SELECT id, effective_from AS v_from,
               coalesce(lead(effective_from) OVER (ORDER BY effective_from),
                        'infinity'::timestamptz) AS v_to,
               credits_per_hour AS rates, credit_usd
        FROM price_books
    ),
    iv AS (
        SELECT i.team_id, i.owner, i.tier, i.sandbox_id, i.price_book_id, i.credits_per_hour,
               i.started_at AS s,
               greatest(i.started_at, coalesce(i.ended_at, CAST(:at AS timestamptz))) AS e,
               greatest(i.started_at, CAST(:start AS timestamptz)) AS ws,
               least(greatest(i.started_at, coalesce(i.ended_at, CAST(:at AS timestamptz))),
                     CAST(:end AS timestamptz)) AS we
        FROM usage_intervals AS i
        WHERE i.period && tstzrange(CAST(:start AS timestamptz), CAST(:end AS timestamptz), '[)')
          {filters}
    ),
    pieces AS (
        SELECT iv.team_id, iv.owner, iv.tier, iv.sandbox_id{day_cols}, iv.s,
               greatest(iv.ws, v.v_from{day_lo}) AS a,
               least(iv.we, v.v_to{day_hi}) AS b,
               CASE WHEN v.id = iv.price_book_id THEN iv.credits_per_hour
                    ELSE CAST(v.rates ->> iv.tier AS numeric) END AS rate,
               v.credit_usd
        FROM iv
        JOIN versions AS v ON v.v_from < iv.we AND v.v_to > iv.ws{day_join}
    ),
    measured AS (
        SELECT team_id, owner, tier, sandbox_id{day_cols.replace("d.", "")}, rate, credit_usd,
               extract(epoch FROM b - a) AS seconds,
               (CAST(extract(epoch FROM b - s) * 1000000 AS bigint) + 59999999) / 60000000
             - (CAST(extract(epoch FROM a - s) * 1000000 AS bigint) + 59999999) / 60000000
               AS minutes
        FROM pieces
        WHERE a < b
    )
    SELECT {select_keys}
           coalesce(sum(seconds), 0) AS seconds,
           coalesce(sum(minutes), 0) AS billed_minutes,
           round(CAST(coalesce(sum(minutes * rate), 0) AS numeric(40, 20)) / 60, 6) AS credits,
           round(CAST(coalesce(sum(minutes * rate * credit_usd), 0) AS numeric(40, 20)) / 60, 6)
               AS usd{total_flag}
    FROM measured
    {group_clause}
    {order_clause}
    """  # noqa: S608
    return sql, params


async def usage_rows(
    session: AsyncSession, query: UsageQuery, *, limit: int | None = None
) -> list[Row[Any]]:
    sql, params = _report_sql(query)
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    result = await session.execute(text(sql), params)
    return list(result.all())


async def stream_usage_rows(session: AsyncSession, query: UsageQuery) -> AsyncIterator[Row[Any]]:
    """The report's rows through a server-side cursor, for exports too large to hold."""
    sql, params = _report_sql(query)
    result = await session.stream(text(sql), params)
    async for row in result:
        yield row


async def explain(session: AsyncSession, query: UsageQuery) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the report, for the benchmark's notes."""
    sql, params = _report_sql(query)
    result = await session.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql), params)
    return "\n".join(str(r[0]) for r in result)
