"""What a running Corral holds for its lifetime: settings, the database, the upstream client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.identity.cache import KeyCache
from app.settings import Settings
from app.upstream.client import UpstreamClient


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    upstream: UpstreamClient
    # The in-process simulator's FastAPI app when upstream_mode is "simulator".
    simulator: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    keys: KeyCache = field(default_factory=KeyCache)
