"""The one writer of "a sandbox goes from A to B" (DESIGN §3, §5).

A transition changes, in one statement and so atomically:
- the sandbox row: state, cause, when, and what the move learnt (upstream id, tier, sightings);
- the usage ledger: an interval is open while the sandbox is `running`. Entering `running`
  opens one (unless one is open), leaving it closes the open one, and a tier change while
  running (a `split`) closes it and opens the next, at the price-book version in force at that
  moment. The one exception is `unknown` after a stop that may have happened: the interval
  stays open, neither closed nor split on a guess, until the upstream tells (DESIGN §11);
- the sandbox event, with its cause and actor;
- the audit row, when the move is the answer to a call or an automatic action;
- the webhook event the move causes, if any (a hibernation for budget: `_announce`).

Every caller uses it: the API verbs (one move at a time), the facade and the budget job
(through the verbs), and the reconciler (a batch at a time). A batch is the same statement as
a single move: one array per column, `unnest`ed, so there is no second implementation.

A move names the state it expects the row to be in (and, for the reconciler, when that state
began); a row that has moved on since is left alone and is not returned, so a caller that did
not lock the row learns that someone else settled it first.

New rows (a create's reservation, an unmanaged VM the reconciler found) are born through
`insert`: the row and its first event, interval and audit row, written by the same tail.

Prices come from `app.usage.ledger` (the one price rule), computed here for the moves that
open an interval; the ledger's rows are written only here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from app import clock, context, unnest
from app.models import Sandbox
from app.sandboxes.states import SandboxState
from app.usage import ledger
from app.usage import repository as usage_repository
from app.webhooks import events

Database = AsyncSession | AsyncConnection

# The one state in which a sandbox is billed: entering it opens an interval, leaving it for any
# other state closes the open one, except for `HELD`: a sandbox whose stop may have happened
# keeps its interval open until the upstream tells whether it still runs.
BILLED = SandboxState.RUNNING
HELD = SandboxState.UNKNOWN


@dataclass(frozen=True)
class Audit:
    """The audit row written with a move. `actor` and `cause` default to the move's own: they
    differ when a key asked for something the upstream turned out to have done already."""

    action: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    outcome: str = "ok"
    actor: str | None = None
    cause: str | None = None


@dataclass(frozen=True)
class Move:
    sandbox_id: str
    from_state: SandboxState
    to_state: SandboxState
    tier: str  # the tier after the move; while running, a change needs `split`
    at: datetime
    cause: str
    actor: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)
    audit: Audit | None = None
    split: bool = False
    # What the move learnt; None leaves the column as it is.
    upstream_id: str | None = None
    reservation_expires_at: datetime | None = None  # only a move into `starting` keeps one
    seen_running_at: datetime | None = None
    upstream_last_active_at: datetime | None = None
    # Apply only if the row's current state began at this moment (a reconciler's claim).
    if_changed_at: datetime | None = None
    # A move settles the call that wrote the row's intent, and so clears it; a call that
    # wrote none (a start of a running sandbox) leaves it to the call in flight that did.
    keeps_intent: bool = False

    @property
    def opens(self) -> bool:
        """Whether the move may need an interval priced (decided for sure in the statement)."""
        return self.to_state == BILLED


@dataclass(frozen=True)
class Birth:
    """A new row: `sandbox` is a transient object with every column set (never added to a
    session), born in its `state` at its `state_changed_at`."""

    sandbox: Sandbox
    cause: str
    actor: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)
    audit: Audit | None = None


# --- the statements ----------------------------------------------------------------------

# What the shared tail needs of each moved row, besides the row itself.
_TAIL_COLUMNS: dict[str, str] = {
    "moved_at": "timestamptz",
    "cause": "varchar",
    "actor": "varchar",
    "detail": "jsonb",
    "split": "boolean",
    "end_cause": "varchar",
    "rate": "numeric",
    "price_book_id": "bigint",
    "audit_action": "varchar",
    "audit_actor": "varchar",
    "audit_cause": "varchar",
    "audit_outcome": "varchar",
    "audit_detail": "jsonb",
}
_MOVE_COLUMNS: dict[str, str] = {
    "id": "varchar",
    "from_state": "varchar",
    "if_changed_at": "timestamptz",
    "to_state": "varchar",
    "tier": "varchar",
    "upstream_id": "varchar",
    "expires_at": "timestamptz",
    "seen_at": "timestamptz",
    "active_at": "timestamptz",
    "keeps_intent": "boolean",
    **_TAIL_COLUMNS,
}
_BORN_COLUMNS: dict[str, str] = {
    "id": "varchar",
    "upstream_id": "varchar",
    "team_id": "varchar",
    "owner": "varchar",
    "title": "varchar",
    "template": "varchar",
    "tier": "varchar",
    "hibernation_timeout_seconds": "int",
    "privacy": "int",
    "automatic_wakeup": "boolean",
    "tags": "jsonb",
    "state": "varchar",
    "operation_id": "varchar",
    "reservation_expires_at": "timestamptz",
    "managed": "boolean",
    "created_at": "timestamptz",
    "last_seen_running_at": "timestamptz",
    "upstream_last_active_at": "timestamptz",
    **_TAIL_COLUMNS,
}
_SANDBOX_COLUMNS = ", ".join(f"m.{column.name}" for column in Sandbox.__table__.columns)
_TAIL_FROM_U = ", ".join(f"u.{name}" for name in _TAIL_COLUMNS)
_RUNNING = f"'{BILLED.value}'"
_HELD = f"'{HELD.value}'"

# Consumes `moved` (each row as it now is, plus the tail columns and `from_state`/`had_open`).
# `opened` reads `closed` to completion first, so a split's new interval never meets the old
# one, still open, in the one-open-interval-per-sandbox unique index.
_TAIL = f"""
closed AS (
    UPDATE usage_intervals i
       SET ended_at = greatest(i.started_at, m.moved_at), end_cause = m.end_cause
      FROM moved m
     WHERE i.sandbox_id = m.id AND i.ended_at IS NULL AND m.had_open
       AND (m.state NOT IN ({_RUNNING}, {_HELD}) OR m.split)
    RETURNING i.sandbox_id
),
opened AS (
    INSERT INTO usage_intervals
           (sandbox_id, team_id, owner, tier, credits_per_hour, price_book_id, started_at)
    SELECT m.id, m.team_id, m.owner, m.tier, m.rate, m.price_book_id, m.moved_at
      FROM moved m
     WHERE m.state = {_RUNNING} AND (NOT m.had_open OR m.split)
       AND (SELECT count(*) FROM closed) >= 0
),
evented AS (
    INSERT INTO sandbox_events
           (sandbox_id, at, from_state, to_state, cause, actor, request_id, detail)
    SELECT m.id, m.moved_at, m.from_state, m.state, m.cause, m.actor, :request_id, m.detail
      FROM moved m
),
audited AS (
    INSERT INTO audit_log
           (at, actor, team_id, action, target, cause, request_id, outcome, detail)
    SELECT :now, m.audit_actor, m.team_id, m.audit_action, m.id, m.audit_cause, :request_id,
           m.audit_outcome, m.audit_detail
      FROM moved m
     WHERE m.audit_action IS NOT NULL
)
SELECT {_SANDBOX_COLUMNS} FROM moved m
"""  # noqa: S608 (constants of this module only)

_MOVE = text(
    f"""
WITH u AS (SELECT {unnest.selected(_MOVE_COLUMNS)} FROM {unnest.arrays(_MOVE_COLUMNS)}),
moved AS (
    UPDATE sandboxes s
       SET state = u.to_state, tier = u.tier, updated_at = :now,
           -- a split (running to running) is no change of state: its cause and time stay
           last_cause = CASE WHEN s.state <> u.to_state THEN u.cause ELSE s.last_cause END,
           state_changed_at = CASE WHEN s.state <> u.to_state THEN u.moved_at
                                   ELSE s.state_changed_at END,
           upstream_id = coalesce(u.upstream_id, s.upstream_id),
           reservation_expires_at = u.expires_at,
           deleted_at = CASE WHEN u.to_state = 'deleted' THEN u.moved_at ELSE s.deleted_at END,
           last_started_at = CASE WHEN u.to_state = {_RUNNING} AND s.state <> {_RUNNING}
                                  THEN u.moved_at ELSE s.last_started_at END,
           last_seen_running_at = coalesce(u.seen_at, s.last_seen_running_at),
           -- a session's activity begins at its start (the auto-hibernation estimate uses it)
           upstream_last_active_at = coalesce(
               u.active_at,
               CASE WHEN u.to_state = {_RUNNING} AND s.state <> {_RUNNING}
                    THEN u.moved_at ELSE s.upstream_last_active_at END),
           missed_polls = 0,
           pending_intent = CASE WHEN u.keeps_intent THEN s.pending_intent END,
           pending_at = CASE WHEN u.keeps_intent THEN s.pending_at END
      FROM u
     WHERE s.id = u.id AND s.state = u.from_state
       AND (u.if_changed_at IS NULL OR s.state_changed_at = u.if_changed_at)
    RETURNING s.*, u.from_state, {_TAIL_FROM_U},
              EXISTS (SELECT 1 FROM usage_intervals i
                       WHERE i.sandbox_id = s.id AND i.ended_at IS NULL) AS had_open
),
{_TAIL}"""  # noqa: S608
)

_BORN = text(
    f"""
WITH u AS (SELECT {unnest.selected(_BORN_COLUMNS)} FROM {unnest.arrays(_BORN_COLUMNS)}),
born AS (
    INSERT INTO sandboxes (
        id, upstream_id, team_id, owner, title, template, tier, hibernation_timeout_seconds,
        privacy, automatic_wakeup, tags, state, last_cause, operation_id,
        reservation_expires_at, managed, missed_polls, created_at, updated_at,
        state_changed_at, last_started_at, last_seen_running_at, upstream_last_active_at
    )
    SELECT u.id, u.upstream_id, u.team_id, u.owner, u.title, u.template, u.tier,
           u.hibernation_timeout_seconds, u.privacy, u.automatic_wakeup,
           ARRAY(SELECT jsonb_array_elements_text(u.tags)), u.state, u.cause, u.operation_id,
           u.reservation_expires_at, u.managed, 0, u.created_at, :now, u.moved_at,
           CASE WHEN u.state = {_RUNNING} THEN u.moved_at END,
           u.last_seen_running_at, u.upstream_last_active_at
      FROM u JOIN teams t ON t.id = u.team_id
    ON CONFLICT (upstream_id) DO NOTHING
    RETURNING *
),
moved AS (
    SELECT b.*, NULL::varchar AS from_state, {_TAIL_FROM_U}, false AS had_open
      FROM born b JOIN u ON u.id = b.id
),
{_TAIL}"""  # noqa: S608
)


# --- applying ----------------------------------------------------------------------------


def _tail(
    *,
    at: datetime,
    cause: str,
    actor: str | None,
    detail: Mapping[str, Any],
    audit: Audit | None,
    split: bool,
    price: tuple[Decimal | None, int | None],
) -> dict[str, Any]:
    return {
        "moved_at": at,
        "cause": cause,
        "actor": actor,
        "detail": dict(detail),
        "split": split,
        "end_cause": "resize" if split else cause,
        "rate": price[0],
        "price_book_id": price[1],
        "audit_action": audit.action if audit else None,
        "audit_actor": (audit.actor or actor) if audit else None,
        "audit_cause": (audit.cause or cause) if audit else None,
        "audit_outcome": audit.outcome if audit else None,
        "audit_detail": dict(audit.detail) if audit else {},
    }


async def _price_table(db: Database, needed: bool) -> ledger.PriceTable | None:
    return await ledger.price_table(db) if needed else None


def _price(prices: ledger.PriceTable | None, tier: str, at: datetime) -> tuple[Any, Any]:
    return prices.price(tier, at) if prices is not None else (None, None)


async def apply(
    db: Database, moves: Sequence[Move], *, prices: ledger.PriceTable | None = None
) -> list[RowMapping]:
    """Apply every move whose row is still where the move expects it; return those rows as
    they now are (a row that had moved on is absent). `prices`: the price table, when the
    caller has it (else it is read when a move opens an interval)."""
    if not moves:
        return []
    if prices is None:
        prices = await _price_table(db, any(m.opens for m in moves))
    rows = [
        {
            "id": m.sandbox_id,
            "from_state": str(m.from_state),
            "if_changed_at": m.if_changed_at,
            "to_state": str(m.to_state),
            "tier": m.tier,
            "upstream_id": m.upstream_id,
            "expires_at": (
                m.reservation_expires_at if m.to_state == SandboxState.STARTING else None
            ),
            "seen_at": m.seen_running_at,
            "active_at": m.upstream_last_active_at,
            "keeps_intent": m.keeps_intent,
            **_tail(
                at=m.at,
                cause=m.cause,
                actor=m.actor,
                detail=m.detail,
                audit=m.audit,
                split=m.split,
                price=_price(prices, m.tier, m.at) if m.opens else (None, None),
            ),
        }
        for m in moves
    ]
    result = await db.execute(
        _MOVE,
        {
            **unnest.params(_MOVE_COLUMNS, rows),
            "now": clock.now(),
            "request_id": context.request_id.get(),
        },
    )
    moved = list(result.mappings())
    await _announce(db, moves, moved)
    return moved


async def _announce(db: Database, moves: Sequence[Move], moved: Sequence[RowMapping]) -> None:
    """The webhook events a move is the cause of, in its transaction (DESIGN §13)."""
    budget_stops = {
        m.sandbox_id: m
        for m in moves
        if m.cause == "budget" and m.to_state == SandboxState.HIBERNATED != m.from_state
    }
    if not budget_stops:
        return
    await events.emit_many(
        db,
        [
            events.Event(
                "sandbox.hibernated_by_budget",
                {
                    "team": row["team_id"],
                    "sandbox_id": row["id"],
                    "owner": row["owner"],
                    "tier": row["tier"],
                    "hibernated_at": budget_stops[row["id"]].at.isoformat(),
                    "link": f"/v1/sandboxes/{row['id']}",
                },
                team_id=row["team_id"],
                at=budget_stops[row["id"]].at,
            )
            for row in moved
            if row["id"] in budget_stops
        ],
    )


async def insert(db: Database, births: Sequence[Birth]) -> list[RowMapping]:
    """Insert new rows with their first event (and interval, and audit row); a row whose
    upstream id is already recorded, or whose team does not exist, is skipped. Returns the
    rows inserted."""
    if not births:
        return []
    prices = await _price_table(db, any(b.sandbox.state == BILLED for b in births))
    rows = []
    for b in births:
        s = b.sandbox
        at = s.state_changed_at
        rows.append(
            {
                "id": s.id,
                "upstream_id": s.upstream_id,
                "team_id": s.team_id,
                "owner": s.owner,
                "title": s.title,
                "template": s.template,
                "tier": s.tier,
                "hibernation_timeout_seconds": s.hibernation_timeout_seconds,
                "privacy": s.privacy,
                "automatic_wakeup": s.automatic_wakeup,
                "tags": list(s.tags),
                "state": s.state,
                "operation_id": s.operation_id,
                "reservation_expires_at": s.reservation_expires_at,
                "managed": s.managed,
                "created_at": s.created_at,
                "last_seen_running_at": s.last_seen_running_at,
                "upstream_last_active_at": s.upstream_last_active_at,
                **_tail(
                    at=at,
                    cause=b.cause,
                    actor=b.actor,
                    detail=b.detail,
                    audit=b.audit,
                    split=False,
                    price=_price(prices, s.tier, at) if s.state == BILLED else (None, None),
                ),
            }
        )
    result = await db.execute(
        _BORN,
        {
            **unnest.params(_BORN_COLUMNS, rows),
            "now": clock.now(),
            "request_id": context.request_id.get(),
        },
    )
    return list(result.mappings())


# --- one sandbox -------------------------------------------------------------------------


async def move(
    session: AsyncSession,
    sandbox: Sandbox,
    to_state: SandboxState,
    *,
    cause: str,
    actor: str | None,
    at: datetime | None = None,
    detail: Mapping[str, Any] | None = None,
    audit: Audit | None = None,
    tier: str | None = None,
    upstream_id: str | None = None,
    reservation_expires_at: datetime | None = None,
    seen_running_at: datetime | None = None,
    upstream_last_active_at: datetime | None = None,
    keeps_intent: bool = False,
) -> None:
    """Move a sandbox the session holds locked; `sandbox` is brought up to date in place. A
    tier change while running splits the interval."""
    tier = tier or sandbox.tier
    from_state = SandboxState(sandbox.state)
    # Changes the caller made to the object itself go first, so they are not lost.
    await session.flush()
    rows = await apply(
        session,
        [
            Move(
                sandbox_id=sandbox.id,
                from_state=from_state,
                to_state=to_state,
                tier=tier,
                at=at or clock.now(),
                cause=cause,
                actor=actor,
                detail=detail or {},
                audit=audit,
                split=from_state == to_state == BILLED and tier != sandbox.tier,
                upstream_id=upstream_id,
                reservation_expires_at=reservation_expires_at,
                seen_running_at=seen_running_at,
                upstream_last_active_at=upstream_last_active_at,
                keeps_intent=keeps_intent,
            )
        ],
    )
    if not rows:
        raise RuntimeError(f"sandbox {sandbox.id} left {from_state} while locked")
    refresh(sandbox, rows[0])


async def settle(engine: AsyncEngine, change: Move) -> Sandbox | None:
    """Apply one move the caller holds no lock for, in a short transaction of its own. None,
    changing nothing, when the row is no longer in `change.from_state`.

    The row is locked by a statement of its own first: the move's statement then starts with
    a snapshot taken after any transaction that held the row (Read Committed). Run as one
    statement, it would wait for such a transaction and update the row it left, yet not see
    the interval that transaction opened, and leave it open."""
    async with engine.begin() as conn:
        # By id alone: a state in the WHERE would be checked against the row as it was, and
        # a row some transaction is moving would not be waited for.
        locked = (await conn.execute(_LOCK_ROW, {"id": change.sandbox_id})).first()
        if locked is None or locked.state != str(change.from_state):
            return None
        prices = None
        if change.opens:
            mark = (locked.book_versions, locked.book_last_id)
            prices = await ledger.price_table_marked(conn, mark)
        rows = await apply(conn, [change], prices=prices)
    return Sandbox(**rows[0]) if rows else None


# The price book's mark rides along, so a settle that opens an interval reads the price book
# only when it has changed.
_LOCK_ROW = text(
    f"SELECT state, {usage_repository.BOOK_MARK} FROM sandboxes WHERE id = :id FOR UPDATE"  # noqa: S608
)


def refresh(sandbox: Sandbox, row: RowMapping) -> None:
    """Bring a loaded object up to date with a row written behind the session's back, without
    marking it changed."""
    for key, value in row.items():
        set_committed_value(sandbox, key, value)
