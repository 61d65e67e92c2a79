"""Driving a simulator's clock from Corral: the control API (`/_simulator/clock`) of the
in-process simulator or of a standalone one (`corral simulator`), the same calls either way."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from app.upstream.schemas import parse_timestamp


class SimulatorUnreachable(Exception):
    """The simulator's control API did not answer as expected."""


@dataclass(frozen=True)
class SimulatedTime:
    now: datetime
    offset_seconds: float
    hibernated: tuple[str, ...] = ()


class SimulatorClock:
    def __init__(self, base_url: str, *, app: Any = None, timeout: float = 10.0) -> None:
        transport = httpx.ASGITransport(app=app) if app is not None else None
        self._http = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def read(self) -> SimulatedTime:
        return await self._call("GET", "/_simulator/clock")

    async def advance(self, seconds: float) -> SimulatedTime:
        """Move the simulated clock; the simulator hibernates every VM whose idle deadline
        falls in the jump, at that deadline."""
        return await self._call("POST", "/_simulator/clock/advance", {"seconds": seconds})

    async def _call(self, method: str, path: str, body: Any = None) -> SimulatedTime:
        try:
            response = await self._http.request(method, path, json=body)
            response.raise_for_status()
            data = response.json()
            moment = parse_timestamp(data["now"])
            assert moment is not None
            return SimulatedTime(
                now=moment,
                offset_seconds=float(data["offset_seconds"]),
                hibernated=tuple(data.get("hibernated", ())),
            )
        except (httpx.HTTPError, ValueError, KeyError, AssertionError) as exc:
            raise SimulatorUnreachable(f"simulator clock {method} {path}: {exc}") from exc
