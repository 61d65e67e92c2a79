"""Leader election and the per-period lock, both Postgres session-level advisory locks
(their keys are in `app.locks`).

- `Leadership` holds the leader lock on a dedicated connection for as long as this process
  leads. Postgres releases a session lock when its connection ends, so when the leader's process
  dies (or its connection is cut) another replica's next attempt takes over, within a period.
- `period_lock` is held for one reconcile period, so a period started by hand
  (`POST /v1/admin/reconciliation/run`) never overlaps the leader's.

Both connections run in autocommit: a lock is held by the session, not by a transaction, so
no transaction stays open while the period calls the upstream. A connection whose lock state is
in doubt is invalidated, never returned to the pool still holding a lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.locks import Lock

log = logging.getLogger(__name__)


async def _autocommit(engine: AsyncEngine) -> AsyncConnection:
    conn = await engine.connect()
    await conn.execution_options(isolation_level="AUTOCOMMIT")
    return conn


async def _try_lock(conn: AsyncConnection, key: int) -> bool:
    return bool(await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}))


async def _unlock(conn: AsyncConnection, key: int) -> None:
    await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


async def _discard(conn: AsyncConnection) -> None:
    """Close a connection that may hold a lock: invalidating ends its session, so the lock goes."""
    with suppress(Exception):
        await conn.invalidate()
    with suppress(Exception):
        await conn.close()


class Leadership:
    """This replica's claim on the leader lock."""

    def __init__(self, engine: AsyncEngine, replica: str) -> None:
        self.engine = engine
        self.replica = replica
        self._conn: AsyncConnection | None = None

    @property
    def is_leader(self) -> bool:
        return self._conn is not None

    async def ensure(self) -> bool:
        """True if this replica leads now: keeps a held lock (if its connection is alive) or
        tries to take a free one. Never blocks on another replica's lock."""
        if self._conn is not None:
            try:
                await self._conn.exec_driver_sql("SELECT 1")
                return True
            except Exception:
                log.warning("lost the leader connection", extra={"replica": self.replica})
                await _discard(self._conn)
                self._conn = None
        try:
            conn = await _autocommit(self.engine)
        except Exception:
            log.warning("cannot reach the database for leader election", exc_info=True)
            return False
        try:
            acquired = await _try_lock(conn, Lock.RECONCILE_LEADER)
        except Exception:
            log.warning("leader election failed", exc_info=True)
            await _discard(conn)
            return False
        if not acquired:
            # It holds no lock, so it may go back to the pool.
            await conn.close()
            return False
        self._conn = conn
        log.info("became reconcile leader", extra={"replica": self.replica})
        return True

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await _unlock(conn, Lock.RECONCILE_LEADER)
            await conn.close()
        except Exception:
            await _discard(conn)
        log.info("gave up reconcile leadership", extra={"replica": self.replica})


class PeriodBusy(Exception):
    """Another reconcile period holds the period lock."""


@asynccontextmanager
async def period_lock(engine: AsyncEngine, *, wait_seconds: float = 0.0) -> AsyncIterator[None]:
    """Hold the period lock for the duration of the block; raise `PeriodBusy` if another period
    still holds it after `wait_seconds`."""
    conn = await _autocommit(engine)
    deadline = time.monotonic() + wait_seconds
    try:
        acquired = await _try_lock(conn, Lock.RECONCILE_PERIOD)
        while not acquired and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            acquired = await _try_lock(conn, Lock.RECONCILE_PERIOD)
    except BaseException:
        await _discard(conn)
        raise
    if not acquired:
        await conn.close()  # it holds no lock
        raise PeriodBusy("another reconcile period is running")
    try:
        yield
    finally:
        try:
            await _unlock(conn, Lock.RECONCILE_PERIOD)
            await conn.close()
        except BaseException:
            await _discard(conn)
            raise
