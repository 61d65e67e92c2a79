"""Idle deadlines of running VMs, so auto-hibernation costs O(log n) per event, not a scan.

A min-heap of `(deadline, entry, vm)` with lazy invalidation: every activity pushes a fresh entry
and records its number on the VM; an entry whose number is no longer the VM's (or whose VM
stopped) is skipped when it surfaces. The heap is rebuilt from the running VMs when stale entries
outnumber live ones, which bounds it for VMs that see a lot of activity.
"""

import heapq
import itertools
from collections.abc import Collection, Iterator
from datetime import datetime

from app.upstream.simulator.vm import Vm, VmState

_SLACK = 1024


class IdleDeadlines:
    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, Vm]] = []
        self._entries = itertools.count()

    def schedule(self, vm: Vm, running: Collection[Vm]) -> None:
        deadline = vm.idle_deadline
        if deadline is None:
            return
        vm.idle_entry = next(self._entries)
        heapq.heappush(self._heap, (deadline, vm.idle_entry, vm))
        if len(self._heap) > 2 * len(running) + _SLACK:
            self._heap = [
                (deadline, vm.idle_entry, vm)
                for vm in running
                if (deadline := vm.idle_deadline) is not None
            ]
            heapq.heapify(self._heap)

    def expired(self, now: datetime) -> Iterator[tuple[datetime, Vm]]:
        """Yield, earliest first, each running VM whose current deadline is at or before now."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, entry, vm = heapq.heappop(heap)
            if vm.idle_entry == entry and vm.state is VmState.RUNNING:
                yield deadline, vm
