"""Sending one upstream call: attempts, retries, deadline, metrics, and error mapping.

`Requester` owns the single ``httpx.AsyncClient``. A call is a loop of attempts:

- each attempt is bounded by the per-attempt timeout and by what is left of the call's deadline;
- a non-2xx answer becomes an `app.upstream.errors` exception, a 2xx goes through ``parse``;
- only calls made with ``retry=True`` are repeated, only on `UpstreamUnavailable`, after an
  exponential backoff with full jitter (at least the server's ``Retry-After``), and never when the
  sleep would outlive the deadline;
- the observer hears about every attempt, including ones that got no response;
- when the attempt that ended the call was sent is kept for the caller
  (`answered_attempt_sent_at`): a retry that did the work did it then, not when the first
  attempt was sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import datetime
from typing import Any, TypeVar

import aiohttp
import httpx

from app import clock
from app.upstream.errors import UpstreamRejected, UpstreamTimeout, UpstreamUnavailable
from app.upstream.ratelimit import RateLimits, parse_rate_limits
from app.upstream.responses import Parse, error_for_response

__all__ = ["NO_BODY", "Observer", "Requester", "answered_attempt_sent_at"]

logger = logging.getLogger("app.upstream.client")

Observer = Callable[[str, int | None, float], None]
"""Called after every attempt with (operation, HTTP status or None, seconds taken)."""

NO_BODY: Any = object()
"""Marks a request sent without any body (the SDK sends none to hibernate and shutdown)."""

_T = TypeVar("_T")


# Per task: a call is awaited in the task that dates what it did (app.sandboxes.lifecycle).
_ANSWERED_SENT_AT: ContextVar[datetime | None] = ContextVar("upstream_answered_at", default=None)


def answered_attempt_sent_at() -> datetime | None:
    """When the attempt that ended the last upstream call made in this task was sent, on
    Corral's clock (None before any call)."""
    return _ANSWERED_SENT_AT.get()


# Failures that happen before any byte of the request can have reached the upstream.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
# The same for aiohttp, which carries real calls: refused, DNS, TLS handshake, the proxy
# unreachable (ClientConnectorError); no connection within the pool or connect timeout
# (ConnectionTimeoutError). Everything else it raises comes once the request may be sent.
_AIOHTTP_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


class Requester:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        timeout: float,
        deadline: float,
        max_attempts: int,
        backoff_base: float,
        backoff_max: float,
        observer: Observer | None,
    ) -> None:
        self.http = http
        self.timeout = timeout
        self.deadline = deadline
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.observer = observer
        # Seams for tests: the retry loop's sleep and clock.
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.clock: Callable[[], float] = time.monotonic
        self.last_rate_limits: RateLimits | None = None

    async def call(
        self,
        operation: str,
        method: str,
        url: str,
        parse: Parse[_T],
        *,
        body: Any = NO_BODY,
        params: dict[str, str | int] | None = None,
        retry: bool = False,
    ) -> _T:
        deadline_at = self.clock() + self.deadline
        attempt = 0
        maybe_applied = False
        while True:
            attempt += 1
            _ANSWERED_SENT_AT.set(clock.now())
            try:
                response = await self._attempt(operation, method, url, body, params, deadline_at)
                rate_limits = parse_rate_limits(response.headers)
                if rate_limits is not None:
                    self.last_rate_limits = rate_limits
                if not response.is_success:
                    raise error_for_response(operation, response, rate_limits)
                return parse(operation, response, rate_limits)
            except UpstreamRejected as exc:
                # A refusal of a retry (a 404 for a stop, say) may only mean that an earlier
                # attempt did the work: the caller is told so.
                exc.earlier_maybe_applied = maybe_applied
                raise
            except UpstreamUnavailable as exc:
                # If any attempt may have acted, the call as a whole may have: an earlier read
                # timeout is not undone by a later 503.
                maybe_applied = maybe_applied or exc.maybe_applied
                exc.maybe_applied = maybe_applied
                if not retry or attempt >= self.max_attempts:
                    raise
                delay = self._backoff(attempt, exc.retry_after)
                if self.clock() + delay >= deadline_at:
                    # Sleeping would outlive the deadline: the last real error says more than a
                    # synthetic timeout would.
                    raise
                logger.warning(
                    "upstream %s failed (attempt %d of %d, status %s); retrying in %.2fs",
                    operation,
                    attempt,
                    self.max_attempts,
                    exc.status,
                    delay,
                )
                await self.sleep(delay)
                if self.clock() >= deadline_at:  # the sleep overran; nothing left to try with
                    raise

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        # Full jitter (uniform over [0, cap]) spreads a burst of callers that failed together.
        cap = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        delay = random.uniform(0, cap)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    async def _attempt(
        self,
        operation: str,
        method: str,
        url: str,
        body: Any,
        params: dict[str, str | int] | None,
        deadline_at: float,
    ) -> httpx.Response:
        budget = min(self.timeout, deadline_at - self.clock())
        if budget <= 0:
            raise UpstreamTimeout(
                operation, None, [f"deadline of {self.deadline}s exceeded"], maybe_applied=False
            )
        json = None if body is NO_BODY else body
        started = self.clock()
        status: int | None = None
        scope = asyncio.timeout(budget)
        try:
            async with scope:
                response = await self.http.request(method, url, json=json, params=params)
            status = response.status_code
            return response
        # Before TimeoutError: aiohttp's timeouts are TimeoutErrors too.
        except (httpx.HTTPError, aiohttp.ClientError) as exc:
            maybe_applied, timed_out, cause = _how_far(exc)
            kind = UpstreamTimeout if timed_out else UpstreamUnavailable
            raise kind(operation, None, [_describe(cause)], maybe_applied=maybe_applied) from exc
        except TimeoutError as exc:
            if not scope.expired():
                raise UpstreamUnavailable(operation, None, [_describe(exc)]) from exc
            raise UpstreamTimeout(
                operation, None, [f"no response within {budget:.2f}s"], maybe_applied=True
            ) from exc
        except Exception as exc:
            # Anything else the transport raised, e.g. an in-process ASGI app crashing.
            raise UpstreamUnavailable(operation, None, [_describe(exc)]) from exc
        finally:
            self._observe(operation, status, self.clock() - started)

    def _observe(self, operation: str, status: int | None, seconds: float) -> None:
        logger.debug("upstream %s -> %s in %.3fs", operation, status, seconds)
        if self.observer is None:
            return
        try:
            self.observer(operation, status, seconds)
        except Exception:
            # Metrics must never turn a successful upstream call into a failure.
            logger.exception("upstream observer failed")


def _how_far(exc: Exception) -> tuple[bool, bool, BaseException]:
    """(maybe applied, timed out, the error that says so) for a failed exchange.

    httpx-aiohttp raises aiohttp's errors as httpx types, from the original, but too coarsely
    to tell "not sent" from "maybe applied": every aiohttp connection error, a server that
    disconnected mid-answer or reset the connection included, becomes httpx.ConnectTimeout.
    So aiohttp's own error decides when there is one; httpx's type decides otherwise (httpx's
    transports, MockTransport, ASGITransport)."""
    cause = exc if isinstance(exc, aiohttp.ClientError) else exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        # ServerTimeoutError (socket read, connect, pool) is the one aiohttp TimeoutError.
        return not isinstance(cause, _AIOHTTP_NOT_SENT), isinstance(cause, TimeoutError), cause
    return not isinstance(exc, _NOT_SENT), isinstance(exc, httpx.TimeoutException), exc


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
