"""Corral's one clock: every "now" of the service comes from `now()` (DESIGN §12).

In production it is the wall clock. With a simulated upstream it follows the simulator's
clock: the in-process simulator's directly (`CLOCK.follow`), a standalone one's through the
offset every replica keeps in step (`app.operations.clock`), so a test or a rehearsal can run
a month in minutes. SQL never asks Postgres for the time: statements take `now()` as a
parameter.

`wall()` is real time, for what must not move with a simulated month: how long a replica has
been silent, how long to wait for an answer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._source: Callable[[], datetime] | None = None

    def now(self) -> datetime:
        if self._source is not None:
            return self._source()
        return datetime.now(UTC) + self._offset

    @property
    def offset(self) -> timedelta:
        return self.now() - datetime.now(UTC)

    def set_offset(self, offset: timedelta) -> None:
        """Run `offset` ahead of the wall clock (a standalone simulator's offset)."""
        self._source = None
        self._offset = offset

    def follow(self, source: Callable[[], datetime] | None) -> None:
        """Take the time from `source` (an in-process simulator's clock); None: the wall
        clock again, with no offset."""
        self._source = source
        self._offset = timedelta(0)


CLOCK = Clock()


def now() -> datetime:
    return CLOCK.now()


def wall() -> datetime:
    return datetime.now(UTC)


def clamp(moment: datetime, low: datetime, high: datetime) -> datetime:
    """`moment`, but never before `low` nor after `high`."""
    return max(low, min(moment, high))
