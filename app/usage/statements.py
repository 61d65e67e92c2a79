"""A sandbox's cost statement: its intervals one by one, each priced by the price-book
version(s) in force while it ran.

An interval that ran across a price-book change gives one line per version, split at the
version's effective_from; billed minutes go to the line their start falls in (`amounts`), so
the lines of one interval add up to exactly its per-started-minute bill. The total is summed
exactly and rounded once, like a report's total.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import groupby
from weakref import WeakKeyDictionary

from sqlalchemy import (
    BigInteger,
    DateTime,
    Engine,
    Select,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.identity.actor import Actor
from app.models import PriceBook, Sandbox, UsageInterval
from app.sandboxes import access
from app.usage import amounts, ledger, repository
from app.usage.schemas import CostLine, CostStatement, UsageFigures


@dataclass(frozen=True)
class Priced:
    interval: UsageInterval
    start: datetime
    end: datetime
    version: PriceBook
    rate: Decimal
    credit_usd: Decimal
    measure: amounts.Measure


def _spans(versions: list[PriceBook]) -> list[tuple[PriceBook, datetime | None]]:
    """Each version with the instant the next one takes over (None for the last)."""
    return [
        (v, versions[i + 1].effective_from if i + 1 < len(versions) else None)
        for i, v in enumerate(versions)
    ]


def _rate(interval: UsageInterval, version: PriceBook) -> Decimal:
    # The interval keeps the rate it started at; later versions price the minutes after them.
    if version.id == interval.price_book_id:
        return interval.credits_per_hour
    return Decimal(str(version.credits_per_hour[interval.tier]))


def price_interval(
    interval: UsageInterval, versions: list[PriceBook], at: datetime
) -> list[Priced]:
    """The interval cut at price-book changes; a zero-length interval gives one empty line."""
    s = interval.started_at
    e = max(s, interval.ended_at or at)
    lines: list[Priced] = []
    for version, until in _spans(versions):
        lo = max(s, version.effective_from)
        hi = e if until is None else min(e, until)
        in_force_at_start = version.effective_from <= s and (until is None or s < until)
        if lo < hi or (s == e and in_force_at_start):
            rate = _rate(interval, version)
            usd = version.credit_usd
            measure = amounts.piece(s, e, lo, hi, rate, usd)
            lines.append(Priced(interval, lo, max(lo, hi), version, rate, usd, measure))
    return lines


async def priced_intervals(session: AsyncSession, sandbox_id: str, at: datetime) -> list[Priced]:
    versions = await repository.price_versions(session)
    lines: list[Priced] = []
    for interval in await ledger.intervals_of(session, sandbox_id):
        lines.extend(price_interval(interval, versions, at))
    return lines


def figures(measure: amounts.Measure) -> UsageFigures:
    return UsageFigures(
        seconds=amounts.seconds_figure(measure.seconds),
        billed_minutes=measure.billed_minutes,
        credits=measure.credits,
        usd=measure.usd,
    )


async def statement(
    session: AsyncSession, actor: Actor, sandbox_id: str, at: datetime
) -> CostStatement:
    sandbox = await access.load(session, actor, sandbox_id)
    priced = await priced_intervals(session, sandbox.id, at)
    total = sum((p.measure for p in priced), amounts.ZERO)
    return CostStatement(
        sandbox_id=sandbox.id,
        team=sandbox.team_id,
        owner=sandbox.owner,
        at=at,
        lines=[
            CostLine(
                interval_id=p.interval.id,
                tier=p.interval.tier,
                started_at=p.interval.started_at,
                ended_at=p.interval.ended_at,
                end_cause=p.interval.end_cause,
                from_=p.start,
                to=p.end,
                price_book_id=p.version.id,
                price_effective_from=p.version.effective_from,
                credits_per_hour=p.rate,
                credit_usd=p.credit_usd,
                **figures(p.measure).model_dump(),
            )
            for p in priced
        ],
        total=figures(total),
    )


# Each price-book version with the instant the next one takes over (NULL for the last).
_VERSIONS = select(
    PriceBook,
    func.lead(PriceBook.effective_from).over(order_by=PriceBook.effective_from).label("until"),
).subquery("versions")
_VERSION = aliased(PriceBook, _VERSIONS)
_INTERVAL_END = func.greatest(
    UsageInterval.started_at,
    func.coalesce(UsageInterval.ended_at, bindparam("at", type_=DateTime(timezone=True))),
)
# A sandbox's intervals, each with the versions in force at some instant of it (`<=`: a
# zero-length interval is priced by the version in force at its start, which may start then;
# a version starting exactly at an interval's end comes too, and prices nothing). That is the
# consecutive run of versions `price_interval` needs, in the statement that reads the
# intervals.
_IN_FORCE = and_(
    _VERSION.effective_from <= _INTERVAL_END,
    or_(_VERSIONS.c.until.is_(None), _VERSIONS.c.until > UsageInterval.started_at),
)


# The mark of a sandbox's closed intervals: how many, the highest id, and the price book's
# own mark (versions, highest id; `ledger.price_table_marked`). A closed interval never
# changes (`transitions` closes an open one, once) and interval ids come from an identity,
# never reused; a version may take effect up to `prices.CLOCK_SKEW` in the past, or at an
# instant taken before it committed, so the book's mark is part of it. Together they name the
# closed intervals' priced total, which is kept (`_closed_totals`) instead of being priced
# again on every read. At most one interval is open, and it has the highest id.
_CLOSED = aliased(UsageInterval)
_CLOSED_MARK = (
    select(
        func.count().label("closed_count"),
        func.coalesce(func.max(_CLOSED.id), 0).label("closed_last_id"),
    )
    .where(_CLOSED.sandbox_id == Sandbox.id, _CLOSED.ended_at.is_not(None))
    .lateral("closed")
)
_BOOK_VERSIONS = literal_column(repository.BOOK_VERSIONS, BigInteger)
_BOOK_LAST_ID = literal_column(repository.BOOK_LAST_ID, BigInteger)


def _open_with_mark(
    in_team: bool,
) -> Select[Sandbox, UsageInterval, PriceBook, int, int, int, int]:
    """The sandbox, its open interval (if any) with the versions in force, and the mark."""
    query = (
        select(
            Sandbox,
            UsageInterval,
            _VERSION,
            _CLOSED_MARK.c.closed_count,
            _CLOSED_MARK.c.closed_last_id,
            _BOOK_VERSIONS,
            _BOOK_LAST_ID,
        )
        .select_from(Sandbox)
        .join(_CLOSED_MARK, true())
        .outerjoin(
            UsageInterval,
            and_(UsageInterval.sandbox_id == Sandbox.id, UsageInterval.ended_at.is_(None)),
        )
        .outerjoin(_VERSION, _IN_FORCE)
        .where(Sandbox.id == bindparam("sandbox_id"))
        .order_by(_VERSION.effective_from)
    )
    return query.where(Sandbox.team_id == bindparam("team_id")) if in_team else query


# Built once, by whether the lookup is scoped to a team (see `sandboxes.repository._lookups`).
_OPEN_WITH_MARK = {in_team: _open_with_mark(in_team) for in_team in (False, True)}
# The closed intervals up to a mark's highest id, with the versions in force during each.
_CLOSED_PRICED = (
    select(UsageInterval, _VERSION)
    .join(_VERSION, _IN_FORCE)
    .where(
        UsageInterval.sandbox_id == bindparam("sandbox_id"),
        UsageInterval.ended_at.is_not(None),
        UsageInterval.id <= bindparam("last_id"),
    )
    .order_by(UsageInterval.started_at, UsageInterval.id, _VERSION.effective_from)
)

# (closed intervals, their highest id, price-book versions, the book's highest id)
Mark = tuple[int, int, int, int]
# Per engine (each engine is one database): sandbox id -> (mark, priced total), the least
# recently read dropped first beyond `CLOSED_TOTALS_KEPT`.
_closed_totals: WeakKeyDictionary[Engine, OrderedDict[str, tuple[Mark, amounts.Measure]]] = (
    WeakKeyDictionary()
)
CLOSED_TOTALS_KEPT = 10_000


def _priced_sum(pairs: Iterable[tuple[UsageInterval, PriceBook]], at: datetime) -> amounts.Measure:
    """The sum of `price_interval` over intervals, each given with its versions in force,
    ordered by interval."""
    total = amounts.ZERO
    for interval, run in groupby(pairs, key=lambda pair: pair[0]):
        for line in price_interval(interval, [version for _, version in run], at):
            total = total + line.measure
    return total


async def _closed_total(
    session: AsyncSession, sandbox_id: str, mark: Mark, at: datetime
) -> amounts.Measure:
    if mark[0] == 0:
        return amounts.ZERO
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    kept = _closed_totals.setdefault(engine, OrderedDict())
    hit = kept.get(sandbox_id)
    if hit is not None and hit[0] == mark:
        kept.move_to_end(sandbox_id)
        return hit[1]
    params = {"sandbox_id": sandbox_id, "last_id": mark[1], "at": at}
    pairs = [(i, v) for i, v in await session.execute(_CLOSED_PRICED, params)]
    total = _priced_sum(pairs, at)
    # Kept only when what was priced is what the mark counts.
    if len({interval.id for interval, _ in pairs}) == mark[0]:
        kept[sandbox_id] = (mark, total)
        kept.move_to_end(sandbox_id)
        while len(kept) > CLOSED_TOTALS_KEPT:
            kept.popitem(last=False)
    return total


async def with_accrued(
    session: AsyncSession, actor: Actor, sandbox_id: str, at: datetime
) -> tuple[Sandbox, amounts.Measure]:
    """The sandbox if the actor may see it (else 404, as `access.load`), and everything it has
    cost so far, exact: the same sum as its statement's total, from the same
    `price_interval`. One statement while the closed intervals' total is kept; a second,
    for the closed intervals, when it is not."""
    team_id = access.visible_team(actor)
    params = {"sandbox_id": sandbox_id, "at": at}
    if team_id is not None:
        params["team_id"] = team_id
    rows = (await session.execute(_OPEN_WITH_MARK[team_id is not None], params)).all()
    sandbox = access.visible(actor, rows[0][0] if rows else None, sandbox_id)
    mark = (int(rows[0][3]), int(rows[0][4]), int(rows[0][5]), int(rows[0][6]))
    # No open interval: one row, with none; an interval no version was in force for (none
    # can be: a version from 1970 is seeded) prices nothing.
    open_pairs = [(row[1], row[2]) for row in rows if row[1] is not None and row[2] is not None]
    return sandbox, await _closed_total(session, sandbox.id, mark, at) + _priced_sum(open_pairs, at)
