"""Browser-token signing keys: derived from a configured root, never stored; rotated with an
overlap so that a rotation signs nobody out.

Root secret, the one thing the database never holds (first that is configured):

    CORRAL_BROWSER_TOKEN_SECRET   required when the upstream is codesandbox (app/settings.py)
    CORRAL_ADMIN_KEY              embedded and simulated set-ups that configure one
    <data_dir>/browser-token-root a random root made once beside the embedded Postgres (mode
                                  0600), for `make run` with neither: one machine, one root

Every replica must resolve the same root; with several replicas set one of the first two.

Keys: a `browser_token_keys` row holds a key's id (the tokens' `kid` header), a random salt,
when replicas start signing with it (`activates_at`) and when it stops verifying
(`retires_at`). The HS256 key is HKDF-SHA256(root, salt, info = source + kid) (RFC 5869), so
a dump of the table (or of the whole database) gives ids and salts, with which nothing can be
signed. Changing the root itself invalidates every outstanding token (at most 15 minutes of
them): pages get fresh ones from their backend.

Rotation at time t (`rotate`, an admin route), under a table lock so rotations serialise:

    new key K            activates_at = t + ACTIVATION_SECONDS
    each older key       still without a retirement: retires_at = K.activates_at
                         + MAX_TOKEN_TTL_SECONDS + KEY_CACHE_SECONDS

Each replica caches the verifying keys for KEY_CACHE_SECONDS (by Corral's clock), and
ACTIVATION_SECONDS is longer, so every replica accepts K before any replica signs with it.
A replica signs with the verifying key of the latest `activates_at` not after now, so the old
key signs until K activates, and its last token expires before the old key retires. Within
the window the table holds both; afterwards the old row stays as history, verifying nothing.

The first key is made on first use (or by a rotation of an empty table) and signs at once:
there is no other key anyone could be signing with.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from app import clock
from app.audit import service as audit
from app.db import transaction
from app.identity.actor import Actor
from app.models import BrowserTokenKey
from app.sessions import key_repository as repository
from app.sessions.schemas import MAX_TOKEN_TTL_SECONDS
from app.settings import Settings

if TYPE_CHECKING:
    from app.runtime import Runtime

KEY_CACHE_SECONDS = 20
ACTIVATION_SECONDS = 3 * KEY_CACHE_SECONDS
# How long past its activation a replaced key keeps verifying: its last token's lifetime, and a
# cache period for a replica whose clock runs a little behind.
RETIREMENT_SECONDS = MAX_TOKEN_TTL_SECONDS + KEY_CACHE_SECONDS
ROOT_FILE = "browser-token-root"

KeyState = Literal["pending", "signing", "verifying", "retired"]


@dataclass(frozen=True)
class Root:
    """The root secret and where it came from (which also separates the derivations)."""

    source: Literal["browser-token-secret", "admin-key", "data-dir"]
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: bytes = field(repr=False)
    activates_at: datetime
    retires_at: datetime | None


def root_of(settings: Settings) -> Root:
    configured = settings.browser_token_secret
    if configured is not None:
        return Root("browser-token-secret", configured.get_secret_value().encode())
    if settings.admin_key is not None:
        return Root("admin-key", settings.admin_key.get_secret_value().encode())
    return Root("data-dir", _data_dir_root(Path(settings.data_dir)))


def _data_dir_root(data_dir: Path) -> bytes:
    """The root kept in the data directory, made once. Written to a private temporary file and
    hard-linked into place, so concurrent first starts agree and nobody reads half a file."""
    path = data_dir / ROOT_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        scratch = data_dir / f".{ROOT_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(32).encode())
        finally:
            os.close(fd)
        try:
            os.link(scratch, path)
        except FileExistsError:
            pass
        finally:
            scratch.unlink()
    return path.read_bytes().strip()


def derive(root: Root, kid: str, salt: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) of the root, for one 32-byte output block: extract with the
    key's salt, expand with the root's source and the key id as info."""
    prk = hmac.new(salt, root.secret, hashlib.sha256).digest()
    info = b"corral browser-token v1\x00" + root.source.encode() + b"\x00" + kid.encode()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def state_of(key: BrowserTokenKey, signing: BrowserTokenKey | None, at: datetime) -> KeyState:
    if key.retires_at is not None and key.retires_at <= at:
        return "retired"
    if key.activates_at > at:
        return "pending"
    return "signing" if key is signing else "verifying"


class _Lifetime(Protocol):
    @property
    def activates_at(self) -> datetime: ...
    @property
    def retires_at(self) -> datetime | None: ...


_K = TypeVar("_K", bound=_Lifetime)


def signer(keys: Iterable[_K], at: datetime) -> _K | None:
    """The key replicas sign with at `at`: of those verifying, the latest already active."""
    active = [
        k for k in keys if k.activates_at <= at and (k.retires_at is None or k.retires_at > at)
    ]
    return max(active, key=lambda k: k.activates_at) if active else None


class KeyRing:
    """One replica's view of the verifying keys, reloaded every KEY_CACHE_SECONDS."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._root: Root | None = None
        self._keys: list[SigningKey] = []
        self._loaded_at: datetime | None = None
        self._lock = asyncio.Lock()

    @property
    def root(self) -> Root:
        if self._root is None:
            self._root = root_of(self.settings)
        return self._root

    def invalidate(self) -> None:
        self._loaded_at = None

    def _fresh(self, at: datetime) -> bool:
        loaded = self._loaded_at
        # A clock moved back (a test, a simulated rehearsal reset) also means reload.
        return loaded is not None and loaded <= at < loaded + timedelta(seconds=KEY_CACHE_SECONDS)

    async def _load(self, rt: Runtime, at: datetime) -> list[SigningKey]:
        if self._fresh(at):
            return self._keys
        async with self._lock:
            if self._fresh(at):
                return self._keys
            async with transaction(rt.sessions) as session:
                rows = await repository.verifying(session, at)
            self._keys = [
                SigningKey(
                    kid=row.kid,
                    secret=derive(self.root, row.kid, row.salt),
                    activates_at=row.activates_at,
                    retires_at=row.retires_at,
                )
                for row in rows
            ]
            # An empty table is not cached: the first key may be made by any replica.
            self._loaded_at = at if self._keys else None
            return self._keys

    async def verifying(self, rt: Runtime) -> dict[str, bytes]:
        """Every key a token may be signed with now, by id."""
        at = clock.now()
        return {
            k.kid: k.secret
            for k in await self._load(rt, at)
            if k.retires_at is None or k.retires_at > at
        }

    async def signing(self, rt: Runtime) -> SigningKey:
        """The key to sign with now, making the first one when there is none."""
        at = clock.now()
        key = signer(await self._load(rt, at), at)
        if key is not None:
            return key
        async with transaction(rt.sessions) as session:
            await repository.lock(session)
            rows = await repository.verifying(session, at)
            if signer(rows, at) is None:
                await repository.add(session, _new_key(at, activates_at=at))
        self.invalidate()
        key = signer(await self._load(rt, at), at)
        assert key is not None, "a signing key was just made"
        return key


def _new_key(at: datetime, *, activates_at: datetime) -> BrowserTokenKey:
    return BrowserTokenKey(
        kid=secrets.token_hex(8),
        salt=secrets.token_bytes(32),
        created_at=at,
        activates_at=activates_at,
        retires_at=None,
    )


def ring_of(rt: Runtime) -> KeyRing:
    """The runtime's key ring, made anew if its settings were replaced (the root may differ)."""
    ring = rt.browser_token_keys
    if ring is None or ring.settings is not rt.settings:
        ring = rt.browser_token_keys = KeyRing(rt.settings)
    return ring


# --- admin ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyView:
    kid: str
    state: KeyState
    created_at: datetime
    activates_at: datetime
    retires_at: datetime | None


def _views(rows: list[BrowserTokenKey], at: datetime) -> list[KeyView]:
    signing = signer(rows, at)
    return [
        KeyView(
            kid=r.kid,
            state=state_of(r, signing, at),
            created_at=r.created_at,
            activates_at=r.activates_at,
            retires_at=r.retires_at,
        )
        for r in sorted(rows, key=lambda r: (r.activates_at, r.created_at), reverse=True)
    ]


async def list_keys(rt: Runtime) -> list[KeyView]:
    """Every key with its lifetime, newest first; never a secret (none is stored)."""
    at = clock.now()
    async with transaction(rt.sessions) as session:
        return _views(list(await repository.every(session)), at)


async def rotate(rt: Runtime, actor: Actor) -> KeyView:
    """Add a key that signs from ACTIVATION_SECONDS on; retire the ones it replaces after the
    overlap (module docstring). On an empty table the new key signs at once."""
    at = clock.now()
    async with transaction(rt.sessions) as session:
        await repository.lock(session)
        rows = list(await repository.every(session))
        replaced = [r for r in rows if r.retires_at is None or r.retires_at > at]
        activates_at = at + timedelta(seconds=ACTIVATION_SECONDS) if replaced else at
        key = _new_key(at, activates_at=activates_at)
        retires_at = activates_at + timedelta(seconds=RETIREMENT_SECONDS)
        retiring = [r for r in replaced if r.retires_at is None]
        for row in retiring:
            row.retires_at = retires_at
        await repository.add(session, key)
        await audit.record(
            session,
            actor=actor.key_id,
            action="browser_token_key.rotate",
            team_id=None,
            target=key.kid,
            detail={
                "activates_at": activates_at.isoformat(),
                "retiring": [r.kid for r in retiring],
                "retires_at": retires_at.isoformat() if retiring else None,
            },
        )
        [view] = _views([key], at)
    ring_of(rt).invalidate()
    return view
