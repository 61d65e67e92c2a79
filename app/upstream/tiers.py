"""Which tier a VM the upstream lists runs at: `/vm/running` reports specs and a credit basis,
not a tier name (CONTRACT §4)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from app.tiers import LIST_CREDITS_PER_HOUR
from app.upstream.schemas import RunningVM

_TIER_BY_CREDITS: dict[Decimal, str] = {rate: tier for tier, rate in LIST_CREDITS_PER_HOUR.items()}
# CPU cores and memory (GiB) per tier, as the upstream's `/vm/running` reports them (CONTRACT §4).
_TIER_BY_SPECS: dict[tuple[int, int], str] = {
    (1, 2): "Pico",
    (2, 4): "Nano",
    (4, 8): "Micro",
    (8, 16): "Small",
    (16, 32): "Medium",
    (32, 64): "Large",
    (64, 128): "XLarge",
}


def tier_of(vm: RunningVM) -> str | None:
    """The tier a `/vm/running` row describes: by its specs, else by its credit basis."""
    if vm.specs is not None and vm.specs.cpu is not None and vm.specs.memory is not None:
        tier = _TIER_BY_SPECS.get((vm.specs.cpu, vm.specs.memory))
        if tier is not None:
            return tier
    if vm.credit_basis is not None:
        try:
            return _TIER_BY_CREDITS.get(Decimal(vm.credit_basis.strip()))
        except InvalidOperation:
            return None
    return None
