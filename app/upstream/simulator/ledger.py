"""The ground-truth billing ledger of one VM: what the upstream would charge.

Each running stretch has one tier. A stretch opens when the VM starts running and closes when it
hibernates (by call or by idleness), shuts down, is deleted, or changes tier (which opens the next
stretch at the same instant). Billing is per started minute, rounded up per stretch, and credits
are billed minutes x credits per hour / 60. Durations are computed in whole microseconds so the
rounding is exact; credits are also given as `credit_minutes` (billed minutes x credits per hour,
an integer) because /60 is not a finite decimal for most tiers — the `credits` string is that
value / 60 rounded to 6 places.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from app.upstream.simulator.tiers import TIER_SPECS, Tier

_MICROSECOND = timedelta(microseconds=1)
_MICROSECONDS_PER_MINUTE = 60_000_000
_CREDIT_PLACES = Decimal("0.000001")


def credits_from_credit_minutes(credit_minutes: int) -> str:
    return str((Decimal(credit_minutes) / 60).quantize(_CREDIT_PLACES, ROUND_HALF_EVEN))


@dataclass(slots=True)
class Stretch:
    tier: Tier
    started_at: datetime
    ended_at: datetime | None = None

    def duration(self, now: datetime) -> timedelta:
        return (self.ended_at or now) - self.started_at

    def billed_minutes(self, now: datetime) -> int:
        micros = self.duration(now) // _MICROSECOND
        return -(-micros // _MICROSECONDS_PER_MINUTE)

    def credit_minutes(self, now: datetime) -> int:
        return self.billed_minutes(now) * TIER_SPECS[self.tier].credits_per_hour


@dataclass(slots=True)
class Ledger:
    stretches: list[Stretch] = field(default_factory=list)

    @property
    def open_stretch(self) -> Stretch | None:
        if self.stretches and self.stretches[-1].ended_at is None:
            return self.stretches[-1]
        return None

    def open(self, tier: Tier, at: datetime) -> None:
        self.close(at)
        self.stretches.append(Stretch(tier=tier, started_at=at))

    def close(self, at: datetime) -> None:
        stretch = self.open_stretch
        if stretch is not None:
            stretch.ended_at = at
