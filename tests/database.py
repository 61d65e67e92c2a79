"""The test database server: CORRAL_TEST_DATABASE_URL when set, else the embedded Postgres.

Each test run makes fresh databases on that server, by name, and migrates them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent


def server_url() -> str:
    """An asyncpg-style URL of the server's maintenance database."""
    configured = os.environ.get("CORRAL_TEST_DATABASE_URL")
    if configured:
        return configured
    from app.db import embedded_url

    return embedded_url(ROOT / ".data" / "test")


def url_for(database: str) -> str:
    """SQLAlchemy asyncpg URL of a named database on the test server."""
    from app.db import async_url

    return (
        make_url(async_url(server_url()))
        .set(database=database)
        .render_as_string(hide_password=False)
    )


def _dsn(url: str) -> str:
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


async def recreate(database: str) -> str:
    """Drop and create a database; returns its SQLAlchemy URL."""
    conn = await asyncpg.connect(_dsn(url_for("postgres")))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    return url_for(database)


async def drop(database: str) -> None:
    conn = await asyncpg.connect(_dsn(url_for("postgres")))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def scratch(database: str) -> AsyncIterator[str]:
    """A fresh database for the length of the block (its URL), dropped afterwards."""
    url = await recreate(database)
    try:
        yield url
    finally:
        await drop(database)
