"""The delivery tests' receiver process and the rows they deliver: endpoints inserted directly,
events written by the outbox writer (`app.webhooks.events.emit_many`) in a transaction."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import transaction
from app.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.webhooks import events, signing
from tests.webhooks.receiver import Receiver, running

# The receiver verifies with both, in this order (its log's `verified_with`).
SECRET = signing.new_secret()
NEW_SECRET = signing.new_secret()
EVENT_TYPE = "reconcile.drift_found"
OTHER_TYPE = "sandbox.unmanaged_found"
# A generous bound for an outcome to appear; nothing is asserted about how fast it does.
WAIT_SECONDS = 30.0


@pytest.fixture(scope="session")
def webhook_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    with running([SECRET, NEW_SECRET], tmp_path_factory.mktemp("receiver")) as receiver:
        yield receiver


async def add_endpoint(
    sessions: async_sessionmaker[AsyncSession],
    url: str,
    *,
    types: Sequence[str] = (EVENT_TYPE,),
    secret: str = SECRET,
    previous_secret: str | None = None,
    previous_secret_expires_at: datetime | None = None,
) -> str:
    endpoint_id = f"whep_{uuid.uuid4().hex[:20]}"
    async with transaction(sessions) as session:
        session.add(
            WebhookEndpoint(
                id=endpoint_id,
                url=url,
                events=list(types),
                secret=secret,
                previous_secret=previous_secret,
                previous_secret_expires_at=previous_secret_expires_at,
                enabled=True,
            )
        )
    return endpoint_id


async def emit(
    sessions: async_sessionmaker[AsyncSession], count: int = 1, event_type: str = EVENT_TYPE
) -> list[str]:
    """Write `count` events in one transaction; their ids, in order."""
    batch = [events.Event(type=event_type, data={"n": n}) for n in range(count)]
    async with transaction(sessions) as session:
        written = await events.emit_many(session, batch)
    assert written == [e.id for e in batch]
    return written


async def deliveries(
    sessions: async_sessionmaker[AsyncSession], endpoint_id: str
) -> list[WebhookDelivery]:
    async with transaction(sessions) as session:
        found = await session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .order_by(WebhookDelivery.id)
        )
        return list(found)


async def attempts_of(
    sessions: async_sessionmaker[AsyncSession], delivery_id: int
) -> list[WebhookAttempt]:
    async with transaction(sessions) as session:
        found = await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id == delivery_id)
            .order_by(WebhookAttempt.id)
        )
        return list(found)


async def endpoint(sessions: async_sessionmaker[AsyncSession], endpoint_id: str) -> WebhookEndpoint:
    async with transaction(sessions) as session:
        found = await session.get(WebhookEndpoint, endpoint_id)
        assert found is not None
        return found


async def wait_for(
    condition: Callable[[], Awaitable[bool]], what: str, bound: float = WAIT_SECONDS
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while not await condition():
        if loop.time() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)
