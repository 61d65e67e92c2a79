"""From the dashboard's forms to the request bodies of the API, validated by the same schemas.

A form posts text; each field becomes the value the JSON API would be sent (an empty field is
null: unlimited, or the default), and the API's own schema (`TeamPatch`, `KeyCreate`,
`KeyRotate`, `PlanIn`, `PriceVersionIn`) validates it, so the dashboard accepts exactly what the
API accepts. Refusals come back as one message per field, for the form to show beside it.
Instants typed without an offset (a `datetime-local` field) are read in the accounting timezone,
as the usage report reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError

from app.admin.schemas import KeyCreate, KeyRotate, TeamPatch
from app.admission.schemas import PlanIn
from app.dashboard.auth import Form
from app.errors import Unprocessable
from app.models import Team
from app.tiers import TIERS
from app.usage import reports
from app.usage.schemas import PriceVersionIn

# The team fields the limits form edits, named as PATCH /v1/admin/teams/{team} names them.
LIMIT_FIELDS = (
    "max_concurrent",
    "max_concurrent_per_owner",
    "max_tier",
    "max_credits_per_hour",
    "guaranteed",
    "monthly_budget_credits",
    "budget_policy",
    "budget_soft_threshold",
    "budget_thresholds",
)


class FormInvalid(Exception):
    """The form's values, refused: a message per field ('' for the form as a whole)."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = dict(errors)


def _messages(exc: ValidationError) -> dict[str, str]:
    found: dict[str, str] = {}
    for error in exc.errors():
        loc = error.get("loc", ())
        name = str(loc[0]) if loc else ""
        found.setdefault(name, str(error["msg"]).removeprefix("Value error, "))
    return found


M = TypeVar("M", bound=BaseModel)


def _validated(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise FormInvalid(_messages(exc)) from None


def _instant(raw: str, name: str, timezone: ZoneInfo) -> Any:
    if not raw:
        return None
    try:
        return reports.parse_instant(raw, name, timezone)
    except Unprocessable as exc:
        raise FormInvalid({name: exc.detail}) from None


def _shown(value: Any) -> str:
    """A stored value as its form field shows it."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    if isinstance(value, list):
        return ", ".join(_shown(item) for item in value)
    return str(value)


def limit_values(team: Team) -> dict[str, str]:
    return {name: _shown(getattr(team, name)) for name in LIMIT_FIELDS}


def limit_inputs(form: Form) -> dict[str, str]:
    """What was typed, to show again on a refused form."""
    return {name: form.text(name) for name in LIMIT_FIELDS}


def _same(new: Any, old: Any) -> bool:
    if isinstance(new, list) and isinstance(old, list):
        return len(new) == len(old) and all(_same(a, b) for a, b in zip(new, old, strict=True))
    if isinstance(new, Decimal) or isinstance(old, Decimal):
        return new is not None and old is not None and Decimal(new) == Decimal(old)
    return bool(new == old)


def team_limits(form: Form, team: Team) -> TeamPatch:
    """The PATCH body of the limits form: only the fields that differ from the team's, so the
    audit row names what the edit changed."""
    data: dict[str, Any] = {}
    for name in LIMIT_FIELDS:
        raw = form.text(name)
        if name == "budget_thresholds":
            data[name] = [part.strip() for part in raw.split(",")] if raw else None
        else:
            data[name] = raw or None
    body = _validated(TeamPatch, data)
    values = body.model_dump()
    changed = {n: values[n] for n in LIMIT_FIELDS if not _same(values[n], getattr(team, n))}
    return TeamPatch.model_validate(changed)


def new_key(form: Form, timezone: ZoneInfo) -> KeyCreate:
    return _validated(
        KeyCreate,
        {
            "name": form.text("name"),
            "scopes": form.getlist("scopes"),
            "owner": form.text("owner") or None,
            "expires_at": _instant(form.text("expires_at"), "expires_at", timezone),
        },
    )


def rotation(form: Form) -> KeyRotate:
    return _validated(KeyRotate, {"overlap_seconds": form.text("overlap_seconds") or "3600"})


def plan(form: Form) -> PlanIn:
    chosen = form.text("plan")
    limit = form.text("limit") if chosen == "enterprise" else ""
    return _validated(PlanIn, {"plan": chosen, "limit": limit or None})


def price_version(form: Form, timezone: ZoneInfo) -> PriceVersionIn:
    return _validated(
        PriceVersionIn,
        {
            "effective_from": _instant(form.text("effective_from"), "effective_from", timezone),
            "credits_per_hour": {tier: form.text(f"rate_{tier}") for tier in TIERS},
            "credit_usd": form.text("credit_usd"),
        },
    )
