"""Browser tokens: short-lived, signed, bound to one team, user, sandbox and permission.

A product backend asks Corral for one (`POST /v1/sandboxes/{id}/browser-tokens`) and hands it
to its page; the page presents it to `POST /v1/browser/session` whenever the browser SDK calls
`getSession`, and gets a fresh session without ever holding an API key.

Format: a JWT (RFC 7519) signed HS256 by PyJWT, header `{"alg", "kid", "typ"}` where `kid`
names the signing key (app/sessions/signing_keys.py: keys derived from a configured root,
rotated with an overlap). Claims: `iss` corral, `aud` corral-browser-session, `sub` the
person, `team`, `sbx` (Corral's sandbox id), `perm` (read | write), `key` (the API key that
issued it: revoking that key kills the token), `iat`, `exp` (at most 15 minutes on), `jti`.

Verification, each refusal an `InvalidToken` (401):

- every segment is canonical base64url: the alphabet only, no padding, and no stray bits in
  the last character, so a token has one spelling only. PyJWT accepts padded segments (some
  issuers pad), and which spellings it takes has changed between its releases: Corral
  decides that itself, before PyJWT reads the token;
- the header carries nothing but `alg`, `kid`, `typ`; `kid` names a key that verifies now;
- PyJWT checks the signature with `algorithms=["HS256"]` only (so `alg: none` and any other
  algorithm are refused), the audience and issuer, and that every claim is present;
- expiry is checked against Corral's clock (`app.clock`), not PyJWT's wall clock, because with
  a simulated upstream the two differ; the claims' types are checked last.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from app.errors import Unauthorized
from app.runtime import Runtime
from app.sessions import signing_keys
from app.sessions.signing_keys import SigningKey

ALGORITHM = "HS256"
ISSUER = "corral"
AUDIENCE = "corral-browser-session"
HEADER_FIELDS = frozenset({"alg", "kid", "typ"})
REQUIRED_CLAIMS = ["iss", "aud", "sub", "team", "sbx", "perm", "key", "iat", "exp", "jti"]
# Far above any token Corral issues (~400 bytes): a larger one is refused unread.
MAX_TOKEN_LENGTH = 4096
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


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
    key: str  # the API key that issued the token; revoking it kills the token
    iat: int
    exp: int
    jti: str
    iss: str = ISSUER
    aud: str = AUDIENCE

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.exp, UTC)


def new_claims(
    *, user: str, team: str, sandbox_id: str, permission: str, key_id: str, at: datetime, ttl: int
) -> BrowserClaims:
    issued = int(at.timestamp())
    return BrowserClaims(
        sub=user,
        team=team,
        sbx=sandbox_id,
        perm=permission,
        key=key_id,
        iat=issued,
        exp=issued + ttl,
        jti=secrets.token_urlsafe(12),
    )


def encode(claims: BrowserClaims, key: SigningKey) -> str:
    return jwt.encode(asdict(claims), key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})


def canonical(segment: str) -> bool:
    """Whether `segment` is the one base64url spelling (unpadded) of the bytes it decodes to."""
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        return False
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return False
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == segment


def decode(token: str, keys: Mapping[str, bytes], *, at: datetime) -> BrowserClaims:
    """The claims of a token signed by one of `keys` (by kid) that has not expired at `at`,
    else InvalidToken."""
    parts = token.split(".")
    if len(token) > MAX_TOKEN_LENGTH or len(parts) != 3 or not all(map(canonical, parts)):
        raise InvalidToken("The browser token is malformed.")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise InvalidToken("The browser token is malformed.") from exc
    if header.get("alg") != ALGORITHM or not header.keys() <= HEADER_FIELDS:
        raise InvalidToken("The browser token's header is not Corral's HS256 header.")
    kid = header.get("kid")
    secret = keys.get(kid) if isinstance(kid, str) else None
    if secret is None:
        raise InvalidToken("The browser token's signing key is unknown or retired.")
    try:
        raw: Any = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={
                "require": REQUIRED_CLAIMS,
                "strict_aud": True,
                # Checked below against Corral's clock.
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.InvalidSignatureError as exc:
        raise InvalidToken("The browser token's signature does not verify.") from exc
    except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
        raise InvalidToken("The browser token is not for this service.") from exc
    except jwt.InvalidTokenError as exc:
        raise InvalidToken("The browser token's claims are malformed.") from exc
    try:
        claims = BrowserClaims(**raw)
    except TypeError as exc:
        raise InvalidToken("The browser token's claims are malformed.") from exc
    if not _well_typed(claims):
        raise InvalidToken("The browser token's claims are malformed.")
    if claims.exp <= int(at.timestamp()):
        raise InvalidToken("The browser token has expired.")
    return claims


def _well_typed(claims: BrowserClaims) -> bool:
    texts = (claims.sub, claims.team, claims.sbx, claims.perm, claims.key, claims.jti)
    times = (claims.iat, claims.exp)
    return (
        all(isinstance(value, str) for value in (*texts, claims.iss, claims.aud))
        and all(type(value) is int for value in times)
        and claims.perm in ("read", "write")
    )


async def signing_key(rt: Runtime) -> SigningKey:
    """The key replicas sign with now."""
    return await signing_keys.ring_of(rt).signing(rt)


async def verify(rt: Runtime, token: str, *, at: datetime) -> BrowserClaims:
    return decode(token, await signing_keys.ring_of(rt).verifying(rt), at=at)
