"""Shapes of the webhook admin routes (DESIGN §13).

A secret leaves Corral in two answers only, `WebhookSecretOut` (creation and rotation); every
other answer is `WebhookOut`, which has no field a secret could reach. Event types are
documented as the enum they are; an unknown one is refused by the service, which names it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool

from app.inputs import RequestBody
from app.webhooks.events import EVENT_TYPES
from app.webhooks.urls import MAX_URL_LENGTH

DeliveryStatus = Literal["pending", "succeeded", "failed", "cancelled"]

# What the id of an endpoint looks like: `whep_` and lowercase letters and digits, at most 32
# characters in all, as the column holds.
WEBHOOK_ID_PATTERN = r"^whep_[a-z0-9]{1,27}$"
# webhook_deliveries.id is a bigint: an id or a cursor past it would fail in the driver.
MAX_DELIVERY_ID = 2**63 - 1


def _distinct(events: list[str] | None) -> list[str] | None:
    if events is not None and len(set(events)) != len(events):
        raise ValueError("each event type may appear once")
    return events


EventType = Annotated[
    str,
    Field(min_length=1, max_length=64, json_schema_extra={"enum": sorted(EVENT_TYPES)}),
]
EventTypes = Annotated[
    list[EventType],
    Field(min_length=1, max_length=len(EVENT_TYPES), json_schema_extra={"uniqueItems": True}),
    AfterValidator(_distinct),
]
URL = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="http or https, without credentials or a fragment; the host must be in "
        "CORRAL_WEBHOOK_ALLOWED_HOSTS when that is set.",
    ),
]
Description = Annotated[str, Field(max_length=500)]


class WebhookCreate(RequestBody):
    url: URL
    events: EventTypes
    description: Description | None = None


class WebhookPatch(RequestBody):
    """The fields to change; null clears the description and is refused for the others."""

    url: URL | None = None
    events: EventTypes | None = None
    description: Description | None = None
    # Strict: "no" or "0" for a switch is a client's mistake, not a choice.
    enabled: StrictBool | None = None


class WebhookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None = Field(
        description="Why Corral disabled it (the receiver answered 410 Gone); cleared when an "
        "admin enables it again."
    )
    created_at: datetime
    updated_at: datetime
    previous_secret_expires_at: datetime | None = Field(
        description="Until when the secret before the last rotation still signs deliveries "
        "beside the current one."
    )


class WebhookSecretOut(WebhookOut):
    secret: str = Field(
        description="The `whsec_` signing secret, for the standardwebhooks library. It is shown "
        "only in this answer."
    )


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempt: int = Field(description="1 for the first try of the delivery.")
    at: datetime
    status_code: int | None = Field(description="The receiver's answer; null when none came.")
    duration_ms: int
    error: str | None


class DeliveryOut(BaseModel):
    id: int
    event_id: str = Field(description="The `webhook-id` header of every attempt.")
    event_type: str
    status: DeliveryStatus
    attempts: int = Field(description="How many attempts were made.")
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    completed_at: datetime | None
    attempt_log: list[AttemptOut] = Field(description="Every attempt, in the order made.")


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None
