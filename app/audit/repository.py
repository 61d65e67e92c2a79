"""Audit-log queries: filtered, newest first, keyset-paginated on the row id."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import InvalidCursor
from app.models import AuditEntry

_CURSOR_PREFIX = "audit:"
# audit_log.id is a bigint: a cursor past it would fail in the driver, not match nothing.
_MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    team_id: str | None = None
    action: str | None = None
    target: str | None = None
    cause: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith(_CURSOR_PREFIX):
            raise ValueError(raw)
        digits = raw.removeprefix(_CURSOR_PREFIX)
        # Only what encode_cursor writes: plain digits (int() would take "+1", " 1", "1_0").
        if not digits.isascii() or not digits.isdigit():
            raise ValueError(raw)
        entry_id = int(digits)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor() from exc
    if not 1 <= entry_id <= _MAX_ID:
        raise InvalidCursor()
    return entry_id


async def page(
    session: AsyncSession, where: AuditFilter, *, limit: int, cursor: str | None
) -> tuple[list[AuditEntry], str | None]:
    """Rows matching every given filter, newest first; `from` is inclusive, `to` exclusive.

    Ids grow with insertion, so paging on the id alone is stable while rows are being added:
    new rows appear before the first page, never inside a walk."""
    query = select(AuditEntry)
    exact = {
        AuditEntry.actor: where.actor,
        AuditEntry.team_id: where.team_id,
        AuditEntry.action: where.action,
        AuditEntry.target: where.target,
        AuditEntry.cause: where.cause,
        AuditEntry.outcome: where.outcome,
    }
    for column, value in exact.items():
        if value is not None:
            query = query.where(column == value)
    if where.since is not None:
        query = query.where(AuditEntry.at >= where.since)
    if where.until is not None:
        query = query.where(AuditEntry.at < where.until)
    if cursor is not None:
        query = query.where(AuditEntry.id < decode_cursor(cursor))
    query = query.order_by(AuditEntry.id.desc()).limit(limit + 1)
    rows = list(await session.scalars(query))
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor
