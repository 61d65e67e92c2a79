"""Fault injection: decides, per upstream call, whether it fails, hangs, or loses its answer.

Three independent draws are made for every call of an operation that has a `FaultConfig`, in a
fixed order, so a seeded run repeats exactly given the same sequence of calls. Operations without
a fault config draw nothing, so configuring one operation does not shift another's sequence.
"""

import random
from dataclasses import dataclass

from app.upstream.simulator.config import FaultConfig


@dataclass(frozen=True, slots=True)
class FaultPlan:
    error_status: int | None = None
    timeout: bool = False
    lose_response: bool = False


NO_FAULT = FaultPlan()


class FaultInjector:
    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(seed)

    def reseed(self, seed: int | None) -> None:
        self._rng = random.Random(seed)

    def plan(self, fault: FaultConfig | None) -> FaultPlan:
        if fault is None:
            return NO_FAULT
        error, timeout, lose = self._rng.random(), self._rng.random(), self._rng.random()
        if error < fault.error_rate:
            return FaultPlan(error_status=fault.status)
        if timeout < fault.timeout_rate:
            return FaultPlan(timeout=True)
        return FaultPlan(lose_response=lose < fault.lose_response_rate)
