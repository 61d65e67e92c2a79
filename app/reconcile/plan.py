"""What one reconcile period should repair, decided from one poll and one load of the rows.

`classify` is pure: it takes the upstream's `/vm/running` answer and the database rows that
could be involved, and sorts every difference into a drift kind. Nothing here talks to the
database or the upstream, so every rule below is testable on plain values.

Drift kinds (DESIGN §8):

    stopped_upstream   running here, absent upstream in two consecutive polls → hibernated
    woken_upstream     running upstream, stopped here → running from `session_started_at`
    unmanaged          running upstream, no row here → a row of team `unassigned`
    tier_changed       running both sides at different tiers → the interval is split
    unresolved         `starting` past its reservation, or `unknown` → adopted or failed
    orphan             running upstream but deleted/failed here → shut down upstream

Rules that keep a stale `/vm/running` (it is refreshed only about every 30 s) from causing a
false repair:
- a miss counts only for a sandbox the poll could have seen: one seen running since its last
  start, or started longer than the sighting grace ago. Otherwise the miss counter is reset;
- a VM listed running whose row is stopped (or deleted) counts only if its `session_started_at`
  is later than the moment Corral recorded the stop, or the stop is older than the grace: an
  older session seen soon after is the one Corral stopped, still in a stale snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.clock import clamp
from app.upstream.schemas import RunningVM
from app.upstream.tiers import tier_of

# Consecutive polls a running sandbox must be missing from before it is closed.
MISSES_TO_CLOSE = 2


@dataclass(frozen=True)
class Row:
    """The columns of a sandbox the reconciler reasons about."""

    id: str
    upstream_id: str | None
    team_id: str
    owner: str | None
    tier: str
    state: str
    managed: bool
    operation_id: str
    hibernation_timeout_seconds: int
    reservation_expires_at: datetime | None
    state_changed_at: datetime
    last_started_at: datetime | None
    last_seen_running_at: datetime | None
    upstream_last_active_at: datetime | None
    missed_polls: int
    pending_intent: str | None = None
    pending_at: datetime | None = None
    # When Corral last wrote the row (a move or an edit): its tier was set by then.
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Closing:
    row: Row
    ended_at: datetime
    detail: dict[str, str]
    to_state: str = "hibernated"


@dataclass(frozen=True)
class Waking:
    row: Row
    vm: RunningVM
    started_at: datetime


@dataclass(frozen=True)
class Restart:
    """A running row whose VM is listed in a session begun well after Corral's start: it
    stopped (hibernated itself) and started again unseen."""

    row: Row
    vm: RunningVM
    ended_at: datetime
    started_at: datetime


@dataclass(frozen=True)
class Resize:
    row: Row
    vm: RunningVM
    tier: str
    at: datetime


@dataclass
class Plan:
    """Everything one period found, by what has to be done about it."""

    # Sightings worth writing (see `_needs_sighting`); the others are implied by the miss
    # counter staying at 0.
    # Each with the last activity to record (`ledger_activity`).
    sightings: list[tuple[Row, datetime | None]] = field(default_factory=list)
    # A sighting to write for a row an API request may hold: its miss counter must reset.
    resets: list[tuple[Row, datetime | None]] = field(default_factory=list)
    # First misses, with the last sighting running they imply.
    missed: list[tuple[Row, datetime]] = field(default_factory=list)
    # Rows whose miss counter must go back to 0 without a sighting (not observable yet).
    unobservable: list[Row] = field(default_factory=list)
    closing: list[Closing] = field(default_factory=list)
    waking: list[Waking] = field(default_factory=list)
    resizing: list[Resize] = field(default_factory=list)
    restarted: list[Restart] = field(default_factory=list)
    unknown_vms: list[RunningVM] = field(default_factory=list)
    unresolved: list[Row] = field(default_factory=list)
    # `starting` rows still within their reservation whose fork has not answered yet: a VM
    # unknown here may be theirs, so they are looked up before anything is called unmanaged.
    pending: list[Row] = field(default_factory=list)
    orphans: list[tuple[Row, RunningVM]] = field(default_factory=list)
    # Stopped rows whose delete was asked and not recorded: looked up, recorded deleted if gone.
    deleting: list[Row] = field(default_factory=list)
    # Rows whose intent is older than any call it could belong to: it is dropped.
    stale_intents: list[Row] = field(default_factory=list)


def estimate_end(
    *,
    last_active_at: datetime | None,
    hibernation_timeout_seconds: int,
    seen_running_at: datetime,
    seen_stopped_at: datetime,
) -> datetime:
    """When an auto-hibernated VM stopped: `last_active_at + timeout`, clamped between the last
    sighting running and the first sighting stopped (DESIGN §5). Without a last activity the
    last sighting stands in for it."""
    high = max(seen_running_at, seen_stopped_at)
    activity = last_active_at or seen_running_at
    return clamp(activity + timedelta(seconds=hibernation_timeout_seconds), seen_running_at, high)


def _seen_since_start(row: Row) -> bool:
    seen, started = row.last_seen_running_at, row.last_started_at
    return seen is not None and (started is None or seen >= started)


def last_sighting(row: Row, written_poll_at: datetime | None) -> datetime:
    """The last time a running row was seen running. Sightings are written lazily: a row seen
    since its start whose miss counter is still 0 was listed by every poll since, so by the
    last finished period's (`written_poll_at`) too."""
    if _seen_since_start(row):
        assert row.last_seen_running_at is not None
        if row.missed_polls == 0 and written_poll_at is not None:
            return max(row.last_seen_running_at, written_poll_at)
        return row.last_seen_running_at
    return row.last_started_at or row.state_changed_at


def ledger_activity(row: Row, vm: RunningVM, grace: timedelta) -> datetime | None:
    """The VM's last activity on the clock of the interval it extends, as recorded for the
    hibernation estimate. An interval Corral opened when it sent the start begins a call's
    latency before the upstream's session does; an auto-hibernation timed from the upstream's
    activity then ends it as much earlier, so the interval lasts exactly as long as the
    upstream's stretch and bills the same started minutes. An interval opened at the session's
    own start (woken, adopted) is already on the upstream's clock."""
    active, session, started = vm.last_active_at, vm.session_started_at, row.last_started_at
    if active is None or session is None or started is None:
        return active
    if not started <= session <= started + grace:
        return active  # another session than the interval's (a stale listing, a new one)
    return active - (session - started)


def _needs_sighting(
    row: Row, active: datetime | None, poll_at: datetime, refresh: timedelta
) -> bool:
    """Writing 10,000 sightings every period would cost more than the rest of the period, so a
    listed row is written only when the sighting carries news: the first since its start, or
    new upstream activity not written for `refresh` (the hibernation estimate uses it)."""
    if not _seen_since_start(row):
        return True
    assert row.last_seen_running_at is not None
    return (
        active is not None
        and active != row.upstream_last_active_at
        and row.last_seen_running_at <= poll_at - refresh
    )


def _observable(row: Row, poll_at: datetime, grace: timedelta) -> bool:
    """Could this poll have listed the sandbox if it were running? Not for a start that is
    newer than the last sighting and younger than the grace: the snapshot may predate it."""
    started = row.last_started_at
    if started is None:
        return True
    if row.last_seen_running_at is not None and row.last_seen_running_at >= started:
        return True
    return started <= poll_at - grace


def _fresh_listing(row: Row, vm: RunningVM, poll_at: datetime, grace: timedelta) -> bool:
    """Can a listing of this VM running be trusted against a stop (or delete) recorded here?
    Yes if its session began after that, or if the stop is older than any snapshot can be.
    The second case also covers an upstream clock running behind ours."""
    session = vm.session_started_at
    return (session is not None and session > row.state_changed_at) or (
        row.state_changed_at <= poll_at - grace
    )


def _tier_listed(row: Row, poll_at: datetime, grace: timedelta) -> bool:
    """Can the listing show the row's tier? Not when Corral wrote the row (a resize, or any
    other move or edit: `updated_at` is all the row keeps) after the poll, or within `grace`
    before it: Corral records a resize once the upstream answered it, and a listing taken
    before that, or a snapshot up to `grace` old, lists the old tier. Splitting back to it
    would bill the resized stretch at the old tier; a later period judges the row."""
    return row.updated_at is None or row.updated_at <= poll_at - grace


def intent_of(row: Row, poll_at: datetime, window: timedelta) -> str | None:
    """The row's pending intent while a call it belongs to may still be the latest news."""
    if row.pending_intent is None or row.pending_at is None:
        return None
    return row.pending_intent if row.pending_at >= poll_at - window else None


def started_since(vm: RunningVM, row: Row) -> bool:
    """Is the listed session one that began after the row's state did?"""
    return vm.session_started_at is not None and vm.session_started_at >= row.state_changed_at


def _woken_start(row: Row, vm: RunningVM, poll_at: datetime, grace: timedelta) -> datetime | None:
    """The start of a session Corral did not know about, or None if the listing may be stale."""
    if not _fresh_listing(row, vm, poll_at, grace):
        return None
    # Never before the stop here, and never in the future (the upstream's clock may run ahead).
    return clamp(vm.session_started_at or poll_at, row.state_changed_at, poll_at)


def classify(
    vms: list[RunningVM],
    rows: list[Row],
    *,
    poll_at: datetime,
    previous_poll_at: datetime | None,
    written_poll_at: datetime | None,
    grace: timedelta,
    refresh: timedelta,
    intent_window: timedelta,
) -> Plan:
    """`previous_poll_at`: the last period's poll that the upstream answered (the first that
    may have missed a VM); `written_poll_at`: the last finished period's (the one a miss
    counter of 0 says listed the VM; `repository.PollTimes`). `intent_window`: how long
    after it was written a pending intent can still explain what the upstream shows (the
    calls' deadline, the polls that notice, the listing's lag)."""
    plan = Plan()
    listed = {vm.id: vm for vm in vms if vm.id}
    claimed: set[str] = set()
    for row in rows:
        vm = listed.get(row.upstream_id) if row.upstream_id else None
        intent = intent_of(row, poll_at, intent_window)
        if row.pending_intent is not None and intent is None:
            plan.stale_intents.append(row)
        if row.upstream_id is not None and vm is not None:
            claimed.add(row.upstream_id)
        if row.state == "running":
            _classify_running(
                plan, row, vm, poll_at, (previous_poll_at, written_poll_at), grace, refresh, intent
            )
        elif row.state in ("hibernated", "shutdown"):
            if intent == "deleted" and vm is None:
                plan.deleting.append(row)
            elif vm is not None:
                started = _woken_start(row, vm, poll_at, grace)
                if started is not None:
                    plan.waking.append(Waking(row, vm, started))
        elif row.state == "starting":
            expired = row.reservation_expires_at is None or row.reservation_expires_at <= poll_at
            if expired or (vm is not None and started_since(vm, row)):
                # A session begun since the reservation is its start, done: the process that
                # asked may have died (or lost its database) before it could record it.
                plan.unresolved.append(row)
            elif row.upstream_id is None:
                plan.pending.append(row)
        elif row.state == "unknown":
            plan.unresolved.append(row)
        elif (
            row.state in ("deleted", "failed")
            and vm is not None
            and _fresh_listing(row, vm, poll_at, grace)
        ):
            plan.orphans.append((row, vm))
    plan.unknown_vms = [vm for vm_id, vm in listed.items() if vm_id not in claimed]
    return plan


def _classify_running(
    plan: Plan,
    row: Row,
    vm: RunningVM | None,
    poll_at: datetime,
    previous: tuple[datetime | None, datetime | None],
    grace: timedelta,
    refresh: timedelta,
    intent: str | None,
) -> None:
    previous_poll_at, written_poll_at = previous
    if vm is not None:
        session = vm.session_started_at
        started = row.last_started_at or row.state_changed_at
        if session is not None and session > started + grace:
            # Only a new session begins after Corral's start: a stale listing shows an older
            # one. The stretch in between is the upstream's auto-hibernation, estimated.
            ended = estimate_end(
                last_active_at=row.upstream_last_active_at,
                hibernation_timeout_seconds=row.hibernation_timeout_seconds,
                seen_running_at=last_sighting(row, written_poll_at),
                seen_stopped_at=min(session, poll_at),
            )
            plan.restarted.append(Restart(row, vm, ended, clamp(session, ended, poll_at)))
            return
        active = ledger_activity(row, vm, grace)
        if row.missed_polls:
            plan.resets.append((row, active))
        elif _needs_sighting(row, active, poll_at, refresh):
            plan.sightings.append((row, active))
        tier = tier_of(vm)
        if tier is not None and tier != row.tier and _tier_listed(row, poll_at, grace):
            # A resize Corral asked for and could not record happened when it was asked.
            at = poll_at
            if intent == f"resize:{tier}" and row.pending_at is not None:
                at = clamp(row.pending_at, row.state_changed_at, poll_at)
            plan.resizing.append(Resize(row, vm, tier, at))
        return
    if not _observable(row, poll_at, grace):
        if row.missed_polls:
            plan.unobservable.append(row)
        return
    seen_running = last_sighting(row, written_poll_at)
    if row.missed_polls + 1 < MISSES_TO_CLOSE:
        plan.missed.append((row, seen_running))
        return
    # The first poll that missed it was the previous one; without it, this one.
    seen_stopped = previous_poll_at if previous_poll_at is not None else poll_at
    if seen_stopped < seen_running:
        seen_stopped = poll_at
    to_state = "hibernated"
    ended = estimate_end(
        last_active_at=row.upstream_last_active_at,
        hibernation_timeout_seconds=row.hibernation_timeout_seconds,
        seen_running_at=seen_running,
        seen_stopped_at=seen_stopped,
    )
    if intent in ("hibernated", "shutdown") and row.pending_at is not None:
        asked = clamp(row.pending_at, seen_running, seen_stopped)
        if asked <= ended:
            # A stop Corral asked for (and could not record) before the VM would have
            # hibernated itself: it happened as and when asked. Asked later, it met a VM
            # that had already stopped on its own.
            to_state, ended = intent, asked
    plan.closing.append(
        Closing(
            row,
            ended,
            {
                "last_seen_running_at": seen_running.isoformat(),
                "first_seen_stopped_at": seen_stopped.isoformat(),
                "last_active_at": row.upstream_last_active_at.isoformat()
                if row.upstream_last_active_at
                else "",
                **({"intent": intent} if intent else {}),
            },
            to_state,
        )
    )
