"""deleted outside Corral: a stopped sandbox the upstream no longer has → recorded deleted.

`/vm/running` lists only running VMs, so a sandbox Corral believes hibernated or shut down
that someone deleted upstream (another tool, the upstream's dashboard) would stay `hibernated`
here for ever, offered to starts that can only fail. Each period asks the upstream about a
few stopped sandboxes, the least recently checked first, so every stopped sandbox is asked
about in turn (`SWEEP_BATCH` per period: 10,000 stopped sandboxes take about 100 minutes at
the default 15 s period) at a bounded cost to the hourly upstream budget.

A sandbox the upstream answers 404 for is moved to `deleted` (cause `upstream`: the upstream
did it on its own), dated at the poll, with a `deleted_upstream` drift; any other answer, or
no answer, leaves it as it is for its next turn. A row that changed since it was picked (a
start, say) is left alone: only the state it was picked in is moved.
"""

from __future__ import annotations

import logging

from app.db import transaction
from app.reconcile import repository
from app.reconcile.period import ACTOR, Finding, Period, record
from app.reconcile.plan import Row
from app.sandboxes import repository as sandboxes_repository
from app.sandboxes import transitions
from app.sandboxes.states import SandboxState
from app.upstream.errors import UpstreamError, UpstreamNotFound

log = logging.getLogger(__name__)

SWEEP_BATCH = 25


async def check_stopped(period: Period) -> None:
    """Ask the upstream about the next few stopped sandboxes; record the ones it deleted."""
    # A sandbox that stopped moments ago is left to the settling of its own stop.
    before = period.poll_at - period.grace
    async with transaction(period.rt.sessions) as session:
        rows = await repository.stopped_to_check(session, before=before, limit=SWEEP_BATCH)
    gone: list[Row] = []
    for row in rows:
        assert row.upstream_id is not None
        try:
            await period.rt.upstream.get_sandbox(row.upstream_id)
        except UpstreamNotFound:
            gone.append(row)
        except UpstreamError as err:
            # No answer is not an answer: its turn comes again.
            log.warning(
                "stopped sandbox lookup failed",
                extra={"sandbox_id": row.id, "upstream_status": err.status},
            )
            continue
    async with transaction(period.rt.sessions) as session:
        await repository.mark_checked(session, [row.id for row in rows], period.poll_at)
    for row in gone:
        await _record_deleted(period, row)


async def _record_deleted(period: Period, row: Row) -> None:
    async with transaction(period.rt.sessions) as session:
        sandbox = await sandboxes_repository.get(session, row.id, team_id=None, for_update=True)
        if (
            sandbox is None
            or sandbox.state != row.state
            or sandbox.state_changed_at != row.state_changed_at
            or sandbox.pending_intent is not None
        ):
            return  # moved on since it was picked
        finding = Finding(
            kind="deleted_upstream",
            action="recorded_deleted",
            sandbox_id=row.id,
            upstream_id=row.upstream_id,
            detail={"was": row.state, "found": "sweep"},
        )
        await transitions.move(
            session,
            sandbox,
            SandboxState.DELETED,
            cause="upstream",
            actor=ACTOR,
            at=period.poll_at,
            detail=finding.detail,
            audit=finding.audit("sandbox.delete"),
        )
        found = await record(session, period, [finding])
    period.drift.update(found)
