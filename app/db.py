"""The database: engine and session factory, the embedded Postgres, and migrations.

Corral runs on Postgres only. Without `CORRAL_DATABASE_URL` it starts an embedded Postgres
(the `pgserver` package) under `data_dir`, so a fresh machine needs no database set-up.
The schema comes from the Alembic migrations alone, never from `create_all`.
"""

from __future__ import annotations

import atexit
import logging
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg.exceptions as asyncpg_exc
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event
from sqlalchemy import exc as sqlalchemy_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_only

from app.locks import Lock
from app.settings import Settings

log = logging.getLogger(__name__)

# Files that `as_file` had to copy out of the installed package, removed at exit.
_extracted = ExitStack()
atexit.register(_extracted.close)


@cache
def migrations_dir() -> Path:
    """The Alembic script directory: the `app.migrations` package, which pyproject.toml maps
    from the repository's top-level `migrations/` (the editable install finds it there, a wheel
    carries it). Alembic needs a directory on disk: for a package installed as files `as_file`
    gives the package's own directory, and from a zip (Python >= 3.12) a temporary copy."""
    return _extracted.enter_context(resources.as_file(resources.files("app.migrations")))


def embedded_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded Postgres under data_dir and return its asyncpg URL."""
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless for a local server.
        warnings.simplefilter("ignore")
        import pgserver

        data_dir = data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(  # type: ignore[attr-defined]
            str(data_dir / "pg"), cleanup_mode=None
        )
    # pgserver listens on a unix socket in its data directory.
    socket_dir = str(data_dir / "pg")
    log.info("embedded postgres running", extra={"socket_dir": socket_dir})
    del server
    return f"postgresql+asyncpg://postgres@/postgres?host={socket_dir}"


def async_url(url: str) -> str:
    """Normalise any postgres URL to the asyncpg driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername != "postgresql+asyncpg":
        raise ValueError(f"Corral needs a postgres URL, not {parsed.drivername}")
    return parsed.render_as_string(hide_password=False)


def database_url(settings: Settings) -> str:
    if settings.database_url is not None:
        return async_url(settings.database_url.get_secret_value())
    return embedded_url(settings.data_dir)


# A connection back in the pool for less than this is handed out untested. A restart takes
# longer than this (a fast shutdown alone checkpoints), so a connection that was used this
# recently still talks to the server it was opened on; what the test would cost on each of
# them is one round trip per checkout (bench/pool_ping.py). A connection that dies in that
# window while a server answers at once (a killed backend, a failover behind the same
# address) fails its next statement: a 503, and the failure discards every pooled connection
# opened before it (docs/decisions.md, Transactions).
PING_AFTER_IDLE_SECONDS = 0.1


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # The connection used last goes out first: under light load the same few stay recent
        # (untested, above) and the rest idle until they are needed or closed.
        pool_use_lifo=True,
        # A failed statement's error (logged, and in every traceback) never carries the values
        # bound to it: they are client input, keys' digests, tokens.
        hide_parameters=True,
        # Short statements only: nothing in Corral should hold a connection for long.
        connect_args={"server_settings": {"application_name": "corral"}},
    )
    event.listen(engine.sync_engine, "checkin", _checked_in)
    event.listen(engine.sync_engine, "checkout", _ping)
    return engine


def _checked_in(dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _ping(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """A database restart breaks every pooled connection: one that sat idle is tried at
    checkout, and a dead one is replaced (the pool takes another), so the first request after
    the restart works. One query in the simple protocol is one round trip; `pool_pre_ping`
    takes three on asyncpg (BEGIN, the query, ROLLBACK)."""
    checked_in_at = record.info.get("checked_in_at")
    if checked_in_at is not None and time.monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
        return
    try:
        await_only(dbapi_connection.driver_connection.execute("SELECT 1"))
    except UNAVAILABLE as exc:
        raise sqlalchemy_exc.DisconnectionError(str(exc)) from exc


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One short unit of work: commits on success, rolls back on any error."""
    async with sessions() as session, session.begin():
        yield session


@asynccontextmanager
async def reading(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session for reads alone: each statement is its own transaction, so a request that
    only reads saves `transaction`'s BEGIN and COMMIT round trips (bench/overhead.py)."""
    async with sessions() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session


@asynccontextmanager
async def autocommit(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection on which each statement commits by itself. Only for a single statement
    that is atomic on its own (one UPDATE with its inserts as CTEs): it saves `transaction`'s
    BEGIN and COMMIT round trips."""
    async with engine.connect() as conn:
        yield await conn.execution_options(isolation_level="AUTOCOMMIT")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # Alembic's config is ConfigParser-based: escape % in passwords.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _upgrade(connection: Connection, url: str) -> None:
    config = alembic_config(url)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to head. Safe to run from several replicas: Alembic's own transaction
    plus an advisory lock serialise concurrent upgrades."""
    url = engine.url.render_as_string(hide_password=False)
    async with engine.begin() as conn:
        await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({Lock.MIGRATIONS:d})")
        await conn.run_sync(_upgrade, url)


async def migrations_current(engine: AsyncEngine) -> bool:
    head = ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()
    async with engine.connect() as conn:
        current = await conn.run_sync(_current_revision)
    return current == head


# What a database that is restarting, shutting down or unreachable raises, by the driver or
# the pool: answered 503 with Retry-After, never 500 (DESIGN §11).
UNAVAILABLE: tuple[type[Exception], ...] = (
    ConnectionError,  # refused, reset, aborted
    TimeoutError,
    sqlalchemy_exc.TimeoutError,  # no pooled connection within the pool's timeout
    sqlalchemy_exc.InterfaceError,
    sqlalchemy_exc.OperationalError,
    asyncpg_exc.PostgresConnectionError,
    asyncpg_exc.CannotConnectNowError,
    asyncpg_exc.OperatorInterventionError,  # admin or crash shutdown
    asyncpg_exc.InternalClientError,  # a connection left broken mid-operation
    asyncpg_exc.InterfaceError,
)


def unavailable(exc: BaseException) -> bool:
    """Did this fail because the database is away (rather than a bug or bad data)?"""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlalchemy_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, UNAVAILABLE):
            return True
        current = current.__cause__ or current.__context__
    return False
