"""API key material: `crl_<id>_<secret>`. The secret is shown once; only its SHA-256 is kept."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

PREFIX = "crl"
_ID_ALPHABET = string.ascii_lowercase + string.digits

SCOPES = frozenset(
    {
        "sandboxes:read",
        "sandboxes:write",
        "sessions:read",
        "sessions:write",
        "usage:read",
        "admin",
    }
)


@dataclass(frozen=True)
class NewKey:
    key_id: str
    secret: str

    @property
    def token(self) -> str:
        return f"{PREFIX}_{self.key_id}_{self.secret}"

    @property
    def digest(self) -> bytes:
        return digest(self.secret)


def generate() -> NewKey:
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))
    return NewKey(key_id=key_id, secret=secrets.token_urlsafe(32))


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse(token: str) -> tuple[str, str] | None:
    """Split a presented key into (id, secret); None when it is not shaped like a Corral key."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    key_id, secret = parts[1], parts[2]
    if not (1 <= len(key_id) <= 32 and key_id.isalnum() and 16 <= len(secret) <= 128):
        return None
    return key_id, secret


def matches(secret: str, stored_digest: bytes) -> bool:
    return hmac.compare_digest(digest(secret), stored_digest)
