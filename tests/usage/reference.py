"""A brute-force usage calculator the SQL reports are held to.

It shares nothing with the production code but the rounding rule's definition: it walks every
billed minute of every interval one by one (minute k starts at s + 60k s; there are
ceil(duration / 60 s) of them), finds the price version and local day of that start, and cuts
the interval's seconds at every window, day and price boundary by sorting the cut points.
Money is summed as Fractions and rounded half-up to 6 places once per group.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Version:
    id: int
    effective_from: datetime
    rates: dict[str, Decimal]
    credit_usd: Decimal


@dataclass(frozen=True)
class Interval:
    id: int
    sandbox_id: str
    team_id: str
    owner: str | None
    tier: str
    started_at: datetime
    ended_at: datetime | None
    price_book_id: int
    credits_per_hour: Decimal


def version_at(versions: list[Version], t: datetime) -> Version:
    return [v for v in sorted(versions, key=lambda v: v.effective_from) if v.effective_from <= t][
        -1
    ]


def rate_of(interval: Interval, version: Version) -> Decimal:
    if version.id == interval.price_book_id:
        return interval.credits_per_hour
    return version.rates[interval.tier]


def local_day(t: datetime, tz: ZoneInfo) -> date:
    return t.astimezone(tz).date()


def round6(value: Fraction) -> Decimal:
    scaled = value * 10**6
    whole = (scaled.numerator * 2 + scaled.denominator) // (2 * scaled.denominator)
    return Decimal(whole).scaleb(-6).quantize(Decimal("0.000001"))


@dataclass
class Sums:
    seconds: Fraction = Fraction(0)
    minutes: int = 0
    credit_minutes: Fraction = Fraction(0)
    usd_minutes: Fraction = Fraction(0)
    touched: bool = False

    def figures(self) -> dict[str, Any]:
        return {
            "seconds": Decimal(self.seconds.numerator) / Decimal(self.seconds.denominator),
            "billed_minutes": self.minutes,
            "credits": round6(self.credit_minutes / 60),
            "usd": round6(self.usd_minutes / 60),
        }


def key_of(interval: Interval, group_by: list[str], day: date) -> tuple[Any, ...]:
    values = {
        "team": interval.team_id,
        "owner": interval.owner,
        "tier": interval.tier,
        "sandbox": interval.sandbox_id,
        "day": day,
    }
    return tuple(values[k] for k in group_by)


def billed_minutes(
    interval: Interval, versions: list[Version], at: datetime
) -> list[tuple[datetime, Fraction, Fraction]]:
    """Every billed minute of the interval: (start, credits/h, USD per credit)."""
    s = interval.started_at
    e = max(s, interval.ended_at if interval.ended_at is not None else at)
    minutes = []
    k = 0
    while s + k * MINUTE < e:
        minute_start = s + k * MINUTE
        version = version_at(versions, minute_start)
        minutes.append(
            (minute_start, Fraction(rate_of(interval, version)), Fraction(version.credit_usd))
        )
        k += 1
    return minutes


def report(
    intervals: list[Interval],
    versions: list[Version],
    *,
    start: datetime,
    end: datetime,
    at: datetime,
    group_by: list[str],
    timezone: str,
    team_id: str | None = None,
    minutes_of: dict[int, list[tuple[datetime, Fraction, Fraction]]] | None = None,
) -> dict[tuple[Any, ...], dict[str, Any]]:
    tz = ZoneInfo(timezone)
    minutes_of = minutes_of if minutes_of is not None else {}
    groups: dict[tuple[Any, ...], Sums] = defaultdict(Sums)
    for interval in intervals:
        if team_id is not None and interval.team_id != team_id:
            continue
        s = interval.started_at
        e = max(s, interval.ended_at if interval.ended_at is not None else at)
        # Billed minutes, one at a time.
        if interval.id not in minutes_of:
            minutes_of[interval.id] = billed_minutes(interval, versions, at)
        for minute_start, rate, credit_usd in minutes_of[interval.id]:
            if not (start <= minute_start < end):
                continue
            sums = groups[key_of(interval, group_by, local_day(minute_start, tz))]
            sums.minutes += 1
            sums.credit_minutes += rate
            sums.usd_minutes += rate * credit_usd
        # Seconds: cut [max(s, start), min(e, end)) at every version change and local midnight.
        lo, hi = max(s, start), min(e, end)
        if lo >= hi:
            continue
        cuts = {lo, hi}
        cuts.update(v.effective_from for v in versions if lo < v.effective_from < hi)
        day = datetime.combine(local_day(lo, tz), datetime.min.time(), tzinfo=tz)
        while day < hi:
            if lo < day:
                cuts.add(day)
            nxt = day.date() + timedelta(days=1)
            day = datetime.combine(nxt, datetime.min.time(), tzinfo=tz)
        points = sorted(cuts)
        for a, b in itertools.pairwise(points):
            sums = groups[key_of(interval, group_by, local_day(a, tz))]
            delta = b - a
            sums.seconds += Fraction(
                (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds, 1_000_000
            )
            sums.touched = True
    return {key: sums.figures() for key, sums in groups.items() if sums.touched}
