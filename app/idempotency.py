"""Idempotency-Key for creates and forks.

A key is remembered per API key and route for 24 hours with a fingerprint of the request:
- the same key and body while the first request is in flight → 409;
- the same key and body afterwards → the stored response, replayed (`Idempotent-Replayed: true`),
  and nothing runs again, so a retried create never forks upstream twice;
- the same key with another body → 422.

The record is inserted (in flight) in its own committed transaction before the work starts, so
concurrent duplicates on any replica meet the primary key. Outcomes that changed nothing (a
refusal, an upstream that was certainly not reached, bad input) are forgotten, so the client
may retry them with the same key; every other outcome is stored and replayed. The queries are
in `app.idempotency_repository`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import clock
from app import idempotency_repository as repository
from app.db import transaction
from app.errors import AppError, Conflict, Unprocessable, problem_response

TTL = timedelta(hours=24)
# Statuses after which nothing happened, so the key may be used again.
_FORGET = {400, 401, 402, 403, 404, 409, 413, 422, 429, 503}


class BadIdempotencyKey(Unprocessable):
    kind = "bad-idempotency-key"

    def __init__(self) -> None:
        super().__init__("Idempotency-Key must be 1 to 255 characters.")


class IdempotencyKeyReused(Unprocessable):
    kind = "idempotency-key-reused"

    def __init__(self) -> None:
        super().__init__("This Idempotency-Key was used with a different request.")


class IdempotencyInFlight(Conflict):
    """Another request with this key has not finished; asking again shortly is safe."""

    kind = "idempotency-in-flight"

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still in progress.",
            headers={"Retry-After": "1"},
        )


def fingerprint(route: str, body: dict[str, Any]) -> bytes:
    canonical = json.dumps({"route": route, "body": body}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).digest()


async def run(
    sessions: async_sessionmaker[AsyncSession],
    *,
    key_id: str,
    route: str,
    idempotency_key: str | None,
    body: dict[str, Any],
    status_code: int,
    call: Callable[[], Awaitable[BaseModel]],
) -> JSONResponse:
    if idempotency_key is None:
        return JSONResponse((await call()).model_dump(mode="json"), status_code=status_code)
    if not 1 <= len(idempotency_key) <= 255:
        raise BadIdempotencyKey()
    digest = fingerprint(route, body)
    identity = repository.RecordKey(key_id, route, idempotency_key)
    now = clock.now()
    async with transaction(sessions) as session:
        await repository.delete_expired(session, identity, now)
        claimed = await repository.claim(
            session, identity, fingerprint=digest, expires_at=now + TTL
        )
        if not claimed:
            existing = await repository.get(session, identity)
            if existing is None:
                # Removed since our insert met it: a concurrent request with this key cleared
                # it (expired, or forgotten as it finished). It is that request's turn.
                raise IdempotencyInFlight()
            if existing.fingerprint != digest:
                raise IdempotencyKeyReused()
            if existing.status is None:
                raise IdempotencyInFlight()
            return JSONResponse(
                existing.response,
                status_code=existing.status,
                headers={"Idempotent-Replayed": "true"},
                media_type="application/json"
                if existing.status < 400
                else "application/problem+json",
            )

    try:
        result = await call()
    except AppError as error:
        if error.status in _FORGET:
            await _forget(sessions, identity)
        else:
            rendered = problem_response(
                error.status, kind=error.kind, detail=error.detail, extra=error.extra
            )
            await _store(sessions, identity, error.status, json.loads(bytes(rendered.body)))
        raise
    except BaseException:
        await _forget(sessions, identity)
        raise
    payload = result.model_dump(mode="json")
    await _store(sessions, identity, status_code, payload)
    return JSONResponse(payload, status_code=status_code)


async def _store(
    sessions: async_sessionmaker[AsyncSession],
    identity: repository.RecordKey,
    status: int,
    payload: dict[str, Any],
) -> None:
    async with transaction(sessions) as session:
        await repository.store(session, identity, status, payload)


async def _forget(
    sessions: async_sessionmaker[AsyncSession], identity: repository.RecordKey
) -> None:
    async with transaction(sessions) as session:
        await repository.forget(session, identity)
