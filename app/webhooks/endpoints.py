"""Admin routes of webhook endpoints and their deliveries (DESIGN §13). Admin keys only; every
change is written, with its audit row, by one function of `app.webhooks.service`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from app.deps import AdminActor, SessionDep, SettingsDep
from app.webhooks import service
from app.webhooks.repository import DeliveryRow
from app.webhooks.schemas import (
    MAX_DELIVERY_ID,
    WEBHOOK_ID_PATTERN,
    AttemptOut,
    DeliveryOut,
    DeliveryPage,
    DeliveryStatus,
    WebhookCreate,
    WebhookOut,
    WebhookPatch,
    WebhookSecretOut,
)

router = APIRouter(prefix="/v1/admin/webhooks", tags=["admin"])

WebhookPath = Annotated[str, Path(pattern=WEBHOOK_ID_PATTERN)]
DeliveryPath = Annotated[int, Path(ge=1, le=MAX_DELIVERY_ID)]


def _delivery(row: DeliveryRow) -> DeliveryOut:
    d = row.delivery
    return DeliveryOut.model_validate(
        {
            "id": d.id,
            "event_id": d.event_id,
            "event_type": row.event_type,
            "status": d.status,
            "attempts": d.attempts,
            "next_attempt_at": d.next_attempt_at,
            "last_status_code": d.last_status_code,
            "last_error": d.last_error,
            "created_at": d.created_at,
            "completed_at": d.completed_at,
            "attempt_log": [AttemptOut.model_validate(a) for a in row.attempts],
        }
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookSecretOut)
async def create_webhook(
    body: WebhookCreate, actor: AdminActor, session: SessionDep, settings: SettingsDep
) -> WebhookSecretOut:
    endpoint = await service.create(
        session, actor, body, allowed_hosts=settings.webhook_allowed_hosts
    )
    return WebhookSecretOut.model_validate(endpoint)


@router.get("", response_model=list[WebhookOut])
async def list_webhooks(actor: AdminActor, session: SessionDep) -> list[WebhookOut]:
    return [WebhookOut.model_validate(e) for e in await service.list_live(session)]


@router.get("/{webhook_id}", response_model=WebhookOut)
async def get_webhook(
    webhook_id: WebhookPath, actor: AdminActor, session: SessionDep
) -> WebhookOut:
    return WebhookOut.model_validate(await service.get(session, webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookOut)
async def patch_webhook(
    webhook_id: WebhookPath,
    body: WebhookPatch,
    actor: AdminActor,
    session: SessionDep,
    settings: SettingsDep,
) -> WebhookOut:
    endpoint = await service.update(
        session, actor, webhook_id, body, allowed_hosts=settings.webhook_allowed_hosts
    )
    return WebhookOut.model_validate(endpoint)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(webhook_id: WebhookPath, actor: AdminActor, session: SessionDep) -> None:
    await service.delete(session, actor, webhook_id)


@router.post("/{webhook_id}/rotate-secret", response_model=WebhookSecretOut)
async def rotate_secret(
    webhook_id: WebhookPath, actor: AdminActor, session: SessionDep
) -> WebhookSecretOut:
    return WebhookSecretOut.model_validate(await service.rotate_secret(session, actor, webhook_id))


@router.get("/{webhook_id}/deliveries", response_model=DeliveryPage)
async def list_deliveries(
    webhook_id: WebhookPath,
    actor: AdminActor,
    session: SessionDep,
    delivery_status: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> DeliveryPage:
    rows, next_cursor = await service.deliveries(
        session, webhook_id, status=delivery_status, limit=limit, cursor=cursor
    )
    return DeliveryPage(items=[_delivery(r) for r in rows], next_cursor=next_cursor)


@router.post("/{webhook_id}/deliveries/{delivery_id}/retry", response_model=DeliveryOut)
async def retry_delivery(
    webhook_id: WebhookPath, delivery_id: DeliveryPath, actor: AdminActor, session: SessionDep
) -> DeliveryOut:
    return _delivery(await service.retry(session, actor, webhook_id, delivery_id))
