"""The audit log: one row per mutating call and per automatic transition.

Rows are written in the same transaction as the change they describe, so a change without
its audit row (or the reverse) cannot be committed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import context
from app.models import AuditEntry, Sandbox, table_of

# Built once, on the table rather than the mapped class: compiled once, and no ORM bulk path.
_RECORD = insert(table_of(AuditEntry))


async def record(
    session: AsyncSession,
    *,
    actor: str | None,
    action: str,
    team_id: str | None,
    target: str | None,
    cause: str = "api",
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
) -> None:
    await session.execute(
        _RECORD,
        {
            "actor": actor,
            "team_id": team_id,
            "action": action,
            "target": target,
            "cause": cause,
            "request_id": context.request_id.get(),
            "outcome": outcome,
            "detail": detail or {},
        },
    )


async def record_sandbox(
    session: AsyncSession,
    sandbox: Sandbox,
    *,
    actor: str | None,
    action: str,
    cause: str = "api",
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
) -> None:
    """`record` for an action on one sandbox: its team and id are the row's."""
    await record(
        session,
        actor=actor,
        action=action,
        team_id=sandbox.team_id,
        target=sandbox.id,
        cause=cause,
        outcome=outcome,
        detail=detail,
    )
