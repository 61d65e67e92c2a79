"""The workspace's rate limits: concurrent VMs, requests per hour, sandboxes created per hour.

Hourly windows are fixed UTC hours of the simulated clock, so advancing the clock past the hour
resets them; `reset` is the end of the window in epoch seconds (CONTRACT §1.3 leaves the format
open, and an integer is what `/meta/info` uses). Only admitted work is counted, so `used` never
exceeds the limit and a refused call reports `remaining` 0 in its header family.
"""

from datetime import datetime

from app.upstream.simulator.config import SimulatorConfig
from app.upstream.simulator.errors import RateLimited

_HOUR = 3600


class HourlyWindow:
    def __init__(self) -> None:
        self._window_start = 0
        self._used = 0

    def _roll(self, now: datetime) -> None:
        start = int(now.timestamp()) // _HOUR * _HOUR
        if start != self._window_start:
            self._window_start = start
            self._used = 0

    def used(self, now: datetime) -> int:
        self._roll(now)
        return self._used

    def reset_at(self, now: datetime) -> int:
        self._roll(now)
        return self._window_start + _HOUR

    def take(self, now: datetime) -> None:
        self._roll(now)
        self._used += 1


class Limits:
    """Checks and reports the three limit families; the running count is the caller's."""

    def __init__(self) -> None:
        self.requests = HourlyWindow()
        self.sandboxes = HourlyWindow()

    def admit_request(self, now: datetime, config: SimulatorConfig) -> None:
        if self.requests.used(now) >= config.requests_hourly_limit:
            raise RateLimited(
                f"Hourly request limit reached ({config.requests_hourly_limit} requests per hour)"
            )
        self.requests.take(now)

    def check_sandbox_room(self, now: datetime, config: SimulatorConfig) -> None:
        if self.sandboxes.used(now) >= config.sandboxes_hourly_limit:
            raise RateLimited(
                f"Hourly sandbox creation limit reached ({config.sandboxes_hourly_limit} "
                "sandboxes per hour)"
            )

    @staticmethod
    def check_vm_room(running: int, config: SimulatorConfig) -> None:
        if running >= config.concurrent_vm_limit:
            raise RateLimited(
                f"Concurrent VM limit reached: {running} of {config.concurrent_vm_limit} VMs "
                "are running"
            )

    def headers(
        self, now: datetime, config: SimulatorConfig, running: int
    ) -> list[tuple[bytes, bytes]]:
        sandboxes_used = self.sandboxes.used(now)
        sandboxes_left = config.sandboxes_hourly_limit - sandboxes_used
        requests_used = self.requests.used(now)
        values = {
            "x-csb-sandbox-hourly-remaining": max(0, sandboxes_left),
            "x-csb-sandbox-hourly-used": sandboxes_used,
            "x-csb-sandbox-hourly-reset": self.sandboxes.reset_at(now),
            "x-csb-rate-hourly-remaining": max(0, config.requests_hourly_limit - requests_used),
            "x-csb-rate-hourly-used": requests_used,
            "x-csb-rate-hourly-reset": self.requests.reset_at(now),
            "x-csb-vms-remaining": max(0, config.concurrent_vm_limit - running),
            "x-csb-vms-used": running,
        }
        return [(name.encode(), str(value).encode()) for name, value in values.items()]

    def report(self, now: datetime, config: SimulatorConfig, running: int) -> dict[str, object]:
        """The `rate_limits` object of `/meta/info`."""
        return {
            "concurrent_vms": {
                "limit": config.concurrent_vm_limit,
                "remaining": max(0, config.concurrent_vm_limit - running),
            },
            "requests_hourly": {
                "limit": config.requests_hourly_limit,
                "remaining": max(0, config.requests_hourly_limit - self.requests.used(now)),
                "reset": self.requests.reset_at(now),
            },
            "sandboxes_hourly": {
                "limit": config.sandboxes_hourly_limit,
                "remaining": max(0, config.sandboxes_hourly_limit - self.sandboxes.used(now)),
                "reset": self.sandboxes.reset_at(now),
            },
        }
