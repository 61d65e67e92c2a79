"""The event outbox (DESIGN §13): an event is written in the transaction of what caused it.

`emit` inserts the event and, in the same statement, one pending delivery for every live,
enabled endpoint subscribed to its type, and notifies the delivery workers (`NOTIFY` is
transactional: they hear of it only once it commits, and never of an event rolled back). An
event that happens once per period carries a `dedupe_key` naming its period: a second emit of
the same key, from any replica, is a no-op. So "once per month per threshold" is a unique
index, not a check that two replicas could both pass.

The body every receiver gets is `{type, timestamp, data}`; `timestamp` is when it happened on
Corral's clock (DESIGN §12). `data` is plain JSON: figures are strings of decimals (never
floats, so a receiver sums exactly what Corral billed), and `link` is the path of the admin
route that shows more.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app import clock, unnest

Database = AsyncSession | AsyncConnection

# The channel delivery workers LISTEN on.
CHANNEL = "corral_webhooks"

# Every event type, with what it says. An endpoint subscribes to a subset of these.
EVENT_TYPES: dict[str, str] = {
    "budget.threshold_crossed": "A team's month-to-date spend crossed one of its thresholds.",
    "budget.exhausted": "A team's month-to-date spend reached its monthly budget.",
    "budget.projected_exhaustion": (
        "At its current burn rate a team's budget runs out before the month ends."
    ),
    "org.plan_headroom_low": "Less than 10 % of the organisation's plan is free.",
    "org.plan_full": "Every VM the organisation's plan allows is live.",
    "sandbox.hibernated_by_budget": "A sandbox was hibernated because its team's budget ran out.",
    "sandbox.unmanaged_found": (
        "The reconciler found a VM running upstream that Corral did not start."
    ),
    "reconcile.drift_found": "The reconciler found and repaired a difference with the upstream.",
}


@dataclass(frozen=True)
class Event:
    type: str
    data: Mapping[str, Any]
    team_id: str | None = None
    # Names the period this event happens once in; None: every emit is a new event.
    dedupe_key: str | None = None
    at: datetime | None = None
    id: str = field(default_factory=lambda: new_event_id())


def new_event_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def body(event_type: str, occurred_at: datetime, data: Mapping[str, Any]) -> str:
    """The JSON a receiver gets (and the signature covers), byte for byte."""
    return json.dumps(
        {"type": event_type, "timestamp": occurred_at.isoformat(), "data": data},
        separators=(",", ":"),
        sort_keys=True,
    )


_COLUMNS = {
    "id": "varchar",
    "type": "varchar",
    "team_id": "varchar",
    "dedupe_key": "varchar",
    "data": "jsonb",
    "occurred_at": "timestamptz",
}

_EMIT = text(
    f"""
    WITH e AS (
        {unnest.insert("webhook_events", _COLUMNS)}
        ON CONFLICT (dedupe_key) DO NOTHING
        RETURNING id, type
    ), d AS (
        INSERT INTO webhook_deliveries (event_id, endpoint_id, status, attempts, next_attempt_at,
                                        created_at)
        SELECT e.id, w.id, 'pending', 0, :now, :now
          FROM e JOIN webhook_endpoints w
            ON e.type = ANY(w.events) AND w.enabled AND w.deleted_at IS NULL
        RETURNING 1
    )
    SELECT e.id, (SELECT count(*) FROM d) AS deliveries,
           CASE WHEN (SELECT count(*) FROM d) > 0 THEN pg_notify('{CHANNEL}', '') END
      FROM e
    """  # noqa: S608 (the column names are constants)
)


async def emit_many(db: Database, events: Sequence[Event]) -> list[str]:
    """Write events in the caller's transaction; returns the ids of those written (an event
    whose dedupe key was already used is not)."""
    if not events:
        return []
    for event in events:
        if event.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event.type!r}")
    now = clock.now()
    rows = [
        {
            "id": e.id,
            "type": e.type,
            "team_id": e.team_id,
            "dedupe_key": e.dedupe_key,
            "data": dict(e.data),
            "occurred_at": e.at or now,
        }
        for e in events
    ]
    result = await db.execute(_EMIT, {**unnest.params(_COLUMNS, rows), "now": now})
    return [row.id for row in result]


async def emit(db: Database, event: Event) -> bool:
    """Write one event in the caller's transaction; False when its dedupe key was used."""
    return bool(await emit_many(db, [event]))
