"""Each domain error renders the problem body its call sites wrote by hand before: the same
status, type, detail, extra fields and headers."""

from __future__ import annotations

import json
from decimal import Decimal
from http import HTTPStatus
from typing import Any

import pytest

from app.admission.refusals import BudgetExhausted, QuotaExceeded, TierNotAllowed
from app.errors import (
    AppError,
    BearerRejected,
    InvalidCursor,
    MissingScope,
    OwnerBinding,
    OwnerMismatch,
    SandboxNotFound,
    TeamKeyRequired,
    TeamNotFound,
    TeamRequired,
    WrongTeam,
    problem_response,
)
from app.idempotency import BadIdempotencyKey, IdempotencyInFlight, IdempotencyKeyReused
from app.identity.errors import AdminScopeOnTeamKey, KeyNotFound, UnknownScope
from app.reconcile.runs import ReconcileBusy

BEARER = {"www-authenticate": "Bearer"}
CASES: list[tuple[AppError, int, str, str, dict[str, Any], dict[str, str]]] = [
    (InvalidCursor(), 400, "invalid-cursor", "The cursor is not valid.", {}, {}),
    (BearerRejected("The API key is not valid."), 401, "unauthorized",
     "The API key is not valid.", {}, BEARER),
    (MissingScope("usage:read"), 403, "missing-scope",
     "This key lacks the 'usage:read' scope.", {}, {}),
    (WrongTeam("reads its own team's usage"), 403, "wrong-team",
     "A team key reads its own team's usage only.", {}, {}),
    (WrongTeam("creates sandboxes for its own team"), 403, "wrong-team",
     "A team key creates sandboxes for its own team only.", {}, {}),
    (TeamKeyRequired("The SDK facade"), 403, "team-key-required",
     "The SDK facade acts for one team: use a team key, not an admin key.", {}, {}),
    (OwnerMismatch(), 403, "owner-mismatch",
     "This key is bound to one owner and cannot act for another.", {}, {}),
    (OwnerBinding(), 403, "owner-binding",
     "This key is bound to one owner and mints sessions only for that owner.", {}, {}),
    (TeamNotFound("team-a"), 404, "not-found", "Team 'team-a' does not exist.", {}, {}),
    (SandboxNotFound("sbx_1"), 404, "sandbox-not-found", "Sandbox 'sbx_1' does not exist.",
     {}, {}),
    (TeamRequired(), 422, "team-required", "Admins must name the team.", {}, {}),
    (TeamRequired("owning team"), 422, "team-required", "Admins must name the owning team.",
     {}, {}),
    (KeyNotFound("k1"), 404, "not-found", "Key 'k1' does not exist.", {}, {}),
    (KeyNotFound("k1", or_revoked=True), 404, "not-found",
     "Key 'k1' does not exist or is revoked.", {}, {}),
    (UnknownScope({"b", "a"}), 422, "unknown-scope", "Unknown scopes: ['a', 'b'].", {}, {}),
    (AdminScopeOnTeamKey(), 422, "unknown-scope", "Team keys cannot hold the admin scope.",
     {}, {}),
    (BadIdempotencyKey(), 422, "bad-idempotency-key",
     "Idempotency-Key must be 1 to 255 characters.", {}, {}),
    (IdempotencyKeyReused(), 422, "idempotency-key-reused",
     "This Idempotency-Key was used with a different request.", {}, {}),
    (IdempotencyInFlight(), 409, "idempotency-in-flight",
     "A request with this Idempotency-Key is still in progress.", {}, {"retry-after": "1"}),
    (ReconcileBusy(), 409, "reconcile-busy",
     "A reconcile period is already running; try again shortly.", {}, {}),
    (TierNotAllowed("team-a", "Large", "Small"), 403, "quota-exceeded",
     "Tier Large is above team team-a's largest tier, Small.",
     {"limit": "max_tier", "scope": "team", "current": "Large", "maximum": "Small"}, {}),
    (BudgetExhausted("team-a", Decimal("12.500000"), Decimal("10.0000")), 402,
     "budget-exhausted", "Team team-a has spent its monthly budget.",
     {"limit": "monthly_budget", "scope": "team", "current": "12.5", "maximum": "10"}, {}),
    (QuotaExceeded("Team team-a already runs 2 sandboxes.", limit="max_concurrent",
                   scope="team", current=2, maximum=2), 429, "quota-exceeded",
     "Team team-a already runs 2 sandboxes.",
     {"limit": "max_concurrent", "scope": "team", "current": 2, "maximum": 2},
     {"retry-after": "5"}),
]  # fmt: skip


@pytest.mark.parametrize(("error", "status", "kind", "detail", "extra", "headers"), CASES)
def test_renders_the_problem_body_its_call_sites_wrote(
    error: AppError,
    status: int,
    kind: str,
    detail: str,
    extra: dict[str, Any],
    headers: dict[str, str],
) -> None:
    response = problem_response(
        error.status, kind=error.kind, detail=error.detail, extra=error.extra, headers=error.headers
    )
    assert response.status_code == status
    assert json.loads(bytes(response.body)) == {
        "type": f"https://corral.dev/problems/{kind}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    sent = {name: value for name, value in response.headers.items() if name in headers}
    assert sent == headers
