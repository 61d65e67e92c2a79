"""Admin verbs on webhook endpoints and their deliveries (DESIGN §13).

Invariants:
- Each change and its audit row are written in the caller's transaction; nothing here commits.
  No secret reaches an audit row: the rows name the endpoint, what changed and, for a URL, its
  origin only (receivers' URLs often carry a token of their own in the path or the query).
- A secret is returned by `create` and `rotate_secret` only. A rotation moves the current
  secret to `previous_secret`, which signs beside the new one for `SECRET_OVERLAP`; a rotation
  inside an overlap replaces the previous secret with the current one, so at most two secrets
  ever sign. Rotations of one endpoint are serialised by its row lock: two at once would
  otherwise both demote the same secret, and one answer would show a secret never stored.
- A URL is checked against `CORRAL_WEBHOOK_ALLOWED_HOSTS` whenever it is set (`urls.check`).
- Deleting retires the endpoint (`deleted_at`) and cancels its pending deliveries; it is 404 to
  every route from then on, except a retry of one of its deliveries, which is 409.

A delivery moves

    pending ─┬─> succeeded            (an attempt got a 2xx: the worker)
             ├─> failed               (the retries ran out, or 410 Gone: the worker)
             └─> cancelled            (its endpoint was deleted: `delete`)
    succeeded | failed | pending ──retry──> pending, due now

`cancelled` is final. A retry keeps the attempts counted so far: the worker numbers the next
attempt after them and its schedule decides what a failure then does; a retry only makes the
delivery due at once. It leaves a claim alone (an attempt in flight finishes and is recorded),
and a disabled endpoint's deliveries wait until it is enabled: the worker claims for live,
enabled endpoints only.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from app import clock
from app.audit import service as audit
from app.errors import Conflict, NotFound, Unprocessable
from app.identity.actor import Actor
from app.models import WebhookEndpoint
from app.webhooks import repository, signing, urls
from app.webhooks.events import EVENT_TYPES
from app.webhooks.repository import DeliveryRow
from app.webhooks.schemas import WebhookCreate, WebhookPatch

# How long a rotated-out secret keeps signing beside the new one.
SECRET_OVERLAP = timedelta(hours=24)
ID_PREFIX = "whep_"


class WebhookNotFound(NotFound):
    kind = "webhook-not-found"

    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"Webhook endpoint {endpoint_id!r} does not exist.")


class DeliveryNotFound(NotFound):
    kind = "delivery-not-found"

    def __init__(self, endpoint_id: str, delivery_id: int) -> None:
        super().__init__(f"Webhook endpoint {endpoint_id!r} has no delivery {delivery_id}.")


class DeliveryNotRetryable(Conflict):
    """A cancelled delivery, or any delivery of a deleted endpoint: there is nowhere to send
    it."""

    kind = "delivery-not-retryable"

    def __init__(self, delivery_id: int, why: str) -> None:
        super().__init__(f"Delivery {delivery_id} cannot be retried: {why}.")


class UnknownEventType(Unprocessable):
    kind = "unknown-event-type"

    def __init__(self, unknown: Sequence[str]) -> None:
        super().__init__(
            f"Unknown event types: {sorted(unknown)}; the known ones are {sorted(EVENT_TYPES)}.",
            extra={"unknown": sorted(unknown)},
        )


class InvalidWebhookURL(Unprocessable):
    kind = "invalid-webhook-url"

    def __init__(self, reason: str) -> None:
        super().__init__(f"This URL cannot receive webhooks: {reason}.")


def new_endpoint_id() -> str:
    return ID_PREFIX + secrets.token_hex(12)


def _checked_url(url: str, allowed_hosts: Sequence[str]) -> str:
    try:
        urls.check(url, allowed_hosts)
    except urls.UnacceptableURL as exc:
        raise InvalidWebhookURL(str(exc)) from None
    return url


def _checked_events(events: Sequence[str]) -> list[str]:
    unknown = [event for event in events if event not in EVENT_TYPES]
    if unknown:
        raise UnknownEventType(unknown)
    return list(events)


def _origin(url: str) -> str:
    """What an audit row keeps of a URL: scheme, host and port, never a path or a query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def _live(session: AsyncSession, endpoint_id: str, *, lock: bool = False) -> WebhookEndpoint:
    endpoint = await repository.get_endpoint(session, endpoint_id, lock=lock)
    if endpoint is None or endpoint.deleted_at is not None:
        raise WebhookNotFound(endpoint_id)
    return endpoint


async def _record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    endpoint_id: str,
    detail: dict[str, Any] | None = None,
) -> None:
    await audit.record(
        session,
        actor=actor.key_id,
        action=action,
        team_id=None,
        target=endpoint_id,
        detail=detail,
    )


# --- endpoints -----------------------------------------------------------------------------


async def create(
    session: AsyncSession, actor: Actor, body: WebhookCreate, *, allowed_hosts: Sequence[str]
) -> WebhookEndpoint:
    """A new endpoint, enabled; its secret is on the returned row, for the answer only."""
    url = _checked_url(body.url, allowed_hosts)
    events = _checked_events(body.events)
    now = clock.now()
    endpoint = await repository.add_endpoint(
        session,
        WebhookEndpoint(
            id=new_endpoint_id(),
            url=url,
            events=events,
            description=body.description,
            secret=signing.new_secret(),
            enabled=True,
            created_at=now,
            updated_at=now,
        ),
    )
    await _record(
        session,
        actor,
        "webhook.create",
        endpoint.id,
        {"url": _origin(url), "events": events},
    )
    return endpoint


async def list_live(session: AsyncSession) -> list[WebhookEndpoint]:
    return await repository.live_endpoints(session)


async def get(session: AsyncSession, endpoint_id: str) -> WebhookEndpoint:
    return await _live(session, endpoint_id)


async def update(
    session: AsyncSession,
    actor: Actor,
    endpoint_id: str,
    body: WebhookPatch,
    *,
    allowed_hosts: Sequence[str],
) -> WebhookEndpoint:
    """Set the fields the request names. Enabling clears why Corral disabled it."""
    changes = body.model_dump(exclude_unset=True)
    required = [n for n in ("enabled", "events", "url") if n in changes and changes[n] is None]
    if required:
        raise Unprocessable(
            f"{', '.join(required)} cannot be null; send a value.", kind="null-not-allowed"
        )
    endpoint = await _live(session, endpoint_id, lock=True)
    detail: dict[str, Any] = {}
    if "url" in changes:
        endpoint.url = _checked_url(changes["url"], allowed_hosts)
        detail["url"] = _origin(endpoint.url)
    if "events" in changes:
        endpoint.events = _checked_events(changes["events"])
        detail["events"] = endpoint.events
    if "description" in changes:
        endpoint.description = detail["description"] = changes["description"]
    if "enabled" in changes:
        endpoint.enabled = detail["enabled"] = changes["enabled"]
        if endpoint.enabled:
            endpoint.disabled_reason = None
    endpoint.updated_at = clock.now()
    await session.flush()
    await _record(session, actor, "webhook.update", endpoint_id, detail)
    return endpoint


async def delete(session: AsyncSession, actor: Actor, endpoint_id: str) -> None:
    endpoint = await _live(session, endpoint_id, lock=True)
    now = clock.now()
    endpoint.deleted_at = endpoint.updated_at = now
    await session.flush()
    cancelled = await repository.cancel_pending(session, endpoint_id, now)
    await _record(session, actor, "webhook.delete", endpoint_id, {"cancelled": cancelled})


async def rotate_secret(session: AsyncSession, actor: Actor, endpoint_id: str) -> WebhookEndpoint:
    """A new secret; the current one keeps signing beside it for `SECRET_OVERLAP`."""
    endpoint = await _live(session, endpoint_id, lock=True)
    now = clock.now()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + SECRET_OVERLAP
    endpoint.secret = signing.new_secret()
    endpoint.updated_at = now
    await session.flush()
    await _record(
        session,
        actor,
        "webhook.rotate_secret",
        endpoint_id,
        {"previous_secret_expires_at": endpoint.previous_secret_expires_at.isoformat()},
    )
    return endpoint


# --- deliveries ----------------------------------------------------------------------------


async def deliveries(
    session: AsyncSession,
    endpoint_id: str,
    *,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[DeliveryRow], str | None]:
    await _live(session, endpoint_id)
    return await repository.deliveries_page(
        session, endpoint_id, status=status, limit=limit, cursor=cursor
    )


async def retry(
    session: AsyncSession, actor: Actor, endpoint_id: str, delivery_id: int
) -> DeliveryRow:
    """Make a delivery due now, whatever its state but cancelled."""
    # FOR SHARE: a delete waits for this retry (and then cancels the delivery) or this retry
    # waits for the delete (and then sees it): never a pending delivery of a deleted endpoint.
    endpoint = await repository.get_endpoint(session, endpoint_id, shared=True)
    if endpoint is None:
        raise WebhookNotFound(endpoint_id)
    delivery = await repository.get_delivery(session, endpoint_id, delivery_id, lock=True)
    if delivery is None:
        raise DeliveryNotFound(endpoint_id, delivery_id)
    if delivery.status == "cancelled":
        raise DeliveryNotRetryable(delivery_id, "it was cancelled")
    if endpoint.deleted_at is not None:
        raise DeliveryNotRetryable(delivery_id, "its endpoint was deleted")
    was = delivery.status
    delivery.status = "pending"
    delivery.next_attempt_at = clock.now()
    delivery.completed_at = None
    await session.flush()
    # The workers hear of it when this commits, as of a new event, not at their next poll.
    await repository.notify_workers(session)
    await _record(
        session, actor, "webhook.retry", endpoint_id, {"delivery_id": delivery_id, "was": was}
    )
    return await repository.delivery_row(session, delivery)
