"""Every table of Corral. The schema itself is owned by the Alembic migrations."""

from app.models.audit import AuditEntry
from app.models.base import Base, table_of
from app.models.browser import BrowserSession, BrowserTokenKey
from app.models.idempotency import IdempotencyRecord
from app.models.metering import UpstreamWork
from app.models.org import OrgPlan
from app.models.pricing import PriceBook
from app.models.reconcile import Drift, ReconcileRun
from app.models.sandbox import Sandbox, SandboxEvent
from app.models.simclock import ClockState, Replica
from app.models.team import ApiKey, Team
from app.models.templates import ForkTemplate
from app.models.usage import UsageInterval
from app.models.webhooks import (
    AlertCondition,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

__all__ = [
    "AlertCondition",
    "ApiKey",
    "AuditEntry",
    "Base",
    "BrowserSession",
    "BrowserTokenKey",
    "ClockState",
    "Drift",
    "ForkTemplate",
    "IdempotencyRecord",
    "OrgPlan",
    "PriceBook",
    "ReconcileRun",
    "Replica",
    "Sandbox",
    "SandboxEvent",
    "Team",
    "UpstreamWork",
    "UsageInterval",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "table_of",
]
