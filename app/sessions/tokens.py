"""Browser tokens: short-lived, signed, bound to one team, user, sandbox and permission.

A product backend asks Corral for one (`POST /v1/sandboxes/{id}/browser-tokens`) and hands it
to its page; the page presents it to `POST /v1/browser/session` whenever the browser SDK calls
`getSession`, and gets a fresh session without ever holding an API key.

Format: a JWT-shaped compact token, `base64url(header).base64url(claims).base64url(signature)`,
signed with HMAC-SHA256. Verification accepts exactly one header, `{"alg":"HS256","typ":"JWT"}`:
`alg: none`, other algorithms and any header change are refused before the claims are read,
and the signature is compared in constant time.

The signing secret must be the same in every replica. It is `CORRAL_BROWSER_TOKEN_SECRET`
when set; otherwise a random 32-byte secret generated once and kept in the `signing_secrets`
table (the first replica to need it inserts it, `ON CONFLICT DO NOTHING`, and every replica
reads back the one row that won). Changing the setting invalidates outstanding tokens, which
live at most 15 minutes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from app.db import transaction
from app.errors import Unauthorized
from app.models import SigningSecret
from app.runtime import Runtime

HEADER = {"alg": "HS256", "typ": "JWT"}
ISSUER = "corral"
AUDIENCE = "corral-browser-session"
SECRET_NAME = "browser-token"
_ENCODED_HEADER = (
    base64.urlsafe_b64encode(json.dumps(HEADER, separators=(",", ":")).encode())
    .rstrip(b"=")
    .decode()
)


class InvalidToken(Unauthorized):
    """The browser token is malformed, forged, expired or no longer backed by its key."""

    kind = "invalid-browser-token"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


@dataclass(frozen=True)
class BrowserClaims:
    sub: str  # the person (the `user` a session is minted for)
    team: str
    sbx: str  # Corral's sandbox id
    perm: str  # read | write
    kid: str  # the API key that issued the token; revoking it kills the token
    iat: int
    exp: int
    jti: str
    iss: str = ISSUER
    aud: str = AUDIENCE

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.exp, UTC)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or any(c not in _B64URL for c in text):
        raise InvalidToken("The browser token is malformed.")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("The browser token is malformed.") from exc


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _sign(secret: bytes, signing_input: str) -> bytes:
    return hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()


def new_claims(
    *, user: str, team: str, sandbox_id: str, permission: str, key_id: str, at: datetime, ttl: int
) -> BrowserClaims:
    issued = int(at.timestamp())
    return BrowserClaims(
        sub=user,
        team=team,
        sbx=sandbox_id,
        perm=permission,
        kid=key_id,
        iat=issued,
        exp=issued + ttl,
        jti=secrets.token_urlsafe(12),
    )


def encode(claims: BrowserClaims, secret: bytes) -> str:
    payload = _b64(json.dumps(asdict(claims), separators=(",", ":"), sort_keys=True).encode())
    signing_input = f"{_ENCODED_HEADER}.{payload}"
    return f"{signing_input}.{_b64(_sign(secret, signing_input))}"


def decode(token: str, secret: bytes, *, at: datetime) -> BrowserClaims:
    """The claims of a token this Corral signed and that has not expired, else InvalidToken."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("The browser token is malformed.")
    header, payload, signature = parts
    # Only the one header Corral writes: this refuses `alg: none` and algorithm confusion
    # without ever interpreting what the token claims about itself.
    if not hmac.compare_digest(header.encode(), _ENCODED_HEADER.encode()):
        raise InvalidToken("The browser token's header is not HS256.")
    expected = _sign(secret, f"{header}.{payload}")
    if not hmac.compare_digest(_unb64(signature), expected):
        raise InvalidToken("The browser token's signature does not verify.")
    try:
        raw: Any = json.loads(_unb64(payload))
        claims = BrowserClaims(**raw)
    except (ValueError, TypeError) as exc:
        raise InvalidToken("The browser token's claims are malformed.") from exc
    if not _well_typed(claims):
        raise InvalidToken("The browser token's claims are malformed.")
    if claims.iss != ISSUER or claims.aud != AUDIENCE:
        raise InvalidToken("The browser token is not for this service.")
    if claims.exp <= int(at.timestamp()):
        raise InvalidToken("The browser token has expired.")
    return claims


def _well_typed(claims: BrowserClaims) -> bool:
    texts = (claims.sub, claims.team, claims.sbx, claims.perm, claims.kid, claims.jti)
    times = (claims.iat, claims.exp)
    return (
        all(isinstance(value, str) for value in (*texts, claims.iss, claims.aud))
        and all(type(value) is int for value in times)
        and claims.perm in ("read", "write")
    )


async def signing_secret(rt: Runtime) -> bytes:
    """The secret every replica signs and verifies with (see the module docstring)."""
    configured = rt.settings.browser_token_secret
    if configured is not None:
        return configured.get_secret_value().encode()
    if rt.signing_secret is not None:
        return rt.signing_secret
    async with transaction(rt.sessions) as session:
        await session.execute(
            insert(SigningSecret)
            .values(name=SECRET_NAME, secret=secrets.token_bytes(32))
            .on_conflict_do_nothing(index_elements=["name"])
        )
        stored = await session.scalar(
            select(SigningSecret.secret).where(SigningSecret.name == SECRET_NAME)
        )
    assert stored is not None
    rt.signing_secret = stored
    return stored
