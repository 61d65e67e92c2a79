"""A short-lived cache of authenticated keys, so a request does not cost a database read.

An entry lives TTL seconds at most. Revoking, rotating or deleting through this replica forgets
the key at once; another replica may still accept it for at most TTL seconds, well inside the
5 seconds within which a revocation must take effect everywhere."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime

from app import clock
from app.identity.actor import Actor

TTL_SECONDS = 2.0
_MAX_ENTRIES = 10_000


class KeyCache:
    def __init__(self, ttl: float = TTL_SECONDS) -> None:
        self.ttl = ttl
        # sha256(token) → (actor, key expiry, cached until (monotonic))
        self._entries: dict[bytes, tuple[Actor, datetime | None, float]] = {}

    @staticmethod
    def _slot(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, token: str) -> Actor | None:
        entry = self._entries.get(self._slot(token))
        if entry is None:
            return None
        actor, expires_at, until = entry
        if until < time.monotonic() or (expires_at is not None and expires_at <= clock.now()):
            self._entries.pop(self._slot(token), None)
            return None
        return actor

    def put(self, token: str, actor: Actor, expires_at: datetime | None) -> None:
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()
        self._entries[self._slot(token)] = (actor, expires_at, time.monotonic() + self.ttl)

    def forget(self, key_id: str | None = None, *, team_id: str | None = None) -> None:
        """Drop one key, or every key of a team."""
        for slot, (actor, _, _) in list(self._entries.items()):
            if actor.key_id == key_id or (team_id is not None and actor.team_id == team_id):
                self._entries.pop(slot, None)
