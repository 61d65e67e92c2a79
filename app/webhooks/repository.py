"""Every query of the webhook admin routes: endpoints, their deliveries and attempts."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import InvalidCursor
from app.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from app.webhooks import events
from app.webhooks.schemas import MAX_DELIVERY_ID

_CURSOR_PREFIX = "delivery:"


@dataclass(frozen=True)
class DeliveryRow:
    """A delivery with the type of its event and its attempts, oldest first."""

    delivery: WebhookDelivery
    event_type: str
    attempts: list[WebhookAttempt]


async def add_endpoint(session: AsyncSession, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    session.add(endpoint)
    await session.flush()
    return endpoint


async def get_endpoint(
    session: AsyncSession, endpoint_id: str, *, lock: bool = False, shared: bool = False
) -> WebhookEndpoint | None:
    """The endpoint, deleted or not. `lock`: FOR UPDATE, for a change to it; `shared`: FOR
    SHARE, so that it is not deleted under a change to one of its deliveries."""
    query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    if lock or shared:
        # The locked row as it is now: a copy the session loaded earlier may be stale.
        query = query.with_for_update(read=shared and not lock).execution_options(
            populate_existing=True
        )
    found: WebhookEndpoint | None = await session.scalar(query)
    return found


async def live_endpoints(session: AsyncSession) -> list[WebhookEndpoint]:
    rows = await session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.deleted_at.is_(None))
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    )
    return list(rows)


async def cancel_pending(session: AsyncSession, endpoint_id: str, at: datetime) -> int:
    """Cancel the endpoint's pending deliveries; how many there were."""
    result = await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "pending")
        .values(status="cancelled", next_attempt_at=None, completed_at=at)
        .returning(WebhookDelivery.id)
    )
    return len(result.all())


async def get_delivery(
    session: AsyncSession, endpoint_id: str, delivery_id: int, *, lock: bool = False
) -> WebhookDelivery | None:
    """One delivery of the endpoint; another endpoint's is None, as a missing one."""
    query = select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint_id
    )
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    found: WebhookDelivery | None = await session.scalar(query)
    return found


def encode_cursor(delivery_id: int) -> str:
    raw = f"{_CURSOR_PREFIX}{delivery_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        digits = raw.removeprefix(_CURSOR_PREFIX)
        # Only what encode_cursor writes: plain digits (int() would take "+1", " 1", "1_0").
        if not raw.startswith(_CURSOR_PREFIX) or not digits.isascii() or not digits.isdigit():
            raise ValueError(raw)
        delivery_id = int(digits)
    except (ValueError, UnicodeDecodeError) as exc:  # binascii.Error is a ValueError
        raise InvalidCursor() from exc
    if not 1 <= delivery_id <= MAX_DELIVERY_ID:
        raise InvalidCursor()
    return delivery_id


async def deliveries_page(
    session: AsyncSession,
    endpoint_id: str,
    *,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[DeliveryRow], str | None]:
    """The endpoint's deliveries, newest first, keyset-paginated on the id (ids grow with
    insertion, so a walk is stable while events arrive: new ones come before its first page)."""
    query = (
        select(WebhookDelivery, WebhookEvent.type)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.endpoint_id == endpoint_id)
    )
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if cursor is not None:
        query = query.where(WebhookDelivery.id < decode_cursor(cursor))
    query = query.order_by(WebhookDelivery.id.desc()).limit(limit + 1)
    found = (await session.execute(query)).all()
    next_cursor = encode_cursor(found[limit - 1][0].id) if len(found) > limit else None
    found = found[:limit]
    attempts = await _attempts_of(session, [delivery.id for delivery, _ in found])
    rows = [
        DeliveryRow(
            delivery=delivery, event_type=event_type, attempts=attempts.get(delivery.id, [])
        )
        for delivery, event_type in found
    ]
    return rows, next_cursor


async def delivery_row(session: AsyncSession, delivery: WebhookDelivery) -> DeliveryRow:
    """`delivery` with its event's type and its attempts."""
    event_type = await session.scalar(
        select(WebhookEvent.type).where(WebhookEvent.id == delivery.event_id)
    )
    assert event_type is not None, "a delivery's event is never deleted"
    attempts = await _attempts_of(session, [delivery.id])
    return DeliveryRow(
        delivery=delivery, event_type=event_type, attempts=attempts.get(delivery.id, [])
    )


async def _attempts_of(
    session: AsyncSession, delivery_ids: Sequence[int]
) -> dict[int, list[WebhookAttempt]]:
    if not delivery_ids:
        return {}
    rows = await session.scalars(
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id.in_(delivery_ids))
        .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt, WebhookAttempt.id)
    )
    attempts: dict[int, list[WebhookAttempt]] = {}
    for attempt in rows:
        attempts.setdefault(attempt.delivery_id, []).append(attempt)
    return attempts


async def notify_workers(session: AsyncSession) -> None:
    """Wake every replica's delivery worker once the caller's transaction commits."""
    await session.execute(select(func.pg_notify(events.CHANNEL, "")))
