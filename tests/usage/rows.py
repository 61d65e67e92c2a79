"""Writing ledger rows straight into the database, in bulk, for usage tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.models import PriceBook, Sandbox, Team, UsageInterval
from tests.usage.reference import Interval, Version

Executor = AsyncConnection | AsyncSession


async def teams(conn: Executor, team_ids: Iterable[str], **limits: object) -> None:
    await conn.execute(insert(Team), [{"id": t, "name": t, **limits} for t in team_ids])


async def sandboxes(
    conn: Executor, owners: Mapping[str, tuple[str, str | None]], *, state: str = "running"
) -> None:
    """owners: sandbox id → (team id, owner)."""
    await conn.execute(
        insert(Sandbox),
        [
            {
                "id": sandbox_id,
                "team_id": team_id,
                "owner": owner,
                "template": "tpl",
                "tier": "Nano",
                "hibernation_timeout_seconds": 300,
                "state": state,
                "last_cause": "api",
                "operation_id": uuid.uuid4().hex,
            }
            for sandbox_id, (team_id, owner) in owners.items()
        ],
    )


async def versions(conn: Executor, rows: Iterable[Version]) -> None:
    values = [
        {
            "id": v.id,
            "effective_from": v.effective_from,
            "credits_per_hour": {tier: str(rate) for tier, rate in v.rates.items()},
            "credit_usd": v.credit_usd,
            "created_by": "test",
        }
        for v in rows
    ]
    if values:
        await conn.execute(insert(PriceBook), values)


async def intervals(conn: Executor, rows: Iterable[Interval]) -> None:
    values = [
        {
            "id": i.id,
            "sandbox_id": i.sandbox_id,
            "team_id": i.team_id,
            "owner": i.owner,
            "tier": i.tier,
            "credits_per_hour": i.credits_per_hour,
            "price_book_id": i.price_book_id,
            "started_at": i.started_at,
            "ended_at": i.ended_at,
            "end_cause": None if i.ended_at is None else "api",
        }
        for i in rows
    ]
    if values:
        await conn.execute(insert(UsageInterval), values)


LIST_VERSION = Version(
    id=1,
    effective_from=datetime.fromisoformat("1970-01-01T00:00:00+00:00"),
    rates={
        "Pico": Decimal(5),
        "Nano": Decimal(10),
        "Micro": Decimal(20),
        "Small": Decimal(40),
        "Medium": Decimal(80),
        "Large": Decimal(160),
        "XLarge": Decimal(320),
    },
    credit_usd=Decimal("0.01486"),
)
