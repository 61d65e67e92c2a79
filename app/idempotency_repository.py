"""Every query on idempotency records (`app.idempotency` holds the rules)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import IdempotencyRecord


@dataclass(frozen=True)
class RecordKey:
    """What names a record: the API key, the route, the client's Idempotency-Key."""

    key_id: str
    route: str
    idempotency_key: str

    def where(self) -> ColumnElement[bool]:
        return and_(
            IdempotencyRecord.key_id == self.key_id,
            IdempotencyRecord.route == self.route,
            IdempotencyRecord.idempotency_key == self.idempotency_key,
        )


async def delete_expired(session: AsyncSession, key: RecordKey, at: datetime) -> None:
    await session.execute(
        delete(IdempotencyRecord).where(key.where(), IdempotencyRecord.expires_at <= at)
    )


async def claim(
    session: AsyncSession, key: RecordKey, *, fingerprint: bytes, expires_at: datetime
) -> bool:
    """Insert the in-flight record; False when one with this key already exists."""
    inserted = await session.scalar(
        insert(IdempotencyRecord)
        .values(
            key_id=key.key_id,
            route=key.route,
            idempotency_key=key.idempotency_key,
            fingerprint=fingerprint,
            expires_at=expires_at,
        )
        .on_conflict_do_nothing()
        .returning(IdempotencyRecord.key_id)
    )
    return inserted is not None


async def get(session: AsyncSession, key: RecordKey) -> IdempotencyRecord | None:
    return await session.scalar(select(IdempotencyRecord).where(key.where()))


async def store(
    session: AsyncSession, key: RecordKey, status: int, payload: dict[str, Any]
) -> None:
    await session.execute(
        update(IdempotencyRecord).where(key.where()).values(status=status, response=payload)
    )


async def forget(session: AsyncSession, key: RecordKey) -> None:
    await session.execute(delete(IdempotencyRecord).where(key.where()))
