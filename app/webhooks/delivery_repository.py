"""The delivery worker's statements: claim due deliveries, record attempts, release claims.

Each is one statement (its writes are CTEs), so it is atomic on its own and runs on an
autocommit connection: a claim's row locks last only as long as the statement, never across
the HTTP call that follows it.

A claim is a lease on the wall clock (`claimed_until`): its value is also the claim's token.
A failed attempt is written only by the holder of the current lease, so a replica that lost
its lease (it was paused, its database writes stalled) cannot overwrite what the replica that
re-claimed the delivery is doing; a success is written by whoever got one, because the receiver
has the event whichever replica sent it. Nothing is written to a delivery that is no longer
pending: a late answer never resurrects a delivery that succeeded, failed or was cancelled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app import unnest

Database = AsyncSession | AsyncConnection


@dataclass(frozen=True)
class Claimed:
    """A delivery this replica holds until `claimed_until`, with what sending it needs."""

    id: int
    endpoint_id: str
    # Attempts made before this one.
    attempts: int
    claimed_until: datetime
    event_id: str
    event_type: str
    data: Mapping[str, Any]
    occurred_at: datetime
    url: str
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None


# For each live endpoint with a free slot, its oldest due deliveries up to its free slots, so
# that a slow or failing endpoint's backlog fills only its own slots, never the batch; an
# endpoint whose slots are all taken is not looked at. SKIP LOCKED passes over rows another
# replica is claiming, and the claim condition is re-checked on each row as it is now, so a
# row claimed (and committed) since this statement's snapshot is passed over too. The ranking
# after the lock is only for the batch limit: round robin over the endpoints.
#
# Each endpoint's look-up reads only the rows it returns, through
# `ix_webhook_deliveries_pending_endpoint` (endpoint_id, next_attempt_at, id) WHERE pending.
# Without it every due delivery of every endpoint is read, so one endpoint's backlog slows
# every claim and everyone's deliveries with it: 18 ms a claim against 0.65 ms on 50,000 due
# rows (bench/webhooks.py --no-pending-index shows the schema without it).
_CLAIM = text(
    """
    WITH busy AS (
        SELECT * FROM unnest(CAST(:busy_ids AS varchar[]), CAST(:busy_counts AS int[]))
            AS b(endpoint_id, in_flight)
    ), candidates AS (
        SELECT c.id, c.endpoint_id, c.next_attempt_at
          FROM webhook_endpoints w
          LEFT JOIN busy b ON b.endpoint_id = w.id
          CROSS JOIN LATERAL (
              SELECT d.id, d.endpoint_id, d.next_attempt_at
                FROM webhook_deliveries d
               WHERE d.endpoint_id = w.id AND d.status = 'pending'
                 AND d.next_attempt_at <= :now
                 AND (d.claimed_until IS NULL OR d.claimed_until < :wall)
               ORDER BY d.next_attempt_at, d.id
               LIMIT :per_endpoint - coalesce(b.in_flight, 0)
                 FOR UPDATE OF d SKIP LOCKED
          ) c
         WHERE w.enabled AND w.deleted_at IS NULL
           AND coalesce(b.in_flight, 0) < :per_endpoint
    ), picked AS (
        SELECT id FROM (
            SELECT id, next_attempt_at,
                   row_number() OVER (PARTITION BY endpoint_id
                                      ORDER BY next_attempt_at, id) AS rank
              FROM candidates
        ) ranked
         ORDER BY rank, next_attempt_at, id
         LIMIT :limit
    )
    UPDATE webhook_deliveries d SET claimed_until = :lease
      FROM picked p, webhook_events e, webhook_endpoints w
     WHERE d.id = p.id AND e.id = d.event_id AND w.id = d.endpoint_id
    RETURNING d.id, d.endpoint_id, d.attempts, d.claimed_until, e.id AS event_id,
              e.type AS event_type, e.data, e.occurred_at, w.url, w.secret, w.previous_secret,
              w.previous_secret_expires_at
    """
).columns(
    id=Integer,
    endpoint_id=String,
    attempts=Integer,
    claimed_until=DateTime(timezone=True),
    event_id=String,
    event_type=String,
    data=JSONB,
    occurred_at=DateTime(timezone=True),
    url=String,
    secret=String,
    previous_secret=String,
    previous_secret_expires_at=DateTime(timezone=True),
)


async def claim(
    db: Database,
    *,
    now: datetime,
    wall: datetime,
    lease_until: datetime,
    per_endpoint: int,
    in_flight: Mapping[str, int],
    limit: int,
) -> list[Claimed]:
    """Claim up to `limit` deliveries due at `now` (Corral's clock) whose lease has passed at
    `wall`, at most `per_endpoint` minus `in_flight[endpoint]` per endpoint, until
    `lease_until` (wall clock). Commits with the caller's connection or transaction."""
    if limit <= 0:
        return []
    busy = {endpoint: count for endpoint, count in in_flight.items() if count > 0}
    result = await db.execute(
        _CLAIM,
        {
            "busy_ids": list(busy),
            "busy_counts": list(busy.values()),
            "now": now,
            "wall": wall,
            "lease": lease_until,
            "per_endpoint": per_endpoint,
            "limit": limit,
        },
    )
    return [Claimed(**row._mapping) for row in result]


@dataclass(frozen=True)
class Recorded:
    """What one attempt ends in, as written to its delivery and its attempt row."""

    # pending (to be retried), succeeded or failed
    status: str
    at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    next_attempt_at: datetime | None
    completed_at: datetime | None
    # Set when the receiver asked not to be called again (410 Gone).
    disabled_reason: str | None = None


_RESULT_COLUMNS = {
    "id": "bigint",
    "lease": "timestamptz",
    "status": "varchar",
    "at": "timestamptz",
    "duration_ms": "int",
    "status_code": "int",
    "error": "varchar",
    "next_attempt_at": "timestamptz",
    "completed_at": "timestamptz",
    "disabled_reason": "varchar",
}

# Set-based, for one result or many (the worker writes what finished while its last write
# ran): the attempt numbers come from the deliveries' own counts, and an endpoint that
# answered 410 is disabled with its earliest reason.
_RECORD = text(
    f"""
    WITH r AS (
        SELECT * FROM {unnest.arrays(_RESULT_COLUMNS)}
    ), d AS (
        UPDATE webhook_deliveries d
           SET attempts = d.attempts + 1, status = r.status, next_attempt_at = r.next_attempt_at,
               completed_at = r.completed_at, last_status_code = r.status_code,
               last_error = r.error, claimed_until = NULL
          FROM r
         WHERE d.id = r.id AND d.status = 'pending'
           AND (r.status = 'succeeded' OR d.claimed_until = r.lease)
        RETURNING d.id, d.attempts, d.endpoint_id
    ), a AS (
        INSERT INTO webhook_attempts (delivery_id, attempt, at, duration_ms, status_code, error)
        SELECT d.id, d.attempts, r.at, r.duration_ms, r.status_code, r.error
          FROM d JOIN r ON r.id = d.id
    ), gone AS (
        SELECT DISTINCT ON (d.endpoint_id) d.endpoint_id, r.disabled_reason, r.at
          FROM d JOIN r ON r.id = d.id
         WHERE r.disabled_reason IS NOT NULL
         ORDER BY d.endpoint_id, r.at
    ), w AS (
        UPDATE webhook_endpoints w
           SET enabled = false, disabled_reason = gone.disabled_reason, updated_at = gone.at
          FROM gone
         WHERE w.id = gone.endpoint_id AND w.enabled
    )
    SELECT id FROM d
    """  # noqa: S608 (the column names are constants)
)


async def record(db: Database, results: Sequence[tuple[Claimed, Recorded]]) -> set[int]:
    """Write attempts and their deliveries' new states; returns the ids of the deliveries
    written. One that had moved on without this replica (no longer pending, or a failure
    after its lease was taken over) is not written at all. A delivery appears once."""
    if not results:
        return set()
    rows = [
        {
            "id": claimed.id,
            "lease": claimed.claimed_until,
            "status": outcome.status,
            "at": outcome.at,
            "duration_ms": outcome.duration_ms,
            "status_code": outcome.status_code,
            "error": outcome.error,
            "next_attempt_at": outcome.next_attempt_at,
            "completed_at": outcome.completed_at,
            "disabled_reason": outcome.disabled_reason,
        }
        for claimed, outcome in results
    ]
    written = await db.scalars(_RECORD, unnest.params(_RESULT_COLUMNS, rows))
    return set(written)


_RELEASE = text(
    """
    UPDATE webhook_deliveries d SET claimed_until = NULL
      FROM unnest(CAST(:ids AS bigint[]), CAST(:leases AS timestamptz[])) AS c(id, lease)
     WHERE d.id = c.id AND d.status = 'pending' AND d.claimed_until = c.lease
    """
)


async def release(db: Database, claims: Sequence[Claimed]) -> None:
    """Give claims back before their lease ends (a worker stopping mid-attempt), so another
    replica takes them at once; a claim already taken over is left alone."""
    if not claims:
        return
    await db.execute(
        _RELEASE,
        {"ids": [c.id for c in claims], "leases": [c.claimed_until for c in claims]},
    )
