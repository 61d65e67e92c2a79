"""The hourly meter of upstream work: forks, starts and sessions, per team and per key.

The upstream limits the organisation as a whole (sandboxes created per hour, requests per
hour; CONTRACT §1.3), so without a meter of Corral's own one team's loop could spend those
limits for every other team (DESIGN §15). Every fork, start and session Corral sends upstream
is therefore charged first, one unit of its kind, to the team whose sandbox it is and to the
key that asked; when either already holds its limit for the last hour the work is refused
(429, Retry-After) before anything is sent.

    charge   serialised (forks and starts: by the org row, which the caller holds for
             admission; sessions: lock (team, key)) → insert one unit each, counting the
             window as it was before
             → refuse (the caller's transaction rolls the units back), or keep them (the
             caller's short transaction commits before the upstream call)
    refund   after a failed call: give back the units whose work certainly did not happen
    prune    drop units that left the window (the budget job, once per reconcile period)

Invariants:
- Race-free across replicas: the count and the insert of one kind run under one lock held to
  the commit, so two charges at a limit admit exactly one whichever replicas they run in.
  Forks and starts are charged only inside admission's transaction, after `admission.hold`
  locked the org row: that row serialises every fork and start charge of the organisation,
  so the meter takes no lock of its own for them and the create's or start's one lock covers
  the charge, the counts and the commit (an extra lock here would be one more round trip on
  the path every admission waits behind). Sessions never wait for the org row: their charges
  take transaction-scoped advisory locks (`Lock.UPSTREAM_WORK`), one for the team and one for
  the key, in ascending order. Counts are per kind, so the two serialisers never share a count.
- Who pays: the sandbox's team (an admin key acting on a team's sandbox charges that team) and
  the key itself (`Actor.key_id`; a browser token acts as the key that issued it, so its
  sessions are charged to that key).
- Time is Corral's clock: a unit counts while `at > now - WINDOW`; Retry-After is when the
  oldest counted unit of the refusing limit leaves the window.
- A unit is given back only when its work certainly did not happen upstream (DESIGN §11):
  the call was refused before it was sent, answered with a 4xx, turned away without doing
  anything, or never made because an earlier step failed. A call that may have been applied
  keeps its unit: the upstream may have counted it against the organisation.
- Limits: a team's `hourly_forks`/`hourly_starts`/`hourly_sessions`, NULL meaning
  `CORRAL_TEAM_HOURLY_*`; every key `CORRAL_KEY_HOURLY_*`. A key's work counts against both.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app import clock, metrics
from app.db import autocommit
from app.errors import TooManyRequests
from app.identity.actor import Actor
from app.locks import Lock
from app.models import UpstreamWork
from app.settings import Settings
from app.upstream.errors import UpstreamError, maybe_applied

if TYPE_CHECKING:
    # Only the type: admission imports the budget job, which imports this module.
    from app.admission.service import OrgHeld

WINDOW = timedelta(hours=1)


class Work(StrEnum):
    FORK = "fork"
    START = "start"
    SESSION = "session"

    @property
    def limit(self) -> str:
        """The limit's name, as refusals, the team's column and the settings call it."""
        return f"hourly_{self.value}s"


# The upstream client's name for each kind's call (`UpstreamError.operation`).
_OPERATION = {Work.FORK: "fork", Work.START: "start", Work.SESSION: "sessions"}


def creating(start: bool) -> tuple[Work, ...]:
    """What a create is charged: its fork and, when it starts, its start. Both are charged
    before the fork, so a create refused by either limit makes nothing upstream."""
    return (Work.FORK, Work.START) if start else (Work.FORK,)


@dataclass(frozen=True)
class Charge:
    """The units one charge inserted: the `upstream_work` row id of each kind."""

    units: Mapping[Work, int] = field(default_factory=dict)

    def of(self, kind: Work) -> Charge:
        return Charge({k: v for k, v in self.units.items() if k == kind})


def team_limit(settings: Settings, team: object | None, kind: Work) -> int:
    """`team`: anything with a team's `hourly_*` attributes (a row of `_CHARGE`)."""
    override: int | None = getattr(team, kind.limit, None) if team is not None else None
    return override if override is not None else int(getattr(settings, f"team_{kind.limit}"))


def key_limit(settings: Settings, kind: Work) -> int:
    return int(getattr(settings, f"key_{kind.limit}"))


def _lock_key(name: str) -> int:
    """The second int of the two-int lock key: 32 stable bits of SHA-256 (Python's `hash`
    differs per process, and every replica must pick the same lock)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


# One round trip for both locks: a function scan yields the array's elements in order, and
# each row's lock is taken as it is produced.
_LOCK_IN_ORDER = text(
    "SELECT pg_advisory_xact_lock(:cls, k) FROM unnest(CAST(:keys AS integer[])) AS k"
)


# Kinds whose every charge is made under the org row (`admission.hold`).
_UNDER_ORG_ROW = frozenset({Work.FORK, Work.START})


async def _lock(session: AsyncSession, team_id: str, key_id: str) -> None:
    """Serialise session charges of this team and of this key until the transaction ends. The
    key has a lock of its own because an admin key charges many teams. Taken in ascending
    order, so two charges that share both locks never wait on each other in a cycle."""
    keys = sorted({_lock_key(f"team:{team_id}"), _lock_key(f"key:{key_id}")})
    await session.execute(_LOCK_IN_ORDER, {"cls": int(Lock.UPSTREAM_WORK), "keys": keys})


@dataclass(frozen=True)
class _Counted:
    team: int = 0
    team_oldest: datetime | None = None
    key: int = 0
    key_oldest: datetime | None = None


# One round trip for the whole charge: the units go in, and the same statement counts what
# was in the window before them (its sub-statements share one snapshot, so the count does
# not see the rows it inserts) and reads the team's own limits. A refusal then raises inside
# the caller's transaction, whose rollback takes the units out again.
_CHARGE = text(
    """
WITH inserted AS (
    INSERT INTO upstream_work (team_id, key_id, kind, at)
    SELECT :team_id, :key_id, k, :at FROM unnest(CAST(:kinds AS varchar[])) AS k
    RETURNING kind, id
),
counted AS (
    SELECT kind,
           count(*) FILTER (WHERE team_id = :team_id) AS team,
           min(at) FILTER (WHERE team_id = :team_id) AS team_oldest,
           count(*) FILTER (WHERE key_id = :key_id) AS key,
           min(at) FILTER (WHERE key_id = :key_id) AS key_oldest
      FROM upstream_work
     WHERE kind = ANY(CAST(:kinds AS varchar[])) AND at > :since
       AND (team_id = :team_id OR key_id = :key_id)
     GROUP BY kind
)
SELECT i.kind, i.id, coalesce(c.team, 0) AS team, c.team_oldest,
       coalesce(c.key, 0) AS key, c.key_oldest,
       t.hourly_forks, t.hourly_starts, t.hourly_sessions
  FROM inserted i
  LEFT JOIN counted c ON c.kind = i.kind
  LEFT JOIN teams t ON t.id = :team_id
"""
)


def _refusal(
    kind: Work, scope: str, who: str, count: int, limit: int, oldest: datetime | None, at: datetime
) -> TooManyRequests:
    # One unit frees when the oldest one counted leaves the window.
    wait = (oldest + WINDOW - at).total_seconds() if oldest is not None else 1.0
    window = int(WINDOW.total_seconds())
    return TooManyRequests(
        f"{scope.capitalize()} {who!r} has asked the upstream for {count} {kind}s in the last "
        f"{window} s; its limit {kind.limit} is {limit} per hour.",
        retry_after=min(max(1, math.ceil(wait)), window),
        kind="upstream-work-limited",
        extra={
            "limit": kind.limit,
            "scope": scope,
            "current": count,
            "maximum": limit,
            "window_seconds": window,
        },
    )


async def charge(
    session: AsyncSession,
    settings: Settings,
    actor: Actor,
    team_id: str,
    kinds: Sequence[Work],
    *,
    held: OrgHeld | None = None,
) -> Charge:
    """Charge one unit of each kind to `team_id` and to the actor's key, in the caller's
    transaction, or raise 429 inside it, whose rollback charges nothing. When several limits
    are full, the one that frees last is named: asking again sooner would be refused by it.

    `held`: the org row this transaction holds (`admission.hold`), required for forks and
    starts, whose charges it serialises."""
    if held is None and not _UNDER_ORG_ROW.isdisjoint(kinds):
        raise ValueError("forks and starts are charged under the org row: pass `held`")
    at = clock.now()
    if not _UNDER_ORG_ROW.issuperset(kinds):
        await _lock(session, team_id, actor.key_id)
    rows = (
        await session.execute(
            _CHARGE,
            {
                "team_id": team_id,
                "key_id": actor.key_id,
                "kinds": [str(kind) for kind in kinds],
                "at": at,
                "since": at - WINDOW,
            },
        )
    ).all()
    team = rows[0] if rows else None
    refusals: list[TooManyRequests] = []
    for row in rows:
        kind, seen = Work(row.kind), _Counted(row.team, row.team_oldest, row.key, row.key_oldest)
        if seen.team >= (limit := team_limit(settings, team, kind)):
            refusals.append(_refusal(kind, "team", team_id, seen.team, limit, seen.team_oldest, at))
        if seen.key >= (limit := key_limit(settings, kind)):
            refusals.append(
                _refusal(kind, "key", actor.key_id, seen.key, limit, seen.key_oldest, at)
            )
    if refusals:
        refusal = max(refusals, key=lambda r: int(r.headers["Retry-After"]))
        metrics.UPSTREAM_WORK_REFUSED.labels(refusal.extra["limit"], refusal.extra["scope"]).inc()
        raise refusal
    return Charge({Work(row.kind): row.id for row in rows})


def _upstream_error(failure: BaseException | None) -> UpstreamError | None:
    """The failed upstream call behind `failure`: itself, or what it was raised from or while
    handling (a problem made from an upstream error keeps it as its context)."""
    seen: set[int] = set()
    current = failure
    while current is not None and id(current) not in seen:
        if isinstance(current, UpstreamError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


async def refund(
    engine: AsyncEngine, charge: Charge | None, failure: BaseException | None = None
) -> None:
    """Give back the units of `charge` whose work certainly did not happen, `failure` being
    why the work stopped. A unit is kept only when `failure` is a failed upstream call of its
    own kind that may have been applied, or no `Exception` at all (a cancelled request, whose
    call may be in flight). Any other unit's call failed certainly, or was never made."""
    if charge is None or not charge.units:
        return
    if failure is not None and not isinstance(failure, Exception):
        return
    err = _upstream_error(failure)
    given_back = [
        unit
        for kind, unit in charge.units.items()
        if err is None or err.operation != _OPERATION[kind] or not maybe_applied(err)
    ]
    if given_back:
        async with autocommit(engine) as conn:
            await conn.execute(delete(UpstreamWork).where(UpstreamWork.id.in_(given_back)))


async def prune(engine: AsyncEngine, at: datetime) -> int:
    """Delete the units that have left the window at `at`; returns how many."""
    async with autocommit(engine) as conn:
        result = await conn.execute(delete(UpstreamWork).where(UpstreamWork.at <= at - WINDOW))
    return int(result.rowcount)
