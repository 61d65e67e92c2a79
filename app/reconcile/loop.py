"""The reconcile loop every replica runs: try to lead, and while leading run one period every
`CORRAL_RECONCILE_INTERVAL` seconds, followed by the budget job (`usage.budget`) and the
alert evaluation (`webhooks.alerts`).

Followers retry the leader lock once a period, so when a leader dies another takes over within
a period. A period whose upstream poll failed backs off exponentially (capped), keeping the
lock meanwhile: the upstream is shared, so another replica would fail the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress

from app.reconcile.leader import Leadership, PeriodBusy
from app.reconcile.service import reconcile_once, replica_name
from app.runtime import Runtime
from app.usage import budget
from app.webhooks import alerts

log = logging.getLogger(__name__)

# Upper bound of the back-off after repeated upstream failures.
MAX_BACKOFF_SECONDS = 300.0


def backoff(interval: float, failures: int) -> float:
    """Seconds until the next period after `failures` failed periods in a row."""
    if failures <= 0:
        return interval
    delay: float = interval * 2.0 ** min(failures, 16)
    return min(delay, max(interval, MAX_BACKOFF_SECONDS))


class ReconcileLoop:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.replica = replica_name(rt.settings)
        self.leadership = Leadership(rt.engine, self.replica)
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="reconcile-loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.leadership.release()

    async def run(self) -> None:
        interval = self.rt.settings.reconcile_interval
        while True:
            began = time.monotonic()
            delay = await self.tick(interval)
            await asyncio.sleep(max(0.0, delay - (time.monotonic() - began)))

    async def tick(self, interval: float) -> float:
        """One turn of the loop; returns the delay until the next, from this one's start."""
        try:
            if not await self.leadership.ensure():
                return interval
            summary = await reconcile_once(self.rt, replica=self.replica)
        except PeriodBusy:
            # A period started by hand is running; ours would repeat it.
            return interval
        except Exception:
            log.exception("reconcile loop error")
            self.failures += 1
            return backoff(interval, self.failures)
        self.failures = self.failures + 1 if summary.outcome == "failed" else 0
        if summary.outcome != "failed":
            await self.enforce_budgets()
            await self.evaluate_alerts()
        return backoff(interval, self.failures)

    async def enforce_budgets(self) -> None:
        """The leader also hibernates the sandboxes of teams whose budget is spent (policy
        `hibernate`), once per period, after the ledger has been brought up to date."""
        try:
            await budget.enforce_budgets(self.rt)
        except Exception:
            log.exception("budget enforcement error")

    async def evaluate_alerts(self) -> None:
        """Then writes the budget and plan events the fresh figures call for (DESIGN §13)."""
        try:
            await alerts.evaluate(self.rt)
        except Exception:
            log.exception("alert evaluation error")
