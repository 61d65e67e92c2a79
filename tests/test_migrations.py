"""The migrations are code: upgrade, compare with the models, downgrade, upgrade again."""

from __future__ import annotations

import os

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import alembic_config
from app.models import Base
from tests.database import recreate


def _diff(connection: Connection) -> list[object]:
    return list(
        compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata
        )
    )


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _check(connection: Connection, url: str) -> None:
    config = alembic_config(url)
    config.attributes["connection"] = connection
    command.check(config)


def _run(connection: Connection, url: str, action: str, target: str) -> None:
    config = alembic_config(url)
    config.attributes["connection"] = connection
    getattr(command, action)(config, target)


async def test_upgrade_check_downgrade_upgrade() -> None:
    url = await recreate(f"corral_migrations_{os.getpid()}")
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run, url, "upgrade", "head")
            assert await conn.run_sync(_diff) == []
            # `alembic check` itself: raises when the models and the migrations disagree.
            await conn.run_sync(_check, url)
            assert {
                "teams",
                "api_keys",
                "sandboxes",
                "sandbox_events",
                "usage_intervals",
                "audit_log",
            } <= await conn.run_sync(_tables)
        async with engine.begin() as conn:
            await conn.run_sync(_run, url, "downgrade", "base")
            assert await conn.run_sync(_tables) == {"alembic_version"}
        async with engine.begin() as conn:
            await conn.run_sync(_run, url, "upgrade", "head")
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
