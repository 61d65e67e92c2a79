"""Usage reports on a year of ledger: 1,000,000 intervals, 200 teams, 12 months.

Builds a scratch database on the test server (CORRAL_TEST_DATABASE_URL, else the embedded
Postgres), migrates it, bulk-loads the ledger with COPY, then times, warm, the queries the API
runs:

- an all-teams report for one month, grouped by team;
- one team's year, grouped by day;
- a CSV export of one month (every sandbox, grouped by sandbox and tier), streamed;
- month-to-date spend of one team (what admission asks on every start).

Prints one JSON document (and, with --plans, the EXPLAIN ANALYZE plans). Run:

    CORRAL_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/usage_report.py --plans
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
from sqlalchemy.engine import make_url

from app.db import create_engine, migrate, session_factory
from app.identity.actor import Actor
from app.tiers import LIST_CREDITS_PER_HOUR, TIERS
from app.usage import budget, reports, repository
from tests.database import recreate

YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)
YEAR_END = datetime(2026, 1, 1, tzinfo=UTC)
PRICE_CHANGE = datetime(2025, 7, 1, tzinfo=UTC)
TEAMS = 200
SANDBOXES_PER_TEAM = 50
INTERVALS_PER_SANDBOX = 100  # 200 * 50 * 100 = 1,000,000
TIER_WEIGHTS = (30, 30, 20, 10, 6, 3, 1)
ADMIN = Actor(key_id="bench", team_id=None, scopes=frozenset({"admin"}), is_admin=True)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def ledger_rows(seed: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(sandboxes, intervals): each sandbox runs INTERVALS_PER_SANDBOX times in the year, once
    per equal slot, for 1 minute to 8 hours (one in a hundred for two days); its last run may
    be open."""
    rng = random.Random(seed)
    year = YEAR_END - YEAR_START
    slot = year / INTERVALS_PER_SANDBOX
    sandboxes: list[tuple[Any, ...]] = []
    intervals: list[tuple[Any, ...]] = []
    for t in range(TEAMS):
        team_id = f"team-{t:03d}"
        for s in range(SANDBOXES_PER_TEAM):
            sandbox_id = f"sbx_{t:03d}{s:09d}"
            owner = f"user-{rng.randrange(10)}@{team_id}"
            tier = rng.choices(TIERS, TIER_WEIGHTS)[0]
            sandboxes.append((sandbox_id, team_id, owner, "tpl", tier, 300, "hibernated", "api"))
            for k in range(INTERVALS_PER_SANDBOX):
                started = YEAR_START + slot * k + (slot - timedelta(hours=8)) * rng.random()
                seconds = rng.randrange(60, 8 * 3600) if rng.random() > 0.01 else 2 * 86400
                ended: datetime | None = started + timedelta(seconds=seconds, microseconds=7)
                if k == INTERVALS_PER_SANDBOX - 1 and rng.random() < 0.1:
                    ended = None
                version = 2 if started >= PRICE_CHANGE else 1
                rate = LIST_CREDITS_PER_HOUR[tier] * (2 if version == 2 else 1)
                intervals.append(
                    (
                        sandbox_id,
                        team_id,
                        owner,
                        tier,
                        rate,
                        version,
                        started,
                        ended,
                        None if ended is None else "api",
                    )
                )
    # A real ledger grows in time order (intervals are written as sandboxes start), so its rows
    # for one month sit together on disk; load it the same way.
    intervals.sort(key=lambda row: row[6])
    return sandboxes, intervals


async def load(url: str, seed: int) -> dict[str, float]:
    started = time.perf_counter()
    sandboxes, intervals = ledger_rows(seed)
    generated = time.perf_counter()
    conn = await asyncpg.connect(_dsn(url))
    try:
        await conn.executemany(
            "INSERT INTO teams (id, name, monthly_budget_credits) VALUES ($1, $1, 100000)",
            [(f"team-{t:03d}",) for t in range(TEAMS)],
        )
        doubled = {tier: str(rate * 2) for tier, rate in LIST_CREDITS_PER_HOUR.items()}
        await conn.execute(
            "INSERT INTO price_books (id, effective_from, credits_per_hour, credit_usd, created_by)"
            " VALUES (2, $1, $2::jsonb, 0.015, 'bench')",
            PRICE_CHANGE,
            json.dumps(doubled),
        )
        await conn.copy_records_to_table(
            "sandboxes",
            records=[(*row, f"op{n}") for n, row in enumerate(sandboxes)],
            columns=[
                "id",
                "team_id",
                "owner",
                "template",
                "tier",
                "hibernation_timeout_seconds",
                "state",
                "last_cause",
                "operation_id",
            ],
        )
        await conn.copy_records_to_table(
            "usage_intervals",
            records=intervals,
            columns=[
                "sandbox_id",
                "team_id",
                "owner",
                "tier",
                "credits_per_hour",
                "price_book_id",
                "started_at",
                "ended_at",
                "end_cause",
            ],
        )
        await conn.execute("VACUUM ANALYZE usage_intervals")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return {
        "intervals": len(intervals),
        "sandboxes": len(sandboxes),
        "generate_s": round(generated - started, 2),
        "load_s": round(time.perf_counter() - generated, 2),
    }


async def timed(call: Callable[[], Awaitable[Any]], runs: int) -> dict[str, Any]:
    await call()  # warm the cache and the plan
    times = []
    result: Any = None
    for _ in range(runs):
        started = time.perf_counter()
        result = await call()
        times.append((time.perf_counter() - started) * 1000)
    return {
        "median_ms": round(statistics.median(times), 1),
        "min_ms": round(min(times), 1),
        "max_ms": round(max(times), 1),
        "rows": result,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--plans", action="store_true", help="print EXPLAIN ANALYZE plans")
    parser.add_argument("--reuse", action="store_true", help="keep an already loaded database")
    args = parser.parse_args()

    name = "corral_bench_usage"
    if args.reuse:
        from tests.database import url_for

        url, loaded = url_for(name), None
    else:
        url = await recreate(name)
    engine = create_engine(url)
    await migrate(engine)
    if not args.reuse:
        loaded = await load(url, args.seed)
    sessions = session_factory(engine)
    tz = ZoneInfo("UTC")
    at = YEAR_END
    march = reports.Window(datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))
    year = reports.Window(YEAR_START, YEAR_END)
    one_team = "team-042"

    async def month_all_teams() -> int:
        async with sessions() as session:
            report = await reports.report(
                session, ADMIN, span=march, keys=["team"], team=None, at=at, timezone=tz
            )
        return len(report.rows)

    async def team_year_by_day() -> int:
        async with sessions() as session:
            report = await reports.report(
                session, ADMIN, span=year, keys=["day"], team=one_team, at=at, timezone=tz
            )
        return len(report.rows)

    async def csv_month() -> int:
        lines = await reports.csv_lines(
            sessions, ADMIN, span=march, keys=["sandbox", "tier"], team=None, at=at, timezone=tz
        )
        count = 0
        async for chunk in lines:
            count += chunk.count("\n")
        return count - 1  # the header

    async def month_to_date() -> str:
        async with sessions() as session:
            spent: Decimal = await budget.month_to_date_credits(
                session, one_team, datetime(2025, 11, 17, 12, tzinfo=UTC), timezone=tz
            )
        return str(spent)

    results = {
        "all_teams_month_by_team": await timed(month_all_teams, args.runs),
        "one_team_year_by_day": await timed(team_year_by_day, args.runs),
        "csv_month_by_sandbox_and_tier": await timed(csv_month, args.runs),
        "one_team_month_to_date": await timed(month_to_date, args.runs),
    }
    out: dict[str, Any] = {"load": loaded, "target_ms": 300, "results": results}
    if args.plans:
        queries = {
            "all_teams_month_by_team": repository.UsageQuery(
                march.start, march.end, at, ["team"], tz, with_total=True
            ),
            "one_team_year_by_day": repository.UsageQuery(
                year.start, year.end, at, ["day"], tz, team_id=one_team, with_total=True
            ),
            "csv_month_by_sandbox_and_tier": repository.UsageQuery(
                march.start, march.end, at, ["sandbox", "tier"], tz
            ),
            "one_team_month_to_date": repository.UsageQuery(
                datetime(2025, 11, 1, tzinfo=UTC),
                datetime(2025, 11, 17, 12, tzinfo=UTC),
                datetime(2025, 11, 17, 12, tzinfo=UTC),
                [],
                tz,
                team_id=one_team,
            ),
        }
        plans = {}
        for label, query in queries.items():
            async with sessions() as session:
                plans[label] = await repository.explain(session, query)
        out["plans"] = plans
    await engine.dispose()
    print(json.dumps(out, indent=2))
    print()
    print(f"{'query':36} {'median ms':>10} {'min ms':>8} {'rows':>7}")
    for label, figures in results.items():
        print(
            f"{label:36} {figures['median_ms']:>10} {figures['min_ms']:>8} {figures['rows']!s:>7}"
        )


if __name__ == "__main__":
    asyncio.run(main())
