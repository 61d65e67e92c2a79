"""A sandbox's states and the named sets every module asks about (DESIGN §3).

    live     starting, running, unknown   counted by admission against every limit
    stopped  hibernated, shutdown         exists upstream, not running
    final    deleted, failed              never runs again; hidden from the facade's listings

`unknown` is live: a sandbox whose last upstream call may have been applied keeps its slot
until the truth is known.
"""

from __future__ import annotations

from enum import StrEnum


class SandboxState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    HIBERNATED = "hibernated"
    SHUTDOWN = "shutdown"
    FAILED = "failed"
    DELETED = "deleted"
    UNKNOWN = "unknown"


LIVE: frozenset[SandboxState] = frozenset(
    {SandboxState.STARTING, SandboxState.RUNNING, SandboxState.UNKNOWN}
)
STOPPED: frozenset[SandboxState] = frozenset({SandboxState.HIBERNATED, SandboxState.SHUTDOWN})
FINAL: frozenset[SandboxState] = frozenset({SandboxState.DELETED, SandboxState.FAILED})


def sql_list(states: frozenset[SandboxState]) -> str:
    """`'a', 'b'` for a hand-written SQL `IN (...)` (constants only, sorted for stable SQL)."""
    return ", ".join(f"'{state.value}'" for state in sorted(states))
