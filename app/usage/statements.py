"""A sandbox's cost statement: its intervals one by one, each priced by the price-book
version(s) in force while it ran.

An interval that ran across a price-book change gives one line per version, split at the
version's effective_from; billed minutes go to the line their start falls in (`amounts`), so
the lines of one interval add up to exactly its per-started-minute bill. The total is summed
exactly and rounded once, like a report's total.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import groupby

from sqlalchemy import DateTime, Select, and_, bindparam, func, or_, select
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
# consecutive run of versions `price_interval` needs, in the statement that loads the sandbox:
# one round trip for a sandbox's view, not three.
_IN_FORCE = and_(
    _VERSION.effective_from <= _INTERVAL_END,
    or_(_VERSIONS.c.until.is_(None), _VERSIONS.c.until > UsageInterval.started_at),
)


def _with_accrued(in_team: bool) -> Select[Sandbox, UsageInterval, PriceBook]:
    query = (
        select(Sandbox, UsageInterval, _VERSION)
        .outerjoin(UsageInterval, UsageInterval.sandbox_id == Sandbox.id)
        .outerjoin(_VERSION, _IN_FORCE)
        .where(Sandbox.id == bindparam("sandbox_id"))
        .order_by(UsageInterval.started_at, UsageInterval.id, _VERSION.effective_from)
    )
    return query.where(Sandbox.team_id == bindparam("team_id")) if in_team else query


# Built once, by whether the lookup is scoped to a team (see `sandboxes.repository._lookups`).
_WITH_ACCRUED = {in_team: _with_accrued(in_team) for in_team in (False, True)}


async def with_accrued(
    session: AsyncSession, actor: Actor, sandbox_id: str, at: datetime
) -> tuple[Sandbox, amounts.Measure]:
    """The sandbox if the actor may see it (else 404, as `access.load`), and everything it has
    cost so far, exact: the same sum as its statement's total, from the same
    `price_interval`."""
    team_id = access.visible_team(actor)
    params = {"sandbox_id": sandbox_id, "at": at}
    if team_id is not None:
        params["team_id"] = team_id
    rows = (await session.execute(_WITH_ACCRUED[team_id is not None], params)).all()
    sandbox = access.visible(actor, rows[0][0] if rows else None, sandbox_id)
    total = amounts.ZERO
    # A sandbox that never ran has one row, with no interval; an interval no version was in
    # force for (none can be: a version from 1970 is seeded) prices nothing.
    priced = [(i, version) for _, i, version in rows if i is not None and version is not None]
    for interval, pairs in groupby(priced, key=lambda pair: pair[0]):
        for line in price_interval(interval, [version for _, version in pairs], at):
            total = total + line.measure
    return sandbox, total
