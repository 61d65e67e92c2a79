"""Queries on browser-token signing keys (ids, salts and lifetimes; never a secret)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import BrowserTokenKey


async def lock(session: AsyncSession) -> None:
    """Serialise rotations and the first key's creation across replicas, for the rest of the
    transaction; readers are not blocked."""
    await session.execute(text("LOCK TABLE browser_token_keys IN SHARE ROW EXCLUSIVE MODE"))


async def verifying(session: AsyncSession, at: datetime) -> Sequence[BrowserTokenKey]:
    """The keys not retired at `at`, pending ones included (they verify before they sign)."""
    return (
        await session.scalars(
            select(BrowserTokenKey).where(
                or_(BrowserTokenKey.retires_at.is_(None), BrowserTokenKey.retires_at > at)
            )
        )
    ).all()


async def every(session: AsyncSession) -> Sequence[BrowserTokenKey]:
    return (await session.scalars(select(BrowserTokenKey))).all()


async def add(session: AsyncSession, key: BrowserTokenKey) -> None:
    session.add(key)
    await session.flush()
