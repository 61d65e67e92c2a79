"""What every drift repair of one reconcile period shares: the period, its findings, batching.

A repair claims its rows (`repository.claim`: SKIP LOCKED, re-checked against what the period
loaded), moves them through `app.sandboxes.transitions` (the row, the ledger, the event and the
audit row, for the whole batch in one statement), records a drift row and its webhook events
for each sandbox it moved, and commits. A batch that fails is retried sandbox by sandbox, so
one bad sandbox is logged and skipped and never stops the period.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import transaction
from app.reconcile import repository
from app.runtime import Runtime
from app.sandboxes.transitions import Audit
from app.upstream.schemas import RunningVM
from app.webhooks import events

log = logging.getLogger(__name__)

ACTOR = "reconciler"
BATCH_SIZE = 1000

T = TypeVar("T")


@dataclass
class Period:
    rt: Runtime
    run_id: int
    poll_at: datetime
    listed: dict[str, RunningVM]
    drift: Counter[str] = field(default_factory=Counter)

    @property
    def grace(self) -> timedelta:
        return timedelta(seconds=self.rt.settings.reconcile_sighting_grace_seconds)


@dataclass(frozen=True)
class Finding:
    """One drift repaired, recorded as a drift row (the move itself wrote event and audit)."""

    kind: str
    action: str
    sandbox_id: str
    upstream_id: str | None
    detail: dict[str, Any]

    def audit(self, action: str) -> Audit:
        """The audit row of the move that repaired it."""
        return Audit(action, {**self.detail, "drift": self.kind, "repair": self.action})


async def record(
    session: AsyncSession, period: Period, findings: Iterable[Finding]
) -> Counter[str]:
    findings = list(findings)
    await repository.add_drifts(
        session,
        [
            {
                "run_id": period.run_id,
                "at": period.poll_at,
                "kind": f.kind,
                "sandbox_id": f.sandbox_id,
                "upstream_id": f.upstream_id,
                "action": f.action,
                "detail": f.detail,
            }
            for f in findings
        ],
    )
    await events.emit_many(session, [event for f in findings for event in _events_of(f)])
    return Counter(f.kind for f in findings)


def _events_of(finding: Finding) -> list[events.Event]:
    """The webhook events a repaired drift is told by, in the transaction that repaired it."""
    data = {
        "kind": finding.kind,
        "action": finding.action,
        "sandbox_id": finding.sandbox_id,
        "upstream_id": finding.upstream_id,
        "detail": finding.detail,
        "link": f"/v1/sandboxes/{finding.sandbox_id}",
    }
    told = [events.Event("reconcile.drift_found", data)]
    if finding.kind == "unmanaged":
        told.append(events.Event("sandbox.unmanaged_found", {**data, "team": "unassigned"}))
    return told


Repair = Callable[[Period, AsyncSession, Sequence[T]], Awaitable[Counter[str]]]


async def guarded(sandbox_id: str, work: Callable[[], Awaitable[Any]]) -> None:
    try:
        await work()
    except Exception:
        log.exception("reconcile failed for one sandbox", extra={"sandbox_id": sandbox_id})


async def batched(
    period: Period, items: Sequence[T], repair: Repair[T], *, key: Callable[[T], str]
) -> None:
    """Repair items a batch per short transaction; a failed batch is redone item by item.
    Drift is counted only once its transaction has committed."""
    for first in range(0, len(items), BATCH_SIZE):
        batch = items[first : first + BATCH_SIZE]
        try:
            async with transaction(period.rt.sessions) as session:
                found = await repair(period, session, batch)
            period.drift.update(found)
            continue
        except Exception:
            log.warning("reconcile batch failed; retrying one by one", exc_info=True)
        for item in batch:

            async def one(item: T = item) -> None:
                async with transaction(period.rt.sessions) as session:
                    found = await repair(period, session, [item])
                period.drift.update(found)

            await guarded(key(item), one)


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
