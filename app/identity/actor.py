from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Actor:
    """Who is calling: an API key, its team (None for admins), its scopes and owner binding."""

    key_id: str
    team_id: str | None
    scopes: frozenset[str]
    is_admin: bool = False
    owner: str | None = None
    # When the key stops working on its own (rotation overlap, expiry); None: never.
    expires_at: datetime | None = None

    def has(self, scope: str) -> bool:
        return self.is_admin or scope in self.scopes
