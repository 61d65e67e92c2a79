"""Money arithmetic for usage: exact seconds, billed minutes, credits and USD, all Decimal.

The upstream bills per started minute of each interval, so billed minutes round up per interval."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

SECONDS_PER_HOUR = Decimal(3600)
MINUTES_PER_HOUR = Decimal(60)


@dataclass(frozen=True)
class Amount:
    seconds: Decimal
    billed_minutes: int
    credits: Decimal
    usd: Decimal

    def __add__(self, other: Amount) -> Amount:
        return Amount(
            self.seconds + other.seconds,
            self.billed_minutes + other.billed_minutes,
            self.credits + other.credits,
            self.usd + other.usd,
        )


ZERO = Amount(Decimal(0), 0, Decimal(0), Decimal(0))


def exact_seconds(started_at: datetime, ended_at: datetime) -> Decimal:
    delta = ended_at - started_at
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return max(Decimal(0), Decimal(micros) / Decimal(1_000_000))


def amount(
    started_at: datetime, ended_at: datetime, credits_per_hour: Decimal, credit_usd: Decimal
) -> Amount:
    seconds = exact_seconds(started_at, ended_at)
    minutes = math.ceil(seconds / 60)
    credits = Decimal(minutes) * credits_per_hour / MINUTES_PER_HOUR
    return Amount(seconds, minutes, credits, credits * credit_usd)
