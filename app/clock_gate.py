"""No upstream call spans a jump of a simulated clock (DESIGN §12).

A move is dated when its call was sent (`app.sandboxes.lifecycle`), which is when the upstream
acted on it, unless the clock jumped by hours in between. So once a simulated clock has moved,
every call that dates a move runs inside `turn` (a shared advisory lock, `Lock.CLOCK_GATE`),
and `operations.clock.advance` takes the lock exclusively for its jump: it waits for the calls
in flight, and the calls that come next wait for it. With a real upstream, or before the first
advance, `turn` costs nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import clock
from app.db import autocommit
from app.locks import Lock
from app.settings import Settings

_LOCK_SHARED = text("SELECT pg_advisory_lock_shared(:key)")
_UNLOCK_SHARED = text("SELECT pg_advisory_unlock_shared(:key)")
_LOCK = text("SELECT pg_advisory_lock(:key)")
_UNLOCK = text("SELECT pg_advisory_unlock(:key)")


def gated(settings: Settings) -> bool:
    return settings.upstream_mode == "simulator" and abs(clock.CLOCK.offset) > timedelta(seconds=1)


@asynccontextmanager
async def turn(settings: Settings, engine: AsyncEngine) -> AsyncIterator[None]:
    """Hold off a clock jump for the block (an upstream call and the time it is dated by)."""
    if not gated(settings):
        yield
        return
    async with autocommit(engine) as conn:
        await conn.execute(_LOCK_SHARED, {"key": int(Lock.CLOCK_GATE)})
        try:
            yield
        finally:
            await conn.execute(_UNLOCK_SHARED, {"key": int(Lock.CLOCK_GATE)})


@asynccontextmanager
async def jump(engine: AsyncEngine) -> AsyncIterator[None]:
    """The block runs with no `turn` in flight anywhere."""
    async with autocommit(engine) as conn:
        await conn.execute(_LOCK, {"key": int(Lock.CLOCK_GATE)})
        try:
            yield
        finally:
            await conn.execute(_UNLOCK, {"key": int(Lock.CLOCK_GATE)})
