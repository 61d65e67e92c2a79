"""Errors that Corral answers with, rendered as RFC 9457 `application/problem+json`.

Services raise `AppError` subclasses; one set of handlers (installed by `install_handlers`)
renders them, FastAPI's validation errors and Starlette's HTTP errors in the same shape, so a
client parses exactly one error format.

    AppError
    ├── BadRequest            400
    ├── Unauthorized          401
    ├── PaymentRequired       402  (budget exhausted)
    ├── Forbidden             403
    ├── NotFound              404
    ├── Conflict              409
    ├── PayloadTooLarge       413
    ├── Unprocessable         422
    ├── TooManyRequests       429  (always with Retry-After)
    ├── BadGateway            502  (the upstream failed; Retry-After)
    └── ServiceUnavailable    503  (the upstream is unreachable or overloaded; Retry-After)

Domain errors subclass these with their own `kind` and wording, so each is written once. Those
that several domains raise are defined here; one domain's own live in its module (on the right).

    BadRequest
    ├── InvalidCursor            invalid-cursor          a page cursor this API did not issue
    └── NulInUrl                 nul-character           a NUL (%00) in the path or the query
                                                         (app.middleware; in a body it is a
                                                         422, app.inputs)
    Unauthorized
    ├── BearerRejected           unauthorized            no usable bearer credential (always
    │                                                    with WWW-Authenticate: Bearer)
    ├── InvalidToken             invalid-browser-token   app.sessions.tokens
    └── MetricsClosed            metrics-closed          app.operations.endpoints (/metrics
                                                         without its token or an admin key)
    PaymentRequired
    └── BudgetExhausted          budget-exhausted        app.admission.refusals
    Forbidden
    ├── MissingScope             missing-scope           the key lacks the scope the route needs
    ├── WrongTeam                wrong-team              a team key named another team
    ├── TeamKeyRequired          team-key-required       an admin key where only a team key works
    ├── OwnerMismatch            owner-mismatch          an owner-bound key acting for another
    ├── OwnerBinding             owner-binding           an owner-bound key minting for another
    │                                                    user
    ├── TierNotAllowed           quota-exceeded          app.admission.refusals (max_tier)
    └── ForkSourceNotAllowed     fork-source-not-allowed app.templates.service (DESIGN §15)
    NotFound
    ├── SandboxNotFound          sandbox-not-found       a sandbox the caller may not see, or that
    │                                                    does not exist
    ├── TeamNotFound             not-found               a team that does not exist (or deleted)
    ├── KeyNotFound              not-found               app.identity.errors
    ├── ForkTemplateNotFound     fork-template-not-found app.templates.service
    ├── WebhookNotFound          webhook-not-found       app.webhooks.service (or deleted)
    └── DeliveryNotFound         delivery-not-found      app.webhooks.service
    Conflict
    ├── InvalidState             invalid-state           the sandbox's state forbids the verb now
    ├── SandboxBusy              sandbox-busy            another call on the sandbox is in flight
    ├── IdempotencyInFlight      idempotency-in-flight   app.idempotency
    ├── ReconcileBusy            reconcile-busy          app.reconcile.runs
    ├── ReservedTeam             reserved-team           app.identity.errors (no key for
    │                                                    `unassigned`)
    ├── DefaultTemplate          default-template        app.templates.service (the default
    │                                                    template cannot be disallowed)
    └── DeliveryNotRetryable     delivery-not-retryable  app.webhooks.service (cancelled, or
                                                         its endpoint deleted)
    Unprocessable
    ├── TeamRequired             team-required           an admin key did not name the team
    ├── UnknownScope             unknown-scope           app.identity.errors
    │   └── AdminScopeOnTeamKey  unknown-scope           app.identity.errors
    ├── BadIdempotencyKey        bad-idempotency-key     app.idempotency
    ├── IdempotencyKeyReused     idempotency-key-reused  app.idempotency
    ├── UnknownEventType         unknown-event-type      app.webhooks.service
    └── InvalidWebhookURL        invalid-webhook-url     app.webhooks.service (app.webhooks.urls)
    TooManyRequests
    ├── QuotaExceeded            quota-exceeded          app.admission.refusals (the 429 limits)
    └── (upstream-work-limited, session-rate-limited: app.metering, app.sessions.service raise
         TooManyRequests itself, naming the limit in `limit` and `scope`)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sqlalchemy_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import db

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# Seconds a client waits before retrying while the database is away (a restart takes a few).
DATABASE_RETRY_AFTER = 2
PROBLEM_BASE = "https://corral.dev/problems/"


class AppError(Exception):
    status: int = 500
    kind: str = "internal"

    def __init__(
        self,
        detail: str,
        *,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})
        if kind is not None:
            self.kind = kind


class BadRequest(AppError):
    status, kind = 400, "bad-request"


class Unauthorized(AppError):
    status, kind = 401, "unauthorized"


class PaymentRequired(AppError):
    status, kind = 402, "budget-exhausted"


class Forbidden(AppError):
    status, kind = 403, "forbidden"


class NotFound(AppError):
    status, kind = 404, "not-found"


class Conflict(AppError):
    status, kind = 409, "conflict"


class SandboxNotFound(NotFound):
    """Another team's (or another owner's) sandbox is indistinguishable from a missing one."""

    kind = "sandbox-not-found"

    def __init__(self, sandbox_id: str, *, detail: str | None = None) -> None:
        super().__init__(detail or f"Sandbox {sandbox_id!r} does not exist.")


class InvalidState(Conflict):
    kind = "invalid-state"

    def __init__(self, sandbox_id: str, state: str, *, cannot: str) -> None:
        super().__init__(
            f"Sandbox {sandbox_id!r} is {state}; it cannot {cannot} now.",
            extra={"state": state},
        )


class SandboxBusy(Conflict):
    """Calls on one sandbox run one at a time: two stops (or a stop and a resize) racing
    upstream would leave Corral to guess which one the upstream applied last."""

    kind = "sandbox-busy"

    def __init__(self, sandbox_id: str) -> None:
        super().__init__(
            f"Sandbox {sandbox_id!r} has another call in flight (or it just changed); retry "
            "once it settles.",
            headers={"Retry-After": "1"},
        )


class PayloadTooLarge(AppError):
    status, kind = 413, "payload-too-large"


class Unprocessable(AppError):
    status, kind = 422, "unprocessable"


class _Retryable(AppError):
    """An error the client may retry; it always carries Retry-After (whole seconds)."""

    def __init__(self, detail: str, *, retry_after: float = 1.0, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers.setdefault("Retry-After", str(max(1, math.ceil(retry_after))))


class TooManyRequests(_Retryable):
    status, kind = 429, "too-many-requests"


class BadGateway(_Retryable):
    status, kind = 502, "upstream-failed"


class ServiceUnavailable(_Retryable):
    status, kind = 503, "upstream-unavailable"


# --- domain errors that several domains raise (the tree in the module docstring) -----------


class InvalidCursor(BadRequest):
    kind = "invalid-cursor"

    def __init__(self) -> None:
        super().__init__("The cursor is not valid.")


class NulInUrl(BadRequest):
    """Postgres text cannot hold NUL, and no id, filter or cursor of this API has one."""

    kind = "nul-character"

    def __init__(self) -> None:
        super().__init__("The URL may not contain the NUL character (%00).")


class BearerRejected(Unauthorized):
    """The request has no usable bearer credential: absent, malformed, unknown, revoked."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class MissingScope(Forbidden):
    kind = "missing-scope"

    def __init__(self, scope: str) -> None:
        super().__init__(f"This key lacks the {scope!r} scope.")


class WrongTeam(Forbidden):
    """A team key named another team; `what` is what it may do, e.g. "reads its own team's
    usage"."""

    kind = "wrong-team"

    def __init__(self, what: str) -> None:
        super().__init__(f"A team key {what} only.")


class TeamKeyRequired(Forbidden):
    """`what` acts for one team, so an admin key (which has none) cannot use it."""

    kind = "team-key-required"

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} acts for one team: use a team key, not an admin key.")


class OwnerMismatch(Forbidden):
    kind = "owner-mismatch"

    def __init__(self) -> None:
        super().__init__("This key is bound to one owner and cannot act for another.")


class OwnerBinding(Forbidden):
    """An owner-bound key asked for sessions of another user than its owner."""

    kind = "owner-binding"

    def __init__(self) -> None:
        super().__init__("This key is bound to one owner and mints sessions only for that owner.")


class TeamNotFound(NotFound):
    def __init__(self, team_id: str) -> None:
        super().__init__(f"Team {team_id!r} does not exist.")


class TeamRequired(Unprocessable):
    """An admin key must name the team; `what` is what it names, e.g. "owning team"."""

    kind = "team-required"

    def __init__(self, what: str = "team") -> None:
        super().__init__(f"Admins must name the {what}.")


def problem_response(
    status: int,
    *,
    kind: str,
    detail: str,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    instance: str | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + kind,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(extra or {})
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Echo where and what, never the offending input: it may be large or hold secrets.
    return [
        {
            "loc": [str(part) for part in err.get("loc", ())],
            "msg": err.get("msg", ""),
            "type": err.get("type", ""),
        }
        for err in exc.errors()
    ]


def install_handlers(app: FastAPI) -> None:
    async def on_app_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        return problem_response(
            exc.status,
            kind=exc.kind,
            detail=exc.detail,
            extra=exc.extra,
            headers=exc.headers,
            instance=request.url.path,
        )

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(
            422,
            kind="validation",
            detail="The request is not valid.",
            extra={"errors": _validation_errors(exc)},
            instance=request.url.path,
        )

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if request.url.path == "/csb" or request.url.path.startswith("/csb/"):
            # No /csb route matched: answer in the upstream's shape, as the facade does.
            message = "Sandbox not found" if exc.status_code == 404 else str(exc.detail)
            return JSONResponse(
                {"success": False, "errors": [message]},
                status_code=exc.status_code,
                headers=exc.headers,
            )
        kinds = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized"}
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem_response(
            exc.status_code,
            kind=kinds.get(exc.status_code, "http-error"),
            detail=detail,
            headers=exc.headers,
            instance=request.url.path,
        )

    def database_away(request: Request) -> JSONResponse:
        return problem_response(
            503,
            kind="database-unavailable",
            detail="Corral's database is not reachable right now; retry shortly.",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
            instance=request.url.path,
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug or an unreachable database: still a problem body, never a stack trace; the
        # exception itself goes to the log (Starlette re-raises it after this answer).
        if db.unavailable(exc):
            return database_away(request)
        return problem_response(
            500,
            kind="internal",
            detail="Corral failed to handle this request; it has been logged.",
            instance=request.url.path,
        )

    async def on_driver_error(request: Request, exc: Exception) -> JSONResponse:
        # Handled here rather than by `on_unexpected`, so an absent database is one warning
        # line, not a traceback per request; anything else is still a 500, logged in full.
        if db.unavailable(exc):
            log.warning(
                "database unavailable",
                extra={"error": type(exc).__name__, "path": request.url.path},
            )
            return database_away(request)
        log.error("unexpected database error", exc_info=exc)
        return await on_unexpected(request, exc)

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    driver_errors: tuple[type[Exception], ...] = (sqlalchemy_exc.DBAPIError, *db.UNAVAILABLE)
    for driver_error in driver_errors:
        app.add_exception_handler(driver_error, on_driver_error)
    app.add_exception_handler(Exception, on_unexpected)
