"""Shared fixtures: a real Postgres migrated by Alembic, the in-process simulator, and an
HTTP client on the app.

Isolation: the lifecycle service commits in several short transactions per request (it
never holds one across an upstream call), so a test cannot live inside one rolled-back outer
transaction without changing what it tests. Each test instead runs on real commits and the
tables are truncated after it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import create_engine, migrate, session_factory
from app.main import create_app, follow_simulator
from app.models import Base
from app.runtime import Runtime
from app.settings import Settings
from app.upstream.client import UpstreamClient
from app.upstream.simulator import create_simulator_app
from app.usage import statements
from tests.database import recreate

ADMIN_KEY = "test-admin-key-" + "x" * 32
SIMULATOR_KEY = "simulator-test-key"
# Tables whose rows the migrations seed: reset to the seed instead of emptied.
SEEDED = {"org_plan", "teams", "price_books", "clock_state"}
TABLES = [t.name for t in Base.metadata.sorted_tables if t.name not in SEEDED]
RESET_SEED = [
    f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE",
    "DELETE FROM teams WHERE id <> 'unassigned'",
    "DELETE FROM price_books WHERE created_by IS DISTINCT FROM 'migration'",
    "UPDATE org_plan SET plan = 'scale', plan_limit = 250, observed_limit = NULL,"
    " observed_at = NULL",
    "UPDATE clock_state SET offset_us = 0, generation = 0, jumping = false",
]


@pytest.fixture(scope="session")
async def database_url() -> str:
    return await recreate(f"corral_test_{os.getpid()}")


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        admin_key=ADMIN_KEY,
        upstream="simulator",
        reconcile_enabled=False,
        # Retries in tests should not sleep long.
        upstream_deadline_seconds=10,
    )


@pytest.fixture
def simulator() -> object:
    return create_simulator_app(api_key=SIMULATOR_KEY)


@asynccontextmanager
async def simulated_runtime(
    settings: Settings, engine: AsyncEngine, simulator: object
) -> AsyncIterator[Runtime]:
    """A runtime on `engine` whose upstream is the in-process `simulator`, with quick retries;
    Corral's clock is the simulator's, as in a served Corral with the in-process simulator."""
    upstream = UpstreamClient(
        "http://simulator",
        SIMULATOR_KEY,
        transport=httpx.ASGITransport(app=simulator),  # type: ignore[arg-type]
        backoff_base=0.01,
        backoff_max=0.05,
        deadline=10,
    )
    follow_simulator(simulator)
    try:
        yield Runtime(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            upstream=upstream,
            simulator=simulator,
        )
    finally:
        follow_simulator(None)
        await upstream.aclose()


@pytest.fixture
async def runtime(
    settings: Settings, engine: AsyncEngine, simulator: object
) -> AsyncIterator[Runtime]:
    async with simulated_runtime(settings, engine, simulator) as rt:
        yield rt
    async with engine.begin() as conn:
        for statement in RESET_SEED:
            await conn.execute(text(statement))
    # The reset restarts interval ids, which the kept closed totals take as never reused.
    statements._closed_totals.clear()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime=runtime)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://corral"
    ) as http:
        yield http


@pytest.fixture
async def sim(simulator: object) -> AsyncIterator[httpx.AsyncClient]:
    """A client on the simulator's control API (and, with the key, its upstream API)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=simulator),  # type: ignore[arg-type]
        base_url="http://simulator",
        headers={"Authorization": f"Bearer {SIMULATOR_KEY}"},
    ) as http:
        yield http


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}
