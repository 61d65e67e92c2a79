"""No upstream call spans a jump of a simulated clock (DESIGN §12).

A move is dated when its call was sent (`app.sandboxes.lifecycle`), which is when the upstream
acted on it, unless the clock jumped by hours in between. So once a simulated clock has moved,
every lifecycle operation runs inside one `turn` (a shared advisory lock, `Lock.CLOCK_GATE`),
from its reservation through its upstream calls to the moves they date (`operation`), and
`operations.clock.advance` takes the lock exclusively for its jump: it waits for the operations
in flight, and the ones that come next wait for it. The whole operation, not only its call: a
start answered before a jump and settled after it would find its reservation lapsed by hours
and taken by the reconciler, and the minutes it booted lost. With a real upstream, or before
the first advance, `turn` costs nothing.

A turn is taken once per task: an operation made of others (a restart's stop and start) holds
one turn, as a second shared request would queue behind a waiting jump that waits for the
first.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import clock
from app.db import autocommit
from app.locks import Lock
from app.settings import Settings

_LOCK_SHARED = text("SELECT pg_advisory_lock_shared(:key)")
# With whether a jump is marked under way: a database restart mid-jump drops the jump's lock.
_TRY_LOCK_SHARED = text(
    "SELECT pg_try_advisory_lock_shared(:key) AS free,"
    " (SELECT jumping FROM clock_state WHERE id = 1) AS jumping"
)
_UNLOCK_SHARED = text("SELECT pg_advisory_unlock_shared(:key)")
_LOCK = text("SELECT pg_advisory_lock(:key)")
_UNLOCK = text("SELECT pg_advisory_unlock(:key)")
_IN_TURN: ContextVar[bool] = ContextVar("clock_gate_in_turn", default=False)

P = ParamSpec("P")
T = TypeVar("T")


class _Gated(Protocol):
    @property
    def settings(self) -> Settings: ...
    @property
    def engine(self) -> AsyncEngine: ...
    async def catch_up_with_the_simulator(self) -> None: ...


R = TypeVar("R", bound=_Gated)


def gated(settings: Settings) -> bool:
    return settings.upstream_mode == "simulator" and abs(clock.CLOCK.offset) > timedelta(seconds=1)


@asynccontextmanager
async def turn(
    settings: Settings,
    engine: AsyncEngine,
    *,
    after_a_jump: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[None]:
    """Hold off a clock jump for the block (an operation, its upstream calls and the times
    they are dated by). A turn that had to wait for a jump, or found one marked under way
    with the lock free, runs `after_a_jump` first: a replica that died mid-jump, or a database
    restart, released the lock before anyone was told the new time."""
    if _IN_TURN.get() or not gated(settings):
        yield
        return
    async with autocommit(engine) as conn:
        tried = (await conn.execute(_TRY_LOCK_SHARED, {"key": int(Lock.CLOCK_GATE)})).one()
        if not tried.free:
            await conn.execute(_LOCK_SHARED, {"key": int(Lock.CLOCK_GATE)})
        if (not tried.free or tried.jumping) and after_a_jump is not None:
            await after_a_jump()
        held = _IN_TURN.set(True)
        try:
            yield
        finally:
            _IN_TURN.reset(held)
            await conn.execute(_UNLOCK_SHARED, {"key": int(Lock.CLOCK_GATE)})


def operation(
    run: Callable[Concatenate[R, P], Awaitable[T]],
) -> Callable[Concatenate[R, P], Awaitable[T]]:
    """A lifecycle operation (its first argument the runtime) that runs in one turn."""

    @functools.wraps(run)
    async def in_turn(rt: R, /, *args: P.args, **kwargs: P.kwargs) -> T:
        async with turn(rt.settings, rt.engine, after_a_jump=rt.catch_up_with_the_simulator):
            return await run(rt, *args, **kwargs)

    return in_turn


@asynccontextmanager
async def jump(engine: AsyncEngine) -> AsyncIterator[None]:
    """The block runs with no `turn` in flight anywhere."""
    async with autocommit(engine) as conn:
        await conn.execute(_LOCK, {"key": int(Lock.CLOCK_GATE)})
        try:
            yield
        finally:
            await conn.execute(_UNLOCK, {"key": int(Lock.CLOCK_GATE)})
