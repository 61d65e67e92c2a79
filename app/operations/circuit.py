"""The upstream's health as a circuit state, from the outcomes of recent upstream attempts.

This is a health tracker shaped like a circuit breaker, not a breaker that refuses calls: the
upstream client still makes every call (admission, the lifecycle and the reconciler each
handle upstream errors themselves). What it adds is one honest answer to "is the upstream
healthy right now?" for `/readyz` and the `corral_upstream_circuit_state` metric.

State machine (each replica keeps its own; attempts are what the client observed):

    closed ──(≥ min_attempts in the window and failure ratio ≥ threshold)──▶ open
    open ──(cooldown elapsed)──▶ half-open
    half-open ──(next attempt succeeds)──▶ closed (window cleared)
    half-open ──(next attempt fails)──▶ open (cooldown restarts)

A failure is an attempt with no response or a 5xx. A 4xx (a 404 for a VM already gone, a 429
rate limit) means the upstream answered, so it counts as a success for health.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from app.upstream.requester import Observer

CircuitState = Literal["closed", "open", "half-open"]
STATES: tuple[CircuitState, ...] = ("closed", "open", "half-open")


class UpstreamCircuit:
    def __init__(
        self,
        *,
        window_seconds: float = 60.0,
        min_attempts: int = 5,
        failure_ratio: float = 0.5,
        cooldown_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_seconds = window_seconds
        self.min_attempts = min_attempts
        self.failure_ratio = failure_ratio
        self.cooldown_seconds = cooldown_seconds
        self.clock = clock
        # (when, failed) per attempt, oldest first; trimmed to the window on every use.
        self._attempts: deque[tuple[float, bool]] = deque()
        # Failures among _attempts, kept in step so no observation rescans the window.
        self._failures = 0
        self._opened_at: float | None = None

    def observe(self, operation: str, status: int | None, seconds: float) -> None:
        """The upstream client's observer signature, so it can be chained with the metrics."""
        del operation, seconds
        self.record(failed=status is None or status >= 500)

    def record(self, *, failed: bool) -> None:
        now = self.clock()
        current = self.state
        if current == "half-open":
            # The probe decides: one answer is all half-open waits for.
            self._attempts.clear()
            self._failures = 0
            if failed:
                self._opened_at = now
                return
            self._opened_at = None
            self._attempts.append((now, False))
            return
        self._attempts.append((now, failed))
        self._failures += failed
        self._trim(now)
        if current == "closed" and self._tripped():
            self._opened_at = now

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at >= self.cooldown_seconds:
            return "half-open"
        return "open"

    def summary(self) -> dict[str, object]:
        """What /readyz shows: the state and the recent attempts it rests on."""
        self._trim(self.clock())
        return {
            "state": self.state,
            "recent_attempts": len(self._attempts),
            "recent_failures": self._failures,
            "window_seconds": self.window_seconds,
        }

    def _trim(self, now: float) -> None:
        while self._attempts and now - self._attempts[0][0] > self.window_seconds:
            _, failed = self._attempts.popleft()
            self._failures -= failed

    def _tripped(self) -> bool:
        total = len(self._attempts)
        if total < self.min_attempts:
            return False
        return self._failures / total >= self.failure_ratio


def chain(*observers: Observer) -> Observer:
    """One observer that tells each of `observers` about every attempt, in order."""

    def observe(operation: str, status: int | None, seconds: float) -> None:
        for observer in observers:
            observer(operation, status, seconds)

    return observe
