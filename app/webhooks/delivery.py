"""One delivery attempt (DESIGN §13): sign the event, POST it, and record what came of it.

What an attempt ends in:

- a 2xx answer: the delivery succeeded;
- 410 Gone: the receiver says the endpoint is no more, so the endpoint is disabled (with the
  reason) and the delivery failed; its other pending deliveries wait for it to be re-enabled;
- anything else (another status, a redirect, which is never followed, a timeout, a connection
  error, a URL the allowed hosts no longer admit): retried 5 s, 5 min, 30 min, 2 h, 5 h and
  10 h after the first to sixth failed attempts, and failed after the seventh. A `Retry-After`
  on any non-2xx answer (seconds or an HTTP date) puts the next attempt no earlier than it
  says, up to `RETRY_AFTER_CAP`.

A timeout, or a connection lost after the request went out, is not a failure but an unknown:
the receiver may have the event. It is retried like a failure, under the same `webhook-id`
(the event's id), which is how a receiver deduplicates: delivery is at least once, never at
most once. A URL no longer allowed is retried rather than failed at once because the list is
configuration: an operator who narrowed it by mistake has the back-off's hours to put it back.

No database transaction is open during the POST: the claim committed before it, and the
result is written after it, in one statement with whatever else finished meanwhile
(`delivery_repository.record`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import aiohttp
import httpx
from httpx_aiohttp import HttpxAiohttpClient
from sqlalchemy.ext.asyncio import AsyncEngine

from app import clock
from app.db import autocommit, unavailable
from app.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_DELAY
from app.settings import Settings
from app.webhooks import delivery_repository as repository
from app.webhooks import events, signing, urls
from app.webhooks.delivery_repository import Claimed, Recorded

log = logging.getLogger(__name__)

# The wait before the next attempt after the first, second, ... sixth failed attempt.
BACKOFF: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
)
MAX_ATTEMPTS = len(BACKOFF) + 1
# A receiver cannot park a delivery for longer than this with Retry-After.
RETRY_AFTER_CAP = timedelta(hours=24)
ERROR_CHARS = 500
# What is read of an answer: only its status matters, and a receiver must not make the worker
# read a body without end.
READ_LIMIT = 64 * 1024
# How long a result waits for a database that is away before it is given up (the delivery is
# then sent again once its lease ends).
RECORD_PATIENCE_SECONDS = 60.0
USER_AGENT = "Corral-Webhooks/1.0"


def new_client(settings: Settings, *, max_connections: int = 256) -> httpx.AsyncClient:
    """The worker's one HTTP client: httpx's API on aiohttp's connection pool, as the upstream
    client has it (on loopback, a quarter of the CPU per request of httpx's own transport,
    which otherwise is most of an attempt's); no redirects followed (a receiver cannot send
    the signed body elsewhere); the attempt timeout on every phase."""
    return HttpxAiohttpClient(
        timeout=settings.webhook_timeout_seconds,
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        # An idle connection is dropped before common servers drop it (5 s for Node and
        # uvicorn): a POST sent on a connection the receiver is closing fails, unsent.
        limits=httpx.Limits(max_connections=max_connections, keepalive_expiry=2.0),
    )


def signing_secrets(claimed: Claimed, now: datetime) -> list[str]:
    """The endpoint's secret, and the one it replaced while that one's overlap lasts."""
    found = [claimed.secret]
    expires_at = claimed.previous_secret_expires_at
    if claimed.previous_secret and expires_at is not None and expires_at > now:
        found.append(claimed.previous_secret)
    return found


def retry_after(value: str | None, *, wall: datetime) -> timedelta | None:
    """A `Retry-After` header as a wait from `wall` (seconds or an HTTP date, RFC 9110),
    capped; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return timedelta(seconds=min(int(value), int(RETRY_AFTER_CAP.total_seconds())))
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(timedelta(0), min(moment - wall, RETRY_AFTER_CAP))


def retry_delay(attempts: int, asked: timedelta | None) -> timedelta | None:
    """The wait before the next attempt after `attempts` failed ones; None: give up."""
    if attempts >= MAX_ATTEMPTS:
        return None
    delay = BACKOFF[attempts - 1]
    return max(delay, asked) if asked is not None else delay


@dataclass(frozen=True)
class Sent:
    """What one POST learnt, before anything is decided from it."""

    status_code: int | None
    error: str | None
    retry_after: timedelta | None
    duration_ms: int


def _truncate(error: str) -> str:
    # Postgres text holds no NUL, and an error may quote what a receiver sent.
    error = error.replace("\x00", "")
    return error if len(error) <= ERROR_CHARS else error[: ERROR_CHARS - 1] + "…"


async def _drain(response: httpx.Response) -> None:
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read > READ_LIMIT:
            # Closing unread drops the connection instead of returning it to the pool.
            return


def _failure(exc: BaseException, timeout: float) -> str:
    """What went wrong, in words. httpx-aiohttp raises aiohttp's errors as httpx types, too
    coarsely (a refused connection is an httpx.ConnectTimeout), so aiohttp's own error, the
    cause, names it when there is one."""
    cause = exc if isinstance(exc, aiohttp.ClientError) else exc.__cause__
    if isinstance(cause, aiohttp.ClientError) and not isinstance(cause, TimeoutError):
        exc = cause
    elif isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f"timed out after {timeout:g} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def send(http: httpx.AsyncClient, claimed: Claimed, *, settings: Settings) -> Sent:
    """POST one delivery; never raises for what the receiver or the network did."""
    try:
        urls.check(claimed.url, settings.webhook_allowed_hosts)
    except urls.UnacceptableURL as exc:
        return Sent(None, _truncate(f"not sent: {exc}"), None, 0)
    body = events.body(claimed.event_type, claimed.occurred_at, claimed.data)
    try:
        headers = signing.headers(
            signing_secrets(claimed, clock.now()),
            message_id=claimed.event_id,
            sent_at=clock.wall(),
            body=body,
        )
    except Exception as exc:
        # A stored secret the library cannot read (not base64, or empty once decoded): not
        # sent, and retried on the schedule like any failure, rather than raising here and
        # being claimed again at every lease, forever.
        return Sent(None, _truncate(f"not sent: the secret does not sign: {exc}"), None, 0)
    headers["Content-Type"] = "application/json"
    timeout = settings.webhook_timeout_seconds
    started = time.monotonic()
    status_code: int | None = None
    asked: timedelta | None = None
    error: str | None = None
    try:
        # httpx's timeout bounds each read; this bounds the whole attempt, so a receiver that
        # trickles its answer cannot hold a slot past the claim's lease.
        async with (
            asyncio.timeout(timeout),
            http.stream("POST", claimed.url, content=body.encode(), headers=headers) as response,
        ):
            status_code = response.status_code
            if not response.is_success:
                asked = retry_after(response.headers.get("retry-after"), wall=clock.wall())
            await _drain(response)
    except (TimeoutError, httpx.HTTPError, httpx.InvalidURL, aiohttp.ClientError, OSError) as exc:
        # Whether it got there is unknown unless the connection was refused: either way it
        # is retried under the same webhook-id.
        error = _failure(exc, timeout)
    if error is not None and status_code is not None:
        # The status arrived but the body did not: the status still decides.
        error = f"answered {status_code}, then {error}"
    duration_ms = round((time.monotonic() - started) * 1000)
    return Sent(status_code, _truncate(error) if error else None, asked, duration_ms)


def decide(claimed: Claimed, sent: Sent, *, at: datetime, now: datetime) -> tuple[Recorded, str]:
    """The delivery's next state after `sent`, and the metric outcome it counts as."""
    code = sent.status_code
    next_attempt_at: datetime | None = None
    disabled_reason: str | None = None
    if code is not None and 200 <= code < 300:
        status = outcome = "succeeded"
    elif code == 410:
        status, outcome = "failed", "disabled"
        disabled_reason = f"the endpoint answered 410 Gone at {now.isoformat(timespec='seconds')}"
    elif (delay := retry_delay(claimed.attempts + 1, sent.retry_after)) is None:
        status = outcome = "failed"
    else:
        status, outcome = "pending", "retrying"
        next_attempt_at = now + delay
    recorded = Recorded(
        status=status,
        at=at,
        duration_ms=sent.duration_ms,
        status_code=code,
        error=sent.error,
        next_attempt_at=next_attempt_at,
        completed_at=None if status == "pending" else now,
        disabled_reason=disabled_reason,
    )
    return recorded, outcome


@dataclass(frozen=True)
class Result:
    """One attempt's result, to be recorded."""

    claimed: Claimed
    recorded: Recorded
    # What it counts as in the metrics: succeeded, retrying, failed or disabled.
    outcome: str


async def attempt(http: httpx.AsyncClient, claimed: Claimed, *, settings: Settings) -> Result:
    """Send one claimed delivery and decide what comes of it; nothing is written yet."""
    at = clock.now()
    sent = await send(http, claimed, settings=settings)
    recorded, outcome = decide(claimed, sent, at=at, now=clock.now())
    return Result(claimed, recorded, outcome)


async def _write(engine: AsyncEngine, results: Sequence[Result]) -> set[int]:
    """Write results, waiting out a database that is away (a restart) for a while: the POSTs
    are done, and losing their results would mean sending them again."""
    deadline = time.monotonic() + RECORD_PATIENCE_SECONDS
    pause = 0.2
    rows = [(r.claimed, r.recorded) for r in results]
    while True:
        try:
            async with autocommit(engine) as conn:
                return await repository.record(conn, rows)
        except Exception as exc:
            if not unavailable(exc) or time.monotonic() > deadline:
                raise
            log.warning(
                "database unavailable; webhook attempts not recorded yet",
                extra={"deliveries": len(results)},
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)


async def record(engine: AsyncEngine, results: Sequence[Result]) -> set[int]:
    """Write results in one statement; the ids of the deliveries written (see
    `delivery_repository.record`). Counts every attempt in the metrics."""
    try:
        written = await _write(engine, results)
    except Exception as exc:
        if len(results) == 1 or unavailable(exc):
            raise
        # Whatever made the statement fail must not lose the other results: each alone.
        written = set()
        for result in results:
            try:
                written |= await _write(engine, [result])
            except Exception:
                log.exception(
                    "cannot record a webhook attempt", extra={"delivery_id": result.claimed.id}
                )
    for result in results:
        _count(result, result.claimed.id in written)
    return written


def _count(result: Result, written: bool) -> None:
    claimed, recorded = result.claimed, result.recorded
    WEBHOOK_ATTEMPTS.labels(claimed.event_type, result.outcome).inc()
    if not written:
        # Another replica took the delivery over (this one's lease ran out) or it was
        # cancelled: what it decides stands.
        log.info(
            "webhook attempt result not recorded: the delivery moved on",
            extra={"delivery_id": claimed.id, "outcome": result.outcome},
        )
    elif recorded.completed_at is not None and recorded.status == "succeeded":
        delay = recorded.completed_at - claimed.occurred_at
        WEBHOOK_DELAY.observe(max(0.0, delay.total_seconds()))


async def deliver(
    engine: AsyncEngine, http: httpx.AsyncClient, claimed: Claimed, *, settings: Settings
) -> Recorded:
    """One attempt of a claimed delivery, recorded on its own."""
    result = await attempt(http, claimed, settings=settings)
    await record(engine, [result])
    return result.recorded
