"""The simulated clock: real UTC time plus an offset that tests move forward.

Time only ever moves forward (advances are non-negative), which is what lets the simulator
evaluate auto-hibernation lazily: a deadline that has passed stays passed. The clock can also be
frozen so that tests can assert exact durations; an advance still moves a frozen clock.
"""

from datetime import UTC, datetime, timedelta


class SimulatedClock:
    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._frozen_at: datetime | None = None

    def reset(self) -> None:
        """Back to real time, unfrozen (only for a simulator reset, which forgets every VM)."""
        self._offset = timedelta(0)
        self._frozen_at = None

    def now(self) -> datetime:
        if self._frozen_at is not None:
            return self._frozen_at
        return datetime.now(UTC) + self._offset

    @property
    def offset_seconds(self) -> float:
        return self._offset.total_seconds()

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the simulated clock only moves forward")
        delta = timedelta(seconds=seconds)
        self._offset += delta
        if self._frozen_at is not None:
            self._frozen_at += delta

    def freeze(self) -> None:
        if self._frozen_at is None:
            self._frozen_at = self.now()

    def unfreeze(self) -> None:
        if self._frozen_at is not None:
            # Resume from the frozen instant rather than jumping to real time plus the offset,
            # which would make the clock leap by however long it stood still.
            self._offset = self._frozen_at - datetime.now(UTC)
            self._frozen_at = None
