"""The VM tiers the upstream sells, with the specs and prices of CONTRACT §4.

The specs are the SDK's column (CPU cores, memory in GiB, storage in GB); the docs' Pico row
disagrees with the SDK, and the SDK is what clients parse, so it wins here.
"""

from dataclasses import dataclass
from enum import StrEnum


class Tier(StrEnum):
    PICO = "Pico"
    NANO = "Nano"
    MICRO = "Micro"
    SMALL = "Small"
    MEDIUM = "Medium"
    LARGE = "Large"
    XLARGE = "XLarge"


@dataclass(frozen=True, slots=True)
class TierSpec:
    credits_per_hour: int
    cpu: int
    memory_gib: int
    storage_gb: int


TIER_SPECS: dict[Tier, TierSpec] = {
    Tier.PICO: TierSpec(5, 1, 2, 20),
    Tier.NANO: TierSpec(10, 2, 4, 20),
    Tier.MICRO: TierSpec(20, 4, 8, 20),
    Tier.SMALL: TierSpec(40, 8, 16, 30),
    Tier.MEDIUM: TierSpec(80, 16, 32, 40),
    Tier.LARGE: TierSpec(160, 32, 64, 50),
    Tier.XLARGE: TierSpec(320, 64, 128, 50),
}
