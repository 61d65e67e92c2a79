"""The identity domain's own errors (the tree of every error is in `app.errors`)."""

from __future__ import annotations

from collections.abc import Iterable

from app.errors import Conflict, NotFound, Unprocessable


class KeyNotFound(NotFound):
    """No such key; `or_revoked` when a revoked key is refused the same way (rotation)."""

    def __init__(self, key_id: str, *, or_revoked: bool = False) -> None:
        suffix = " or is revoked" if or_revoked else ""
        super().__init__(f"Key {key_id!r} does not exist{suffix}.")


class UnknownScope(Unprocessable):
    kind = "unknown-scope"

    def __init__(self, scopes: Iterable[str]) -> None:
        super().__init__(f"Unknown scopes: {sorted(scopes)}.")


class AdminScopeOnTeamKey(UnknownScope):
    """`admin` is a scope, but never one a team key may hold."""

    def __init__(self) -> None:
        Unprocessable.__init__(self, "Team keys cannot hold the admin scope.")


class ReservedTeam(Conflict):
    """The team `unassigned` holds the VMs the reconciler adopts (DESIGN §15): a key for it
    would let a caller drive sandboxes that no team owns."""

    kind = "reserved-team"

    def __init__(self, team_id: str) -> None:
        super().__init__(
            f"Team {team_id!r} holds adopted VMs only; no key can be issued for it.",
            extra={"team": team_id},
        )
