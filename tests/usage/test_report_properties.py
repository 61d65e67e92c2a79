"""Property tests: for random ledgers (intervals crossing month, day and price boundaries, open
ones, zero-length ones) every report's seconds, billed minutes, credits and USD equal the
brute-force calculator's exactly, and so do cost statements and month-to-date spend.

Each example writes its rows in bulk inside one transaction that is rolled back afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.identity.actor import Actor
from app.tiers import TIERS
from app.usage import amounts, budget, periods, reports, statements
from tests.usage import reference, rows
from tests.usage.reference import Interval, Version

BASE = datetime(2026, 3, 1, 5, 0, tzinfo=UTC)  # midnight in New York, the 1st of March
TEAMS = ("team-a", "team-b")
SANDBOXES = {
    "sbx_a1": ("team-a", "alice"),
    "sbx_a2": ("team-a", None),
    "sbx_a3": ("team-a", "bob"),
    "sbx_b1": ("team-b", "alice"),
    "sbx_b2": ("team-b", None),
}
TIMEZONES = ("UTC", "America/New_York", "Asia/Kolkata")
GROUPINGS: tuple[list[str], ...] = (
    [],
    ["team"],
    ["owner", "tier"],
    ["sandbox", "day"],
    ["day"],
    ["team", "owner", "tier", "sandbox", "day"],
)
ADMIN = Actor(key_id="admin", team_id=None, scopes=frozenset({"admin"}), is_admin=True)
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Offsets from BASE: whole minutes (to hit boundaries exactly) or any microsecond.
offsets = st.one_of(
    st.integers(-3 * 1440, 3 * 1440).map(lambda m: timedelta(minutes=m)),
    st.integers(-3 * 86400 * 10**6, 3 * 86400 * 10**6).map(lambda us: timedelta(microseconds=us)),
)
durations = st.one_of(
    st.just(timedelta(0)),
    st.integers(1, 5 * 60 * 10**6).map(lambda us: timedelta(microseconds=us)),
    st.integers(1, 36 * 3600 * 10**6).map(lambda us: timedelta(microseconds=us)),
)
rates = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(1000), places=4)
credit_usds = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(2), places=6)


@dataclass(frozen=True)
class Ledger:
    versions: list[Version]
    intervals: list[Interval]
    at: datetime


@st.composite
def ledgers(draw: Callable[..., Any]) -> Ledger:
    versions = [rows.LIST_VERSION]
    for n, offset in enumerate(draw(st.lists(offsets, max_size=3, unique=True))):
        versions.append(
            Version(
                id=1001 + n,
                effective_from=BASE + offset,
                rates={tier: draw(rates) for tier in TIERS},
                credit_usd=draw(credit_usds),
            )
        )
    at = BASE + draw(offsets)
    intervals: list[Interval] = []
    open_sandboxes: set[str] = set()
    for n in range(draw(st.integers(0, 10))):
        sandbox_id = draw(st.sampled_from(sorted(SANDBOXES)))
        team_id, owner = SANDBOXES[sandbox_id]
        started_at = BASE + draw(offsets)
        is_open = draw(st.booleans()) and sandbox_id not in open_sandboxes
        if is_open:
            open_sandboxes.add(sandbox_id)
        tier = draw(st.sampled_from(TIERS))
        version = reference.version_at(versions, started_at)
        intervals.append(
            Interval(
                id=n + 1,
                sandbox_id=sandbox_id,
                team_id=team_id,
                owner=owner,
                tier=tier,
                started_at=started_at,
                ended_at=None if is_open else started_at + draw(durations),
                price_book_id=version.id,
                credits_per_hour=version.rates[tier],
            )
        )
    return Ledger(versions, intervals, at)


@asynccontextmanager
async def written(engine: AsyncEngine, ledger: Ledger) -> AsyncIterator[AsyncSession]:
    async with engine.connect() as conn:
        transaction = await conn.begin()
        try:
            await rows.teams(conn, TEAMS)
            await rows.sandboxes(conn, SANDBOXES)
            await rows.versions(conn, ledger.versions[1:])
            await rows.intervals(conn, ledger.intervals)
            async with AsyncSession(bind=conn) as session:
                yield session
        finally:
            await transaction.rollback()


def _as_dict(row: Any, keys: list[str]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    data = row.model_dump()
    return tuple(data[k] for k in keys), {k: data[k] for k in reports.FIGURES}


def _expected(expected: dict[tuple[Any, ...], dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {
        key: {**figures, "seconds": amounts.seconds_figure(figures["seconds"])}
        for key, figures in expected.items()
    }


@given(ledger=ledgers(), timezone=st.sampled_from(TIMEZONES), window=st.tuples(offsets, offsets))
@EXAMPLES
async def test_reports_equal_the_brute_force(
    engine: AsyncEngine, ledger: Ledger, timezone: str, window: tuple[timedelta, timedelta]
) -> None:
    lo, hi = sorted(window)
    month = periods.month_start(BASE, ZoneInfo(timezone))
    windows = [
        (month, periods.next_month_start(month, ZoneInfo(timezone))),  # the calendar month
        (month - timedelta(days=10), month + timedelta(days=10)),  # across the month boundary
    ]
    if lo < hi:
        windows.append((BASE + lo, BASE + hi))
    minutes_of: dict[int, Any] = {}
    async with written(engine, ledger) as session:
        for start, end in windows:
            for keys in GROUPINGS:
                got = await reports.report(
                    session,
                    ADMIN,
                    span=reports.Window(start, end),
                    keys=keys,
                    team=None,
                    at=ledger.at,
                    timezone=ZoneInfo(timezone),
                )
                expected = reference.report(
                    ledger.intervals,
                    ledger.versions,
                    start=start,
                    end=end,
                    at=ledger.at,
                    group_by=keys,
                    timezone=timezone,
                    minutes_of=minutes_of,
                )
                got_rows = dict(_as_dict(r, keys) for r in got.rows)
                if keys:
                    assert got_rows == _expected(expected), (start, end, keys)
                total = _expected(
                    reference.report(
                        ledger.intervals,
                        ledger.versions,
                        start=start,
                        end=end,
                        at=ledger.at,
                        group_by=[],
                        timezone=timezone,
                        minutes_of=minutes_of,
                    )
                )
                zero = {
                    "seconds": amounts.seconds_figure(Decimal(0)),
                    "billed_minutes": 0,
                    "credits": Decimal("0.000000"),
                    "usd": Decimal("0.000000"),
                }
                assert got.total.model_dump() == total.get((), zero), (start, end, keys)


@given(ledger=ledgers(), timezone=st.sampled_from(TIMEZONES))
@EXAMPLES
async def test_day_rows_add_up_to_the_interval_bill(
    engine: AsyncEngine, ledger: Ledger, timezone: str
) -> None:
    """Billed minutes are attributed, never re-rounded: per-day minutes of a sandbox over a
    window holding all its intervals sum to Σ ceil(duration / 60 s)."""
    start, end = BASE - timedelta(days=5), BASE + timedelta(days=5)
    async with written(engine, ledger) as session:
        got = await reports.report(
            session,
            ADMIN,
            span=reports.Window(start, end),
            keys=["sandbox", "day"],
            team=None,
            at=ledger.at,
            timezone=ZoneInfo(timezone),
        )
    per_sandbox: dict[str, int] = {}
    for row in got.rows:
        assert row.sandbox is not None
        per_sandbox[row.sandbox] = per_sandbox.get(row.sandbox, 0) + row.billed_minutes
    expected: dict[str, int] = {}
    for i in ledger.intervals:
        e = max(i.started_at, i.ended_at or ledger.at)
        minutes = amounts.minutes_started_before(i.started_at, e, e)
        if minutes:
            expected[i.sandbox_id] = expected.get(i.sandbox_id, 0) + minutes
    assert per_sandbox == expected


@given(ledger=ledgers())
@EXAMPLES
async def test_cost_statements_equal_the_brute_force(engine: AsyncEngine, ledger: Ledger) -> None:
    async with written(engine, ledger) as session:
        for sandbox_id in SANDBOXES:
            got = await statements.statement(session, ADMIN, sandbox_id, ledger.at)
            mine = [i for i in ledger.intervals if i.sandbox_id == sandbox_id]
            everything = (BASE - timedelta(days=30), BASE + timedelta(days=30))
            expected = reference.report(
                mine,
                ledger.versions,
                start=everything[0],
                end=everything[1],
                at=ledger.at,
                group_by=[],
                timezone="UTC",
            )
            total = got.total.model_dump()
            if () in expected:
                assert total == _expected(expected)[()]
            else:
                assert total["billed_minutes"] == 0 and total["seconds"] == 0
            # One line per interval and price version it ran under; zero-length ones too.
            assert {line.interval_id for line in got.lines} == {i.id for i in mine}
            for line in got.lines:
                interval = next(i for i in mine if i.id == line.interval_id)
                version = reference.version_at(ledger.versions, line.from_)
                assert line.price_book_id == version.id
                assert line.credits_per_hour == reference.rate_of(interval, version)


@given(ledger=ledgers(), timezone=st.sampled_from(TIMEZONES))
@EXAMPLES
async def test_month_to_date_spend_equals_the_brute_force(
    engine: AsyncEngine, ledger: Ledger, timezone: str
) -> None:
    async with written(engine, ledger) as session:
        for team_id in TEAMS:
            spent = await budget.month_to_date_credits(
                session, team_id, ledger.at, timezone=ZoneInfo(timezone)
            )
            start = periods.month_start(ledger.at, ZoneInfo(timezone))
            expected = reference.report(
                ledger.intervals,
                ledger.versions,
                start=start,
                end=ledger.at,
                at=ledger.at,
                group_by=[],
                timezone=timezone,
                team_id=team_id,
            )
            assert spent == expected.get((), {"credits": Decimal("0.000000")})["credits"]
