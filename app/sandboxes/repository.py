"""Every query on sandboxes and their events."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, Select, String, and_, bindparam, insert, or_, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app import context
from app.errors import BadRequest
from app.models import Sandbox, SandboxEvent, table_of
from app.tiers import LIST_CREDITS_PER_HOUR


def _scoped(team_id: str | None) -> Select[Sandbox]:
    query = select(Sandbox)
    return query if team_id is None else query.where(Sandbox.team_id == team_id)


async def get(
    session: AsyncSession, sandbox_id: str, *, team_id: str | None, for_update: bool = False
) -> Sandbox | None:
    """A sandbox visible to team_id (None: any team). Another team's sandbox is None, the
    same as one that does not exist, so a key never learns what other teams have."""
    query = _scoped(team_id).where(Sandbox.id == sandbox_id)
    if for_update:
        query = query.with_for_update()
    result: Sandbox | None = await session.scalar(query)
    return result


async def get_by_upstream_id(
    session: AsyncSession, upstream_id: str, *, team_id: str | None, for_update: bool = False
) -> Sandbox | None:
    query = _scoped(team_id).where(Sandbox.upstream_id == upstream_id)
    if for_update:
        query = query.with_for_update()
    result: Sandbox | None = await session.scalar(query)
    return result


def encode_cursor(row: Sandbox) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, sandbox_id = raw.split("|", 1)
        return datetime.fromisoformat(created), sandbox_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("The cursor is not valid.", kind="invalid-cursor") from exc


async def page(
    session: AsyncSession,
    *,
    team_id: str | None,
    owner: str | None,
    states: Sequence[str] | None,
    tier: str | None,
    tag: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Sandbox], str | None]:
    """Newest first, keyset-paginated on (created_at, id)."""
    query = _scoped(team_id)
    if owner is not None:
        query = query.where(Sandbox.owner == owner)
    if states:
        query = query.where(Sandbox.state.in_(states))
    if tier is not None:
        query = query.where(Sandbox.tier == tier)
    if tag is not None:
        query = query.where(Sandbox.tags.any(tag))  # type: ignore[arg-type]
    if cursor is not None:
        created, last_id = decode_cursor(cursor)
        query = query.where(
            or_(
                Sandbox.created_at < created,
                and_(Sandbox.created_at == created, Sandbox.id < last_id),
            )
        )
    query = query.order_by(Sandbox.created_at.desc(), Sandbox.id.desc()).limit(limit + 1)
    rows = list(await session.scalars(query))
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor


# Built once, on the table rather than the mapped class: compiled once, and no ORM bulk path.
_ADD_EVENT = insert(table_of(SandboxEvent))

# A new reservation and its first event, in one round trip.
_RESERVE = text(
    """
    WITH reserved AS (
        INSERT INTO sandboxes (
            id, team_id, owner, title, template, tier, hibernation_timeout_seconds, privacy,
            automatic_wakeup, tags, state, last_cause, operation_id, reservation_expires_at,
            managed, missed_polls, created_at, updated_at, state_changed_at
        ) VALUES (
            :id, :team_id, :owner, :title, :template, :tier, :hibernation_timeout_seconds,
            :privacy, :automatic_wakeup, :tags, :state, :last_cause, :operation_id,
            :reservation_expires_at, :managed, :missed_polls, :created_at, :updated_at,
            :state_changed_at
        )
        RETURNING id, state, last_cause
    )
    INSERT INTO sandbox_events (sandbox_id, from_state, to_state, cause, actor, request_id, detail)
    SELECT id, NULL, state, last_cause, :actor, :request_id, :detail FROM reserved
    """
).bindparams(bindparam("tags", type_=ARRAY(String)), bindparam("detail", type_=JSONB))
_RESERVED_COLUMNS = (
    "id", "team_id", "owner", "title", "template", "tier", "hibernation_timeout_seconds",
    "privacy", "automatic_wakeup", "tags", "state", "last_cause", "operation_id",
    "reservation_expires_at", "managed", "missed_polls", "created_at", "updated_at",
    "state_changed_at",
)  # fmt: skip


async def add_event(
    session: AsyncSession,
    sandbox: Sandbox,
    *,
    from_state: str | None,
    cause: str,
    actor: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    # A plain INSERT, not the unit of work: events are written once and never read back here.
    await session.execute(
        _ADD_EVENT,
        {
            "sandbox_id": sandbox.id,
            "from_state": from_state,
            "to_state": sandbox.state,
            "cause": cause,
            "actor": actor,
            "request_id": context.request_id.get(),
            "detail": detail or {},
        },
    )


async def insert_reserved(
    session: AsyncSession, sandbox: Sandbox, *, actor: str | None, detail: dict[str, Any]
) -> None:
    """Insert a new sandbox, every column given (it stays a plain object, never loaded), with
    the event of its first state."""
    values = {column: getattr(sandbox, column) for column in _RESERVED_COLUMNS}
    await session.execute(
        _RESERVE,
        {**values, "actor": actor, "request_id": context.request_id.get(), "detail": detail},
    )


# A start that succeeded, settled in one statement: the row leaves `starting` for `running`,
# and its usage interval (priced by the version in force, as `ledger.open_interval` does), its
# event and its audit row are written with it. It changes nothing unless the row is still
# `starting`, so a reservation the reconciler has settled meanwhile is left to the caller.
_SETTLE_RUNNING = text(
    """
    WITH settled AS (
        UPDATE sandboxes
           SET state = 'running', last_cause = :cause, upstream_id = :upstream_id,
               state_changed_at = :at, updated_at = :at, last_started_at = :at,
               reservation_expires_at = NULL
         WHERE id = :id AND state = 'starting'
        RETURNING *
    ),
    version AS (
        SELECT id, credits_per_hour FROM price_books WHERE effective_from <= :at
         ORDER BY effective_from DESC LIMIT 1
    ),
    opened AS (
        INSERT INTO usage_intervals
               (sandbox_id, team_id, owner, tier, credits_per_hour, price_book_id, started_at)
        SELECT s.id, s.team_id, s.owner, s.tier,
               coalesce((v.credits_per_hour ->> s.tier)::numeric, :list_rate), v.id, :at
          FROM settled s LEFT JOIN version v ON true
    ),
    event AS (
        INSERT INTO sandbox_events
               (sandbox_id, from_state, to_state, cause, actor, request_id, detail)
        SELECT id, 'starting', 'running', :cause, :actor, :request_id, :detail FROM settled
    ),
    audited AS (
        INSERT INTO audit_log
               (actor, team_id, action, target, cause, request_id, outcome, detail)
        SELECT :actor, team_id, :action, id, :cause, :request_id, 'ok', :detail FROM settled
    )
    SELECT * FROM settled
    """
).bindparams(bindparam("detail", type_=JSONB))


async def settle_running(
    conn: AsyncConnection,
    sandbox: Sandbox,
    *,
    upstream_id: str,
    at: datetime,
    actor: str | None,
    action: str,
    detail: dict[str, Any],
) -> Sandbox | None:
    """Settle a `starting` reservation as running (see `_SETTLE_RUNNING`); None, changing
    nothing, when the row is no longer `starting`."""
    row = (
        await conn.execute(
            _SETTLE_RUNNING,
            {
                "id": sandbox.id,
                "upstream_id": upstream_id,
                "at": at,
                "cause": "api",
                "actor": actor,
                "action": action,
                "request_id": context.request_id.get(),
                "detail": detail,
                "list_rate": LIST_CREDITS_PER_HOUR[sandbox.tier],
            },
        )
    ).first()
    return None if row is None else Sandbox(**row._mapping)


async def events(session: AsyncSession, sandbox_id: str) -> list[SandboxEvent]:
    rows = await session.scalars(
        select(SandboxEvent).where(SandboxEvent.sandbox_id == sandbox_id).order_by(SandboxEvent.id)
    )
    return list(rows)
