"""The dashboard's session cookie and its CSRF tokens.

Cookie `corral_dashboard`: a JWT signed HS256 by PyJWT, header `alg`, `kid`, `typ`; claims `iss`
corral, `aud` corral-dashboard, `sub` the API key's id (never the key), `kb` a binding to the
key's secret, `csrf` a random secret, `iat`, `exp`. HttpOnly, SameSite=Strict, Path=/dashboard,
Secure over https, and it lives `CORRAL_DASHBOARD_SESSION_HOURS` (8 h) of wall-clock time: a
sign-in is a person's working day, even while a rehearsal moves Corral's clock by a month.

Key: HKDF-SHA256 (RFC 5869) of the browser-token root (`signing_keys.root_of`: the configured
CORRAL_BROWSER_TOKEN_SECRET, else the admin key, else the data directory's root) with a salt and
an info label of its own, so it is never a browser-token key and every replica derives the same
one without storing anything. `kid` names the derivation and the root's source: a deployment
that starts configuring a secret signs everyone out cleanly instead of failing signatures.
Browser tokens need rotating keys because product pages hold them; a dashboard cookie is
re-checked against its key row on every request (`app.dashboard.auth`), so revoking the key is
the way to end one session, and changing the root ends them all.

`kb` = HMAC(session key, SHA-256 of the key's secret): the stored digest for a key row, the
digest of CORRAL_ADMIN_KEY for the configured admin key, whose id is always `env-admin`; a
changed admin key thus ends the sessions opened with the old one.

CSRF. Signed in, every form carries the session's `csrf` secret (synchroniser token; the cookie
is HttpOnly, so a page of another origin can read neither). Before sign-in, the login form is
protected by a signed double submit: GET /dashboard/login sets `corral_dashboard_login` to a
random nonce and puts HMAC(session key, nonce) in the form; the POST must bring both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from app.sessions.signing_keys import Root

COOKIE = "corral_dashboard"
LOGIN_COOKIE = "corral_dashboard_login"
PATH = "/dashboard"
ALGORITHM = "HS256"
ISSUER = "corral"
AUDIENCE = "corral-dashboard"
REQUIRED_CLAIMS = ["iss", "aud", "sub", "kb", "csrf", "iat", "exp"]
LOGIN_NONCE_SECONDS = 3600
# Far above a cookie Corral writes (~350 bytes): a larger one is refused unread.
MAX_COOKIE_LENGTH = 2048
_SALT = b"corral dashboard-session salt"
_INFO = b"corral dashboard-session v1\x00"


@dataclass(frozen=True)
class SessionKey:
    kid: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class DashboardSession:
    key_id: str
    binding: str
    csrf: str
    expires_at: datetime


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def session_key(root: Root) -> SessionKey:
    """HKDF-SHA256 of the root for one 32-byte block: extract with the dashboard's salt,
    expand with its label and the root's source."""
    prk = hmac.new(_SALT, root.secret, hashlib.sha256).digest()
    okm = hmac.new(prk, _INFO + root.source.encode() + b"\x01", hashlib.sha256).digest()
    return SessionKey(kid=f"dashboard-v1-{root.source}", secret=okm)


def binding(key: SessionKey, secret_sha256: bytes) -> str:
    return _b64(hmac.new(key.secret, b"key\x00" + secret_sha256, hashlib.sha256).digest()[:16])


def issue(
    key: SessionKey, *, key_id: str, kb: str, lifetime: timedelta
) -> tuple[str, DashboardSession]:
    # Wall-clock time, which PyJWT checks `exp` against too (module docstring).
    issued = datetime.now(UTC)
    session = DashboardSession(
        key_id=key_id, binding=kb, csrf=_b64(secrets.token_bytes(24)), expires_at=issued + lifetime
    )
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": key_id,
        "kb": kb,
        "csrf": session.csrf,
        "iat": int(issued.timestamp()),
        "exp": int(session.expires_at.timestamp()),
    }
    token = jwt.encode(claims, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})
    return token, session


def read(key: SessionKey, token: str) -> DashboardSession | None:
    """The session a cookie holds, or None when it is not one this key signed and still valid."""
    if len(token) > MAX_COOKIE_LENGTH:
        return None
    try:
        if jwt.get_unverified_header(token).get("kid") != key.kid:
            return None
        claims: dict[str, Any] = jwt.decode(
            token,
            key.secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": REQUIRED_CLAIMS, "strict_aud": True},
        )
    except jwt.InvalidTokenError:
        return None
    sub, kb, csrf, exp = claims["sub"], claims["kb"], claims["csrf"], claims["exp"]
    if not all(isinstance(v, str) and v for v in (sub, kb, csrf)) or type(exp) is not int:
        return None
    return DashboardSession(
        key_id=sub, binding=kb, csrf=csrf, expires_at=datetime.fromtimestamp(exp, UTC)
    )


def same(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of a form's token with the expected one."""
    if not presented:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def login_nonce() -> str:
    return _b64(secrets.token_bytes(24))


def login_token(key: SessionKey, nonce: str) -> str:
    return _b64(hmac.new(key.secret, b"login\x00" + nonce.encode(), hashlib.sha256).digest())
