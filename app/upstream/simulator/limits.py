"""Hourly rate-limit windows (requests per hour, sandboxes created per hour).

Windows are fixed UTC hours of the simulated clock, so advancing the clock past the hour resets
them; `reset` is the end of the window in epoch seconds (CONTRACT §1.3 leaves the format open, and
an integer is what `/meta/info` uses). Only admitted work is counted, so `used` never exceeds the
limit and a refused call reports `remaining` 0.
"""

from datetime import datetime

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

    def has_room(self, now: datetime, limit: int) -> bool:
        return self.used(now) < limit

    def take(self, now: datetime) -> None:
        self._roll(now)
        self._used += 1
