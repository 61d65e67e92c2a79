"""ASGI middleware: request ids, the request body limit, the refusal of a NUL in the URL, one
access-log line per request, and the HTTP latency histogram.

The body limit holds however the body arrives: a declared `Content-Length` above it is refused
before the app runs; a chunked body is counted as the app reads it, and once it passes the limit
whatever the app answers (FastAPI turns the failed read into a 400, the facade into its own
error) is dropped for the 413, in the facade's upstream shape under /csb.

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

from app import context, inputs
from app.errors import AppError, NulInUrl, PayloadTooLarge, problem_response
from app.metrics import HTTP_LATENCY

log = logging.getLogger("corral.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Anything else a client invents is one label value, so it cannot grow the series count.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _TooLarge(Exception):
    pass


class _Refused(Exception):
    """The request is refused before the app sees it."""

    def __init__(self, error: AppError) -> None:
        super().__init__(error.detail)
        self.error = error


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
        # Set once a chunked body passed the limit: from then on the app's answer is not sent.
        overflowed = False
        responded = False

        async def send_with_id(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
                status["code"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        async def send_from_app(message: Message) -> None:
            if not overflowed:
                await send_with_id(message)

        try:
            if inputs.has_nul(scope["path"], scope.get("query_string", b"")):
                raise _Refused(NulInUrl())
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                raise _TooLarge
            received = 0

            async def bounded_receive() -> Message:
                nonlocal received, overflowed
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body_bytes:
                        overflowed = True
                        raise _TooLarge
                return message

            try:
                await self.app(scope, bounded_receive, send_from_app)
            except Exception:
                # The app let the failed read through (or failed on what it made of it).
                if not overflowed:
                    raise
            if overflowed and not responded:
                raise _TooLarge
        except _TooLarge:
            await self._refuse(
                PayloadTooLarge(f"The request body exceeds {self.max_body_bytes} bytes."),
                scope,
                receive,
                send_with_id,
            )
        except _Refused as refused:
            await self._refuse(refused.error, scope, receive, send_with_id)
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

    @staticmethod
    async def _refuse(error: AppError, scope: Scope, receive: Receive, send: Send) -> None:
        response: Response
        if scope["path"] == "/csb" or scope["path"].startswith("/csb/"):
            # The SDK-compatible facade answers in the upstream's error shape.
            response = JSONResponse(
                {"success": False, "errors": [error.detail]}, status_code=error.status
            )
        else:
            response = problem_response(error.status, kind=error.kind, detail=error.detail)
        await response(scope, receive, send)


def _actor_key(scope: Scope) -> str | None:
    state = scope.get("state") or {}
    actor = state.get("actor") if isinstance(state, dict) else None
    return getattr(actor, "key_id", None)
