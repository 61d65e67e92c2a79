"""ASGI middleware: request ids, the request body limit, one access-log line per request, and
the HTTP latency histogram.

Both the log line and the histogram name the route by its template (`/v1/sandboxes/{sandbox_id}`),
never the raw path, so neither carries sandbox ids and the metric's label set stays bounded;
a request that matched no route is `unmatched`."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import context
from app.errors import PayloadTooLarge, problem_response
from app.metrics import HTTP_LATENCY

log = logging.getLogger("corral.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Anything else a client invents is one label value, so it cannot grow the series count.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _TooLarge(Exception):
    pass


class RequestContext:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        presented = headers.get("x-request-id", "")
        request_id = presented if _REQUEST_ID.match(presented) else uuid.uuid4().hex
        token = context.request_id.set(request_id)
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                raise _TooLarge
            received = 0

            async def bounded_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body_bytes:
                        raise _TooLarge
                return message

            await self.app(scope, bounded_receive, send_with_id)
        except _TooLarge:
            error = PayloadTooLarge(f"The request body exceeds {self.max_body_bytes} bytes.")
            response: Response
            if scope["path"] == "/csb" or scope["path"].startswith("/csb/"):
                # The SDK-compatible facade answers in the upstream's error shape.
                response = JSONResponse(
                    {"success": False, "errors": [error.detail]}, status_code=error.status
                )
            else:
                response = problem_response(error.status, kind=error.kind, detail=error.detail)
            await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route_template = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            HTTP_LATENCY.labels(
                method if method in _METHODS else "other", route_template, str(status["code"])
            ).observe(elapsed)
            log.info(
                "request",
                extra={
                    # On the record itself too, so a handler that formats later still has it.
                    "request_id": request_id,
                    "method": method,
                    "route": route_template,
                    "status": status["code"],
                    "duration_ms": round(elapsed * 1000, 2),
                    "key_id": _actor_key(scope),
                },
            )
            context.request_id.reset(token)


def _actor_key(scope: Scope) -> str | None:
    state = scope.get("state") or {}
    actor = state.get("actor") if isinstance(state, dict) else None
    return getattr(actor, "key_id", None)
