"""`statements.with_accrued` (one statement: the sandbox, its intervals and the price
versions in force during each, joined) equals the cost statement's total (intervals and
versions read apart), exactly, for random ledgers: intervals across price changes, starting or
ending exactly on one, open, zero-length, before any version but the first, and none at all.

Each example writes its rows inside one transaction that is rolled back afterwards."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.identity.actor import Actor
from app.tiers import TIERS
from app.usage import amounts, statements
from tests.usage import reference, rows
from tests.usage.reference import Interval, Version

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SANDBOX = "sbx_accrued00001"
TEAM_KEY = Actor(key_id="key-a", team_id="team-a", scopes=frozenset({"sandboxes:read"}))

# Whole minutes hit version boundaries exactly; microseconds fall anywhere.
offsets = st.one_of(
    st.integers(-600, 600).map(lambda m: timedelta(minutes=m)),
    st.integers(-36_000 * 10**6, 36_000 * 10**6).map(lambda us: timedelta(microseconds=us)),
)
durations = st.one_of(
    st.just(timedelta(0)),
    st.integers(1, 900).map(lambda m: timedelta(minutes=m)),
    st.integers(1, 36_000 * 10**6).map(lambda us: timedelta(microseconds=us)),
)


@st.composite
def ledgers(draw: Callable[..., Any]) -> tuple[list[Version], list[Interval], datetime]:
    versions = [rows.LIST_VERSION]
    for n, offset in enumerate(draw(st.lists(offsets, max_size=4, unique=True))):
        versions.append(
            Version(
                id=2001 + n,
                effective_from=BASE + offset,
                rates={tier: Decimal(draw(st.integers(1, 500))) for tier in TIERS},
                credit_usd=Decimal(draw(st.integers(1, 30))) / 1000,
            )
        )
    intervals = []
    count = draw(st.integers(0, 6))
    for n in range(count):
        started_at = BASE + draw(offsets)
        # At most one interval is open, as in the ledger; the last one drawn may be.
        is_open = n == count - 1 and draw(st.booleans())
        version = reference.version_at(versions, started_at)
        tier = draw(st.sampled_from(TIERS))
        intervals.append(
            Interval(
                id=n + 1,
                sandbox_id=SANDBOX,
                team_id="team-a",
                owner=None,
                tier=tier,
                started_at=started_at,
                ended_at=None if is_open else started_at + draw(durations),
                price_book_id=version.id,
                credits_per_hour=version.rates[tier],
            )
        )
    # Sometimes exactly on a version's start, which an open interval then ends at.
    boundaries = [v.effective_from for v in versions[1:]] or [BASE]
    at = draw(st.one_of(st.sampled_from(boundaries), offsets.map(lambda offset: BASE + offset)))
    return versions, intervals, at


@given(ledger=ledgers())
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
async def test_accrued_equals_the_statement_total(
    engine: AsyncEngine, ledger: tuple[list[Version], list[Interval], datetime]
) -> None:
    versions, intervals, at = ledger
    async with engine.connect() as conn:
        transaction = await conn.begin()
        try:
            await rows.teams(conn, ["team-a"])
            await rows.sandboxes(conn, {SANDBOX: ("team-a", None)})
            await rows.versions(conn, versions[1:])
            await rows.intervals(conn, intervals)
            async with AsyncSession(bind=conn) as session:
                lines = await statements.priced_intervals(session, SANDBOX, at)
                expected = sum((line.measure for line in lines), amounts.ZERO)
                sandbox, got = await statements.with_accrued(session, TEAM_KEY, SANDBOX, at)
        finally:
            await transaction.rollback()

    assert sandbox.id == SANDBOX
    assert got == expected
