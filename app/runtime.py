"""What a running Corral holds for its lifetime: settings, the database, the upstream client,
and the per-process state that lives as long as they do (the key cache, the upstream circuit,
the cached database gauges)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.identity.cache import KeyCache
from app.operations.circuit import UpstreamCircuit
from app.settings import Settings
from app.upstream.client import UpstreamClient

if TYPE_CHECKING:
    # Only for the annotation: the collector's budget queries import this module.
    from app.metrics_collector import DatabaseGauges
    from app.sessions.signing_keys import KeyRing


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    upstream: UpstreamClient
    # The in-process simulator's FastAPI app when upstream_mode is "simulator".
    simulator: Any = None
    keys: KeyCache = field(default_factory=KeyCache)
    # The health of the upstream as this process sees it; `main.build_runtime` makes the
    # upstream client report to it, a runtime built without one starts closed.
    circuit: UpstreamCircuit = field(default_factory=UpstreamCircuit)
    # `/metrics`'s scrape-time gauges, made on the first scrape (`operations.gauges_of`).
    gauges: DatabaseGauges | None = None
    # The browser-token signing keys this replica accepts, made on first use and reloaded
    # every few seconds (app/sessions/signing_keys.py).
    browser_token_keys: KeyRing | None = None

    async def catch_up_with_the_simulator(self) -> None:
        """After waiting out a clock jump (`app.clock_gate`): take the simulator's time, in
        case the replica that jumped died before it told the others."""
        # Imported here: the clock's operations are built on this module.
        from app.operations.clock import catch_up

        await catch_up(self)
