"""Queries the facade needs beyond the sandbox repository: the upstream's page-numbered list,
the running VMs and the limits `/vm/running` states beside them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, any_, func, literal, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.compat.schemas import Viewed
from app.models import Sandbox
from app.sandboxes.states import FINAL
from app.usage.repository import BOOK_MARK

_SANDBOXES = Sandbox.__table__


def _visible(team_id: str, owner: str | None) -> list[ColumnElement[bool]]:
    c = _SANDBOXES.c
    conditions = [
        c.team_id == team_id,
        c.upstream_id.is_not(None),
        # The upstream would not list these: never created there, or deleted.
        c.state.not_in(FINAL),
    ]
    if owner is not None:
        conditions.append(c.owner == owner)
    return conditions


# What the facade's list states of each sandbox (`schemas.sandbox_view`), read as plain rows,
# on table columns throughout: loading whole `Sandbox` objects took 3.02 ms of CPU for a page
# of 20 against 2.70 ms for these (a driver looping bench/overhead.py's `list 20 (/csb)` call).
_VIEWED = (
    _SANDBOXES.c.upstream_id,
    _SANDBOXES.c.title,
    _SANDBOXES.c.privacy,
    _SANDBOXES.c.tags,
    _SANDBOXES.c.created_at,
    _SANDBOXES.c.updated_at,
)


async def page(
    session: AsyncSession,
    *,
    team_id: str,
    owner: str | None,
    tags: Sequence[str],
    running_only: bool,
    order_by: str,
    descending: bool,
    page: int,
    page_size: int,
) -> tuple[Sequence[Viewed], int]:
    """One page (1-based) and the total count. Ties are broken by id, so pages are stable.

    The count is a statement of its own. Riding on the page as `count(*) OVER ()` saves a
    round trip for a small team, but Postgres then reads every matching row in full before
    the offset: at 10,000 sandboxes a page took 17.2 ms that way against 11.9 ms for the two
    statements (at 2,000, 7.2 against 7.7)."""
    c = _SANDBOXES.c
    conditions = _visible(team_id, owner)
    # Every tag asked for must be on the sandbox.
    conditions.extend(literal(tag) == any_(c.tags) for tag in tags)
    if running_only:
        conditions.append(c.state == "running")
    total = await session.scalar(select(func.count()).select_from(_SANDBOXES).where(*conditions))
    column = c.created_at if order_by == "inserted_at" else c.updated_at
    ordering = (column.desc(), c.id.desc()) if descending else (column.asc(), c.id)
    rows = await session.execute(
        select(*_VIEWED)
        .where(*conditions)
        .order_by(*ordering)
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    return rows.all(), int(total or 0)


# `/vm/running` in one round trip and without a lock (a listing's figures, not a decision):
# the team's own cap (NULL without one, or without the team), the org's limits and the price
# book's mark, on every row, and beside them what the listing states of each running VM, read
# as plain columns. One row with NULL VM columns when none runs. Loading the VMs as whole
# `Sandbox` objects, and the limits by a statement of their own, took 2.66 ms of CPU a call
# against 2.18 ms for the columns alone, and 1.65 ms for this (a driver looping the call as
# bench/overhead.py's `running (/csb)` row does).
_RUNNING = """
    SELECT t.max_concurrent AS team_limit, p.plan_limit, p.observed_limit, {book_mark},
           r.upstream_id, r.tier, r.upstream_last_active_at, r.last_started_at
      FROM org_plan p
      LEFT JOIN teams t ON t.id = :team
      LEFT JOIN LATERAL (
            SELECT s.id, s.upstream_id, s.tier, s.upstream_last_active_at, s.last_started_at
              FROM sandboxes s
             WHERE s.team_id = :team AND s.state = 'running' AND s.upstream_id IS NOT NULL
                   {owner}
           ) r ON true
     WHERE p.id = 1
     ORDER BY r.last_started_at DESC, r.id
"""
_RUNNING_BY_OWNER = {
    by_owner: text(
        _RUNNING.format(book_mark=BOOK_MARK, owner="AND s.owner = :owner" if by_owner else "")
    )
    for by_owner in (False, True)
}


async def running(session: AsyncSession, *, team_id: str, owner: str | None) -> list[Row[Any]]:
    """The team's (or owner's) running VMs, most recently started first, each row carrying the
    limits; never empty."""
    params = {"team": team_id} if owner is None else {"team": team_id, "owner": owner}
    rows = list(await session.execute(_RUNNING_BY_OWNER[owner is not None], params))
    assert rows, "migration 0002 seeds the org_plan row"
    return rows
