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

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app import clock
from app.db import reading
from app.identity.actor import Actor
from app.runtime import Runtime
from app.tiers import TIERS
from app.usage import amounts, ledger, statements
from app.usage import repository as usage_repository
from tests.fixtures import factories
from tests.usage import reference, rows
from tests.usage.reference import Interval, Version

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SANDBOX = "sbx_accrued00001"
TEAM_KEY = Actor(key_id="key-a", team_id="team-a", scopes=frozenset({"sandboxes:read"}))
ADMIN = Actor(key_id="admin", team_id=None, scopes=frozenset({"admin"}), is_admin=True)

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
            # Each example reuses the interval ids of the last, which the kept totals assume
            # never happens (ids come from an identity): start each from none kept.
            statements._closed_totals.clear()
            async with AsyncSession(bind=conn) as session:
                lines = await statements.priced_intervals(session, SANDBOX, at)
                expected = sum((line.measure for line in lines), amounts.ZERO)
                sandbox, got = await statements.with_accrued(session, TEAM_KEY, SANDBOX, at)
                # The second read takes the closed intervals' total kept by the first.
                _, again = await statements.with_accrued(session, TEAM_KEY, SANDBOX, at)
        finally:
            await transaction.rollback()

    assert sandbox.id == SANDBOX
    assert got == expected
    assert again == expected


async def test_the_closed_intervals_total_is_kept_until_another_closes(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    headers = await factories.team_with_key(client, "cycling")
    sandbox_id = (await factories.sandbox(client, headers))["id"]

    async def cycle() -> None:
        for verb in ("hibernate", "start"):
            response = await client.post(f"/v1/sandboxes/{sandbox_id}/{verb}", headers=headers)
            assert response.status_code == 200, response.text

    async def read() -> tuple[amounts.Measure, amounts.Measure, int]:
        """with_accrued's total, the statement's, and the statements the read sent."""
        sent: list[str] = []

        def count(*args: Any) -> None:
            sent.append(args[2])

        at = clock.now()
        async with reading(runtime.sessions) as session:
            lines = await statements.priced_intervals(session, sandbox_id, at)
            event.listen(runtime.engine.sync_engine, "before_cursor_execute", count)
            try:
                _, total = await statements.with_accrued(session, ADMIN, sandbox_id, at)
            finally:
                event.remove(runtime.engine.sync_engine, "before_cursor_execute", count)
        return total, sum((line.measure for line in lines), amounts.ZERO), len(sent)

    for _ in range(3):
        await cycle()
    total, expected, sent = await read()
    assert (total, sent) == (expected, 2)  # the closed intervals priced, and kept
    total, expected, sent = await read()
    assert (total, sent) == (expected, 1)  # the kept total, and the open interval
    await cycle()  # one more closed interval: a new mark
    total, expected, sent = await read()
    assert (total, sent) == (expected, 2)
    assert expected.billed_minutes >= 4  # not a vacuous equality

    # A mark read before the last interval closed (a read racing a close) prices only the
    # intervals it counts, not the one closed since.
    statements._closed_totals.clear()
    async with reading(runtime.sessions) as session:
        intervals = await ledger.intervals_of(session, sandbox_id)
        earlier = [i for i in intervals if i.ended_at is not None][:-1]
        versions = await usage_repository.price_versions(session)
        at = clock.now()
        book = (await session.execute(text(f"SELECT {usage_repository.BOOK_MARK}"))).one()
        mark = (len(earlier), max(i.id for i in earlier), *book)
        total = await statements._closed_total(session, sandbox_id, mark, at)
    lines = [line for i in earlier for line in statements.price_interval(i, versions, at)]
    assert total == sum((line.measure for line in lines), amounts.ZERO)


async def test_a_version_taking_effect_in_a_closed_interval_reprices_it(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A version may take effect up to `prices.CLOCK_SKEW` in the past, inside an interval
    already closed and whose total is kept: the next read prices it again, as the statement
    does."""
    headers = await factories.team_with_key(client, "repriced")
    sandbox_id = (await factories.sandbox(client, headers))["id"]
    for verb in ("hibernate", "start"):
        response = await client.post(f"/v1/sandboxes/{sandbox_id}/{verb}", headers=headers)
        assert response.status_code == 200, response.text
    before = (await client.get(f"/v1/sandboxes/{sandbox_id}", headers=headers)).json()
    version = {
        "credits_per_hour": {tier: "999" for tier in TIERS},
        "credit_usd": "0.5",
        "effective_from": (clock.now() - timedelta(seconds=30)).isoformat(),
    }
    created = await client.put("/v1/admin/prices", json=version, headers=factories.ADMIN)
    assert created.status_code == 201, created.text
    after = (await client.get(f"/v1/sandboxes/{sandbox_id}", headers=headers)).json()
    cost = (await client.get(f"/v1/sandboxes/{sandbox_id}/cost", headers=headers)).json()
    assert Decimal(after["accrued"]["credits"]) == Decimal(cost["total"]["credits"])
    assert Decimal(after["accrued"]["credits"]) > Decimal(before["accrued"]["credits"])
