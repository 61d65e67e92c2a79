"""Admission's refusals: one class per kind, each naming the limit that refused.

Every refusal's body carries `limit`, `scope` (team, owner or org), `current` and `maximum`,
decimals shown without the column's trailing zeros; the SDK facade maps exactly these onto the
upstream's own error shape (`app.compat.responses`).

    TierNotAllowed    403  quota-exceeded    max_tier
    BudgetExhausted   402  budget-exhausted  monthly_budget
    QuotaExceeded     429  quota-exceeded    max_concurrent_per_owner, max_concurrent,
                                             max_credits_per_hour, org_plan, guaranteed
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from app.errors import Forbidden, PaymentRequired, TooManyRequests

# How long a refused caller should wait before asking again: capacity frees as VMs stop.
RETRY_AFTER_SECONDS = 5


def plain(value: Decimal) -> Decimal:
    """A decimal without the column's trailing zeros (300.0000 → 300)."""
    normal = value.normalize()
    return normal.quantize(Decimal(1)) if normal == normal.to_integral() else normal


def _limit(limit: str, scope: str, current: object, maximum: object) -> dict[str, Any]:
    def shown(value: object) -> object:
        return str(plain(value)) if isinstance(value, Decimal) else value

    return {"limit": limit, "scope": scope, "current": shown(current), "maximum": shown(maximum)}


class TierNotAllowed(Forbidden):
    kind = "quota-exceeded"

    def __init__(self, team_id: str, tier: str, max_tier: str) -> None:
        super().__init__(
            f"Tier {tier} is above team {team_id}'s largest tier, {max_tier}.",
            extra=_limit("max_tier", "team", tier, max_tier),
        )


class BudgetExhausted(PaymentRequired):
    kind = "budget-exhausted"

    def __init__(self, team_id: str, spent: Decimal, budget: Decimal) -> None:
        super().__init__(
            f"Team {team_id} has spent its monthly budget.",
            extra=_limit("monthly_budget", "team", spent, budget),
        )


class QuotaExceeded(TooManyRequests):
    """A concurrency or burn-rate limit is full now; capacity frees as sandboxes stop, so the
    caller may retry (Retry-After)."""

    kind = "quota-exceeded"

    def __init__(
        self, detail: str, *, limit: str, scope: str, current: object, maximum: object
    ) -> None:
        super().__init__(
            detail,
            retry_after=RETRY_AFTER_SECONDS,
            extra=_limit(limit, scope, current, maximum),
        )
