"""The upstream's VM tiers, smallest first, with their list price in credits per hour."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

Tier = Literal["Pico", "Nano", "Micro", "Small", "Medium", "Large", "XLarge"]

TIERS: tuple[Tier, ...] = ("Pico", "Nano", "Micro", "Small", "Medium", "Large", "XLarge")

# The contract's price list; the price book (usage) may override it from a date on.
LIST_CREDITS_PER_HOUR: dict[str, Decimal] = {
    "Pico": Decimal(5),
    "Nano": Decimal(10),
    "Micro": Decimal(20),
    "Small": Decimal(40),
    "Medium": Decimal(80),
    "Large": Decimal(160),
    "XLarge": Decimal(320),
}


def rank(tier: str) -> int:
    """Position of a tier in size order; raises ValueError for an unknown tier."""
    return TIERS.index(tier)
