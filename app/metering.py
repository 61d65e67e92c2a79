"""The hourly meter of upstream work: forks, starts and sessions, per team and per key.

The upstream limits the organisation as a whole (sandboxes created per hour, requests per
hour; CONTRACT §1.3), so without a meter of Corral's own one team's loop could spend those
limits for every other team (DESIGN §15). Every fork, start and session Corral sends upstream
is therefore charged first, one unit of its kind, to the team whose sandbox it is and to the
key that asked; when either already holds its limit for the last hour the work is refused
(429, Retry-After) before anything is sent.

    charge   lock (team, key) → count each kind in the window → refuse, or insert one unit each
             (in the caller's short transaction, which commits before the upstream call)
    refund   after a failed call: give back the units whose work certainly did not happen
    prune    drop units that left the window (the budget job, once per reconcile period)

Invariants:
- Race-free across replicas: the count and the insert run under transaction-scoped advisory
  locks (`Lock.UPSTREAM_WORK`), one for the team and one for the key, always taken in the same
  order, so two charges at a limit admit exactly one whichever replicas they run in.
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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, func, insert, or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app import clock, metrics
from app.db import autocommit
from app.errors import TooManyRequests
from app.identity.actor import Actor
from app.locks import Lock
from app.models import Team, UpstreamWork
from app.settings import Settings
from app.upstream.errors import UpstreamError, maybe_applied

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


# A team's own hourly limits, read as plain columns: loading the whole ORM object cost a
# tenth of a create's CPU (bench/admission.py).
_TEAM_LIMITS = select(Team.hourly_forks, Team.hourly_starts, Team.hourly_sessions)


def team_limit(settings: Settings, team: object | None, kind: Work) -> int:
    """`team`: anything with a team's `hourly_*` attributes (a row of `_TEAM_LIMITS`)."""
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


async def _lock(session: AsyncSession, team_id: str, key_id: str) -> None:
    """Serialise charges of this team and of this key until the transaction ends. The key has
    a lock of its own because an admin key charges many teams. Taken in ascending order, so
    two charges that share both locks never wait on each other in a cycle."""
    keys = sorted({_lock_key(f"team:{team_id}"), _lock_key(f"key:{key_id}")})
    await session.execute(_LOCK_IN_ORDER, {"cls": int(Lock.UPSTREAM_WORK), "keys": keys})


@dataclass(frozen=True)
class _Counted:
    team: int = 0
    team_oldest: datetime | None = None
    key: int = 0
    key_oldest: datetime | None = None


async def _counted(
    session: AsyncSession, team_id: str, key_id: str, kinds: Iterable[Work], since: datetime
) -> dict[Work, _Counted]:
    """The units in the window of each kind, the team's and the key's, with the oldest of each
    (one statement over the two indexes)."""
    of_team = UpstreamWork.team_id == team_id
    of_key = UpstreamWork.key_id == key_id
    rows = await session.execute(
        select(
            UpstreamWork.kind,
            func.count().filter(of_team),
            func.min(UpstreamWork.at).filter(of_team),
            func.count().filter(of_key),
            func.min(UpstreamWork.at).filter(of_key),
        )
        .where(
            UpstreamWork.kind.in_([str(kind) for kind in kinds]),
            UpstreamWork.at > since,
            or_(of_team, of_key),
        )
        .group_by(UpstreamWork.kind)
    )
    return {Work(kind): _Counted(int(t), t_at, int(k), k_at) for kind, t, t_at, k, k_at in rows}


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
    session: AsyncSession, settings: Settings, actor: Actor, team_id: str, kinds: Sequence[Work]
) -> Charge:
    """Charge one unit of each kind to `team_id` and to the actor's key, in the caller's
    transaction, or raise 429 and charge nothing. When several limits are full, the one that
    frees last is named: asking again sooner would be refused by it."""
    at = clock.now()
    await _lock(session, team_id, actor.key_id)
    team = (await session.execute(_TEAM_LIMITS.where(Team.id == team_id))).first()
    counted = await _counted(session, team_id, actor.key_id, kinds, at - WINDOW)
    refusals: list[TooManyRequests] = []
    for kind in kinds:
        seen = counted.get(kind, _Counted())
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
    rows = await session.execute(
        insert(UpstreamWork).returning(UpstreamWork.kind, UpstreamWork.id),
        [{"team_id": team_id, "key_id": actor.key_id, "kind": str(k), "at": at} for k in kinds],
    )
    return Charge({Work(kind): unit for kind, unit in rows})


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
