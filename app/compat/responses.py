"""How the facade answers: the upstream's envelope and error shape, never problem+json.

Success: `{"success": true, "errors": [], "data": {...}}` (the SDK returns `data` and treats a
missing or empty-falsy `data` as an error, so even empty successes carry `"data": {}`).
Failure: `{"success": false, "errors": ["<message>", {...details}]}`; the SDK shows
`errors[0]`, so the first item is always a readable string.

Refusals (CONTRACT §1.2-1.3, SDK `RateLimitError.fromResponse`): on a 429 the SDK builds its
message from the first `x-csb-*` header family whose `remaining` is <= 0, and from `errors[0]`
only when none is. The facade's `x-csb-vms-used`/`x-csb-vms-remaining` carry what the upstream's
carry: the organisation's concurrent VMs (live in Corral) and the org plan's headroom. So a
refusal by one of Corral's own limits (team, owner, burn rate, guaranteed slots of other teams)
arrives while the org still has headroom, and the SDK's error reads `errors[0]`, which names
the Corral limit, its scope and its values; a refusal because the org plan itself is full has
`remaining: 0`, and the SDK says so in its own words ("0 of N concurrently running vms
remaining"). 402 (budget) and 403 (tier) refusals carry the same `errors` body.

Every error inside a /csb route is rendered here by `CompatRoute`; requests that match no /csb
route are rendered the same way by `app.errors` (it checks the path prefix).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import context
from app.admission import service as admission
from app.db import reading
from app.errors import AppError
from app.runtime import Runtime

log = logging.getLogger("corral.compat")

PREFIX = "/csb"
# Corral's refusal kinds that the upstream would answer with another status.
_STATUS_FOR_KIND = {"template-not-found": 404}


def ok(data: dict[str, Any], status_code: int = 200) -> JSONResponse:
    return JSONResponse({"success": True, "errors": [], "data": data}, status_code=status_code)


def failure(
    status_code: int,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    errors: list[Any] = [message]
    if details:
        errors.append(details)
    return JSONResponse(
        {"success": False, "errors": errors}, status_code=status_code, headers=headers
    )


def _refusal_message(exc: AppError) -> str:
    extra = exc.extra
    return (
        f"{exc.detail} Corral limit {extra['limit']} ({extra['scope']}): "
        f"{extra['current']} in use, maximum {extra['maximum']}."
    )


async def _vms_headers(rt: Runtime, team_id: str | None) -> dict[str, str]:
    """The org's concurrent VMs, the way the upstream reports its workspace's."""
    if team_id is None:
        return {}
    async with reading(rt.sessions) as session:
        plan = await admission.load_plan(session, lock=False)
        used = await admission.usage(session, plan, team_id, None)
    remaining = max(used.effective_limit - used.org_live, 0)
    return {"x-csb-vms-used": str(used.org_live), "x-csb-vms-remaining": str(remaining)}


async def render_app_error(request: Request, exc: AppError) -> JSONResponse:
    status_code = _STATUS_FOR_KIND.get(exc.kind, exc.status)
    headers = dict(exc.headers)
    if all(field in exc.extra for field in ("limit", "scope", "current", "maximum")):
        # An admission refusal (429, 402 or 403).
        if status_code == 429:
            actor = getattr(request.state, "actor", None)
            rt: Runtime = request.app.state.runtime
            headers.update(await _vms_headers(rt, getattr(actor, "team_id", None)))
        details = {k: exc.extra[k] for k in ("limit", "scope", "current", "maximum")}
        return failure(status_code, _refusal_message(exc), details=details, headers=headers)
    if status_code == 404:
        # What the upstream says, and what the SDK prints for any 404.
        return failure(404, "Sandbox not found", headers=headers)
    return failure(status_code, exc.detail, headers=headers)


def render_validation_error(exc: RequestValidationError) -> JSONResponse:
    # Where and what, never the offending input: it may be large or hold secrets.
    problems = [
        f"{'.'.join(str(part) for part in err.get('loc', ()))}: {err.get('msg', '')}"
        for err in exc.errors()
    ]
    return failure(422, "The request is not valid: " + "; ".join(problems))


class CompatRoute(APIRoute):
    """A route whose errors (including authentication and validation, which FastAPI raises
    inside the handler) come back in the upstream's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except AppError as exc:
                return await render_app_error(request, exc)
            except RequestValidationError as exc:
                return render_validation_error(exc)
            except StarletteHTTPException as exc:
                # FastAPI's own refusals, such as a body it could not read (one cut off at
                # the size limit, which `RequestContext` answers with its 413): no traceback.
                return failure(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
            except Exception:
                # A bare 500 page would crash the SDK (it reads `errors[0]`); answer in shape.
                log.exception("unhandled error in %s %s", request.method, self.path)
                return failure(
                    500, f"Internal error (request id {context.request_id.get() or 'unknown'})."
                )

        return handle
