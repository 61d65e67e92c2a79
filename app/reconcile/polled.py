"""The drift kinds of rows whose VM the poll saw (or stopped seeing) running, repaired a batch
at a time:

    stopped_upstream   running here, gone upstream twice → hibernated at the estimated end
    woken_upstream     running upstream, stopped here → running from the session's start
    tier_changed       running both sides at different tiers → the interval is split
    restarted_upstream running both sides, but in a session begun after Corral's start → the
                       old interval ends at the estimated auto-hibernation, a new one opens at
                       the session's start
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.reconcile import repository
from app.reconcile.period import ACTOR, Finding, Period, iso, record
from app.reconcile.plan import Closing, Resize, Restart, Waking
from app.sandboxes import transitions
from app.sandboxes.states import SandboxState
from app.sandboxes.transitions import Move
from app.upstream.tiers import tier_of


async def close(period: Period, session: AsyncSession, batch: Sequence[Closing]) -> Counter[str]:
    """stopped_upstream: running here, gone upstream twice → hibernated at the estimate."""
    claimed = await repository.claim(session, (c.row for c in batch))
    findings = {
        c.row.id: Finding(
            kind="stopped_upstream",
            action=c.to_state,
            sandbox_id=c.row.id,
            upstream_id=c.row.upstream_id,
            detail={**c.detail, "ended_at": c.ended_at.isoformat()},
        )
        for c in batch
        if c.row.id in claimed
    }
    moved = await transitions.apply(
        session,
        [
            Move(
                sandbox_id=c.row.id,
                from_state=SandboxState.RUNNING,
                to_state=SandboxState(c.to_state),
                tier=c.row.tier,
                at=c.ended_at,
                cause="upstream",
                actor=ACTOR,
                detail=findings[c.row.id].detail,
                audit=findings[c.row.id].audit(
                    "sandbox.hibernate" if c.to_state == "hibernated" else "sandbox.shutdown"
                ),
                if_changed_at=c.row.state_changed_at,
            )
            for c in batch
            if c.row.id in findings
        ],
    )
    return await record(session, period, (findings[row["id"]] for row in moved))


async def wake(period: Period, session: AsyncSession, batch: Sequence[Waking]) -> Counter[str]:
    """woken_upstream: running upstream, stopped here → running from the session start."""
    claimed = await repository.claim(session, (w.row for w in batch))
    todo = [w for w in batch if w.row.id in claimed]
    findings = {
        w.row.id: Finding(
            kind="woken_upstream",
            action="started",
            sandbox_id=w.row.id,
            upstream_id=w.row.upstream_id,
            detail={
                "started_at": w.started_at.isoformat(),
                "session_started_at": iso(w.vm.session_started_at),
                "tier": tier_of(w.vm) or w.row.tier,
            },
        )
        for w in todo
    }
    moved = await transitions.apply(
        session,
        [
            Move(
                sandbox_id=w.row.id,
                from_state=SandboxState(w.row.state),
                to_state=SandboxState.RUNNING,
                tier=findings[w.row.id].detail["tier"],
                at=w.started_at,
                cause="upstream",
                actor=ACTOR,
                detail=findings[w.row.id].detail,
                audit=findings[w.row.id].audit("sandbox.start"),
                seen_running_at=period.poll_at,
                upstream_last_active_at=w.vm.last_active_at,
                if_changed_at=w.row.state_changed_at,
            )
            for w in todo
        ],
    )
    return await record(session, period, (findings[row["id"]] for row in moved))


async def resize(period: Period, session: AsyncSession, batch: Sequence[Resize]) -> Counter[str]:
    """tier_changed: the interval is split at the sighting and the tier follows the upstream."""
    claimed = await repository.claim(session, (r.row for r in batch), check_tier=True)
    todo = [r for r in batch if r.row.id in claimed]
    findings = {
        r.row.id: Finding(
            kind="tier_changed",
            action="split",
            sandbox_id=r.row.id,
            upstream_id=r.row.upstream_id,
            detail={"from_tier": r.row.tier, "to_tier": r.tier},
        )
        for r in todo
    }
    moved = await transitions.apply(
        session,
        [
            Move(
                sandbox_id=r.row.id,
                from_state=SandboxState.RUNNING,
                to_state=SandboxState.RUNNING,
                tier=r.tier,
                at=r.at,
                cause="upstream",
                actor=ACTOR,
                detail=findings[r.row.id].detail,
                audit=findings[r.row.id].audit("sandbox.update"),
                split=True,
                if_changed_at=r.row.state_changed_at,
            )
            for r in todo
        ],
    )
    return await record(session, period, (findings[row["id"]] for row in moved))


async def restart(period: Period, session: AsyncSession, batch: Sequence[Restart]) -> Counter[str]:
    """restarted_upstream: two moves, stopped at the estimate and running from the session."""
    claimed = await repository.claim(session, (r.row for r in batch))
    todo = [r for r in batch if r.row.id in claimed]
    findings = {
        r.row.id: Finding(
            kind="restarted_upstream",
            action="split",
            sandbox_id=r.row.id,
            upstream_id=r.row.upstream_id,
            detail={
                "ended_at": r.ended_at.isoformat(),
                "session_started_at": iso(r.vm.session_started_at),
            },
        )
        for r in todo
    }
    stopped = await transitions.apply(
        session,
        [
            Move(
                sandbox_id=r.row.id,
                from_state=SandboxState.RUNNING,
                to_state=SandboxState.HIBERNATED,
                tier=r.row.tier,
                at=r.ended_at,
                cause="upstream",
                actor=ACTOR,
                detail=findings[r.row.id].detail,
                if_changed_at=r.row.state_changed_at,
            )
            for r in todo
        ],
    )
    moved = {row["id"] for row in stopped}
    started = await transitions.apply(
        session,
        [
            Move(
                sandbox_id=r.row.id,
                from_state=SandboxState.HIBERNATED,
                to_state=SandboxState.RUNNING,
                tier=tier_of(r.vm) or r.row.tier,
                at=r.started_at,
                cause="upstream",
                actor=ACTOR,
                detail=findings[r.row.id].detail,
                audit=findings[r.row.id].audit("sandbox.start"),
                seen_running_at=period.poll_at,
                upstream_last_active_at=r.vm.last_active_at,
            )
            for r in todo
            if r.row.id in moved
        ],
    )
    return await record(session, period, (findings[row["id"]] for row in started))
