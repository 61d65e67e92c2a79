"""The usage ledger's one price rule, and reading a sandbox's intervals.

Intervals are written only by `app.sandboxes.transitions`, with a sandbox's state. Invariant:
a sandbox has at most one open interval (the partial unique index
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
from typing import Protocol
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.models import UsageInterval
from app.tiers import LIST_CREDITS_PER_HOUR
from app.usage import repository


def price_in(version: repository.PriceVersion | None, tier: str) -> tuple[Decimal, int | None]:
    """A tier's credits per hour in a price-book version, and that version's id (None only when
    no version is in force, when the contract's list price applies)."""
    if version is None:
        return LIST_CREDITS_PER_HOUR[tier], None
    return Decimal(str(version.credits_per_hour[tier])), version.id


class PricePoint(repository.PriceVersion, Protocol):
    @property
    def effective_from(self) -> datetime: ...


class PriceTable:
    """Every price-book version in memory, for pricing many intervals with one read."""

    def __init__(self, versions: Sequence[PricePoint]) -> None:
        self._versions = sorted(versions, key=lambda version: version.effective_from)
        self._starts = [version.effective_from for version in self._versions]

    def price(self, tier: str, at: datetime) -> tuple[Decimal, int | None]:
        index = bisect_right(self._starts, at) - 1
        return price_in(self._versions[index] if index >= 0 else None, tier)


async def price_table(db: AsyncSession | AsyncConnection) -> PriceTable:
    return PriceTable(await repository.price_points(db))


# The price book's content is named by (versions, highest id): versions are only ever added,
# never edited, and take ids from an identity, so any change moves one of the two. A caller
# that reads the pair with a statement it sends anyway (`repository.BOOK_MARK`) is spared the
# table's read on every interval it opens. Per engine: each engine is one database.
_tables: WeakKeyDictionary[Engine, tuple[tuple[int, int], PriceTable]] = WeakKeyDictionary()


async def price_table_marked(conn: AsyncConnection, mark: tuple[int, int]) -> PriceTable:
    """The price table as of `mark`, read from the database only when the price book has
    changed since it was last read through this connection's engine."""
    engine = conn.sync_engine
    cached = _tables.get(engine)
    if cached is not None and cached[0] == mark:
        return cached[1]
    table = await price_table(conn)
    _tables[engine] = (mark, table)
    return table


async def intervals_of(session: AsyncSession, sandbox_id: str) -> list[UsageInterval]:
    rows = await session.scalars(
        select(UsageInterval)
        .where(UsageInterval.sandbox_id == sandbox_id)
        .order_by(UsageInterval.started_at, UsageInterval.id)
    )
    return list(rows)


async def last_tier(session: AsyncSession, sandbox_id: str) -> str | None:
    """The tier the sandbox last ran at upstream: its latest interval's. A VM woken by traffic
    runs at it, not at a tier changed here while it was stopped (that waits for a start)."""
    tier: str | None = await session.scalar(
        select(UsageInterval.tier)
        .where(UsageInterval.sandbox_id == sandbox_id)
        .order_by(UsageInterval.started_at.desc(), UsageInterval.id.desc())
        .limit(1)
    )
    return tier
