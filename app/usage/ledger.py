"""The usage ledger: opening and closing usage intervals.

Invariant: a sandbox has at most one open interval (the partial unique index
`uq_usage_intervals_open_per_sandbox` enforces it), and an interval never ends before it starts.
Intervals are only closed and split, never rewritten, so a report over the past is stable.

Each interval records the rate it started at and the price-book version that rate came from.
A price-book change does *not* close and reopen the intervals running across it: an interval
is one stretch the upstream bills per started minute, and cutting it would bill an extra
started minute at the cut. Instead reports and cost statements split it at the version's
effective_from (each billed minute priced by the version in force when it starts; see
`amounts`), which needs no job to have run and gives the same figures whenever they are read.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import PriceBook, Sandbox, UsageInterval, table_of
from app.tiers import LIST_CREDITS_PER_HOUR
from app.usage import repository


def price_in(version: repository.PriceVersion | None, tier: str) -> tuple[Decimal, int | None]:
    """A tier's credits per hour in a price-book version, and that version's id (None only when
    no version is in force, when the contract's list price applies)."""
    if version is None:
        return LIST_CREDITS_PER_HOUR[tier], None
    return Decimal(str(version.credits_per_hour[tier])), version.id


class PriceTable:
    """Every price-book version in memory, for pricing many intervals with one read."""

    def __init__(self, versions: Sequence[PriceBook]) -> None:
        self._versions = sorted(versions, key=lambda version: version.effective_from)
        self._starts = [version.effective_from for version in self._versions]

    def price(self, tier: str, at: datetime) -> tuple[Decimal, int | None]:
        index = bisect_right(self._starts, at) - 1
        return price_in(self._versions[index] if index >= 0 else None, tier)


async def price_for(session: AsyncSession, tier: str, at: datetime) -> tuple[Decimal, int | None]:
    """Credits per hour for a tier at a moment, and the price-book version it comes from."""
    return price_in(await repository.price_version_at(session, at), tier)


async def rate_for(session: AsyncSession, tier: str, at: datetime) -> Decimal:
    """Credits per hour for a tier at a moment, from the price book."""
    rate, _ = await price_for(session, tier, at)
    return rate


# Built once, on the table rather than the mapped class: compiled once, and no ORM bulk path.
_OPEN = insert(table_of(UsageInterval))


async def open_interval(session: AsyncSession, sandbox: Sandbox, at: datetime) -> None:
    rate, price_book_id = await price_for(session, sandbox.tier, at)
    await session.execute(
        _OPEN,
        {
            "sandbox_id": sandbox.id,
            "team_id": sandbox.team_id,
            "owner": sandbox.owner,
            "tier": sandbox.tier,
            "credits_per_hour": rate,
            "price_book_id": price_book_id,
            "started_at": at,
        },
    )


async def close_interval(session: AsyncSession, sandbox_id: str, at: datetime, cause: str) -> bool:
    """Close the sandbox's open interval at `at` (never before its start). True if one was open."""
    result = await session.execute(
        update(UsageInterval)
        .where(UsageInterval.sandbox_id == sandbox_id, UsageInterval.ended_at.is_(None))
        .values(ended_at=func.greatest(UsageInterval.started_at, at), end_cause=cause)
        .returning(UsageInterval.id)
    )
    return result.first() is not None


async def split_interval(session: AsyncSession, sandbox: Sandbox, at: datetime, cause: str) -> None:
    """Close the open interval and open the next one at the sandbox's current tier."""
    await close_interval(session, sandbox.id, at, cause)
    await open_interval(session, sandbox, at)


async def intervals_of(session: AsyncSession, sandbox_id: str) -> list[UsageInterval]:
    rows = await session.scalars(
        select(UsageInterval)
        .where(UsageInterval.sandbox_id == sandbox_id)
        .order_by(UsageInterval.started_at, UsageInterval.id)
    )
    return list(rows)
