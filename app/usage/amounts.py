"""Money arithmetic for usage: exact seconds, billed minutes, credits and USD. No float anywhere.

The billing rule (the upstream bills each run per *started* minute):

- An interval [s, e) is billed N = ceil((e - s) / 60 s) minutes; minute k starts at s + 60k.
  An open interval is measured up to "now", so its running minute is already counted.
- Each billed minute belongs to the instant it **starts**: a report window, a day, a month or
  a price-book version gets the minutes whose start falls inside it. So the billed minutes of a
  clipped interval [a, b) are F(b) - F(a), with F(t) = ceil((clamp(t, s, e) - s) / 60 s), and
  any partition of time (days of a month, months of a year) sums to exactly the interval's N.
  Clipping never invents a minute and never loses one.
- A minute is priced at the rate in force when it starts: rate * 1/60 h, in the price-book
  version whose [effective_from, next effective_from) contains the minute's start.
- Seconds are clipped exactly (to the microsecond, as Postgres stores them).

Exact sums are kept as "credit-minutes" (Σ minutes * credits/h) and "USD-minutes"
(Σ minutes * credits/h * USD/credit); both are exact decimals. Dividing by 60 is the only
inexact step, so it happens once per reported figure: credits and USD are the exact quotient
rounded half-up to 6 decimal places (`MONEY_PLACES`). The database computes the same figures
the same way (see `repository.usage_rows`), and the property tests hold both to a brute force.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

MONEY_PLACES = 6
SECONDS_PLACES = 6
MICROS_PER_MINUTE = 60_000_000
_MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
_SECONDS_QUANTUM = Decimal(1).scaleb(-SECONDS_PLACES)


def micros(started_at: datetime, ended_at: datetime) -> int:
    """Whole microseconds from one instant to another (negative if backwards)."""
    delta = ended_at - started_at
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def exact_seconds(started_at: datetime, ended_at: datetime) -> Decimal:
    return max(Decimal(0), Decimal(micros(started_at, ended_at)).scaleb(-6))


def minutes_started_before(started_at: datetime, ended_at: datetime, t: datetime) -> int:
    """F(t): how many billed minutes of the interval [started_at, ended_at) start before t."""
    clamped = min(max(t, started_at), ended_at)
    elapsed = micros(started_at, clamped)
    return -(-elapsed // MICROS_PER_MINUTE)


def divide_money(numerator: Decimal, divisor: int = 60) -> Decimal:
    """numerator / divisor, rounded half-up (away from zero) to MONEY_PLACES, computed exactly."""
    exact = Fraction(numerator) / divisor * 10**MONEY_PLACES
    whole = (abs(exact.numerator) * 2 + exact.denominator) // (2 * exact.denominator)
    return (Decimal(whole if exact >= 0 else -whole) * _MONEY_QUANTUM).quantize(_MONEY_QUANTUM)


def seconds_figure(seconds: Decimal) -> Decimal:
    return seconds.quantize(_SECONDS_QUANTUM)


@dataclass(frozen=True)
class Measure:
    """Exact usage sums; `credits` and `usd` are the rounded figures a report shows."""

    seconds: Decimal = Decimal(0)
    billed_minutes: int = 0
    credit_minutes: Decimal = Decimal(0)
    usd_minutes: Decimal = Decimal(0)

    def __add__(self, other: Measure) -> Measure:
        return Measure(
            self.seconds + other.seconds,
            self.billed_minutes + other.billed_minutes,
            self.credit_minutes + other.credit_minutes,
            self.usd_minutes + other.usd_minutes,
        )

    @property
    def credits(self) -> Decimal:
        return divide_money(self.credit_minutes)

    @property
    def usd(self) -> Decimal:
        return divide_money(self.usd_minutes)


ZERO = Measure()


def piece(
    started_at: datetime,
    ended_at: datetime,
    a: datetime,
    b: datetime,
    credits_per_hour: Decimal,
    credit_usd: Decimal,
) -> Measure:
    """The share of the interval [started_at, ended_at) that lies in [a, b), at one rate."""
    lo, hi = max(a, started_at), min(b, ended_at)
    if lo >= hi:
        return ZERO
    minutes = minutes_started_before(started_at, ended_at, hi) - minutes_started_before(
        started_at, ended_at, lo
    )
    return Measure(
        seconds=exact_seconds(lo, hi),
        billed_minutes=minutes,
        credit_minutes=minutes * credits_per_hour,
        usd_minutes=minutes * credits_per_hour * credit_usd,
    )
