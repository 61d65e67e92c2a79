"""Minting per-user browser sessions, their record, and browser tokens (DESIGN §6).

A mint, whoever asks (an API key, a browser token, the `/csb` facade):

    authorise (scope by permission, owner binding) → take a rate-limit slot (one short
    transaction: per-(team, user) advisory lock, count the window, insert the record, and
    charge one session to the team's and the key's hourly meter, `app.metering`)
    → start the sandbox (admitted when it is not running; RUNNING when it is)
    → upstream POST /vm/{id}/sessions → settle the record with the boot type, audit.

Invariants:
- A pitcher token exists only in the answer to the caller that minted it: it is never stored,
  logged, audited, or put in an error. Records hold who minted what, for whom, and when.
- The session id is a pure function of (team, user) (`session_id_for`), so the same person is
  the same Linux user in a VM on every mint, and two teams' users never share one.
- An owner-bound key mints only on its owner's sandboxes and only for its owner as the user:
  otherwise it could act as another person's Linux user, whose home may hold that person's
  git credentials. Browser tokens inherit the rule from the key that issued them.
- A start's answer through the facade (pitcher, pint, reconnect tokens) is a shell too: it
  reaches only a caller with `sessions:write`, and each one is recorded like a mint
  (`record_start`, the VM's own session, so its session id is empty).
- The rate limit holds across replicas: the count and the insert run under one Postgres
  advisory lock per (team, user). A failed mint gives its slot back.
- No transaction is open across an upstream call.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app import clock, metering, metrics
from app.audit import service as audit
from app.db import transaction
from app.errors import Forbidden, InvalidState, MissingScope, OwnerBinding, TooManyRequests
from app.identity.actor import Actor
from app.models import BrowserSession, Sandbox
from app.runtime import Runtime
from app.sandboxes import access
from app.sandboxes import service as sandboxes
from app.sandboxes.states import FINAL
from app.sessions import repository, tokens
from app.sessions.schemas import (
    BrowserTokenCreate,
    BrowserTokenOut,
    SandboxSessionOut,
    SessionRecordOut,
    SessionRecordPage,
)
from app.upstream.errors import UpstreamError, UpstreamNotFound
from app.upstream.problems import to_problem
from app.upstream.schemas import SessionResult, StartResult

SESSION_ID_LENGTH = 20
# A mint is metered as one session, charged before its start (itself metered when it wakes
# the VM), so a refused mint sends nothing upstream.
SESSION_WORK = (metering.Work.SESSION,)


def session_id_for(team_id: str, user: str) -> str:
    """The upstream session id of a person: `u` and 19 base32 characters of
    SHA-256("corral-session:<len(team)>:<team>:<user>"), 95 bits, lower case (it names a Linux
    user). The length prefix keeps (team, user) pairs apart whatever characters they hold; no
    secret is involved, so rotating one never moves anyone to a new Linux user."""
    digest = hashlib.sha256(f"corral-session:{len(team_id)}:{team_id}:{user}".encode()).digest()
    return "u" + base64.b32encode(digest).decode().lower()[: SESSION_ID_LENGTH - 1]


@dataclass(frozen=True)
class MintedSession:
    """A fresh session: Corral's sandbox row, the record id, and the SDK's JSON."""

    sandbox: Sandbox
    record_id: int
    session: SandboxSessionOut


# --- authorisation -------------------------------------------------------------------------


def authorise(actor: Actor, *, user: str, permission: str) -> None:
    """Scope by the permission asked (write covers read) and the key's owner binding."""
    allowed = actor.has(f"sessions:{permission}") or (
        permission == "read" and actor.has("sessions:write")
    )
    if not allowed:
        raise MissingScope(f"sessions:{permission}")
    if actor.owner is not None and user != actor.owner:
        raise OwnerBinding()


def authorise_read(actor: Actor) -> None:
    """Reading session records needs either sessions scope."""
    if not (actor.has("sessions:read") or actor.has("sessions:write")):
        raise MissingScope("sessions:read")


def _usable(sandbox: Sandbox) -> None:
    if sandbox.state in FINAL:
        raise InvalidState(sandbox.id, sandbox.state, cannot="have a session")


# --- minting -------------------------------------------------------------------------------


async def mint(
    rt: Runtime,
    actor: Actor,
    sandbox_id: str,
    *,
    user: str,
    permission: str,
    via: str = "api",
    session_id: str | None = None,
) -> MintedSession:
    """Mint a session for `user` on a sandbox (Corral's id), waking it if needed.

    `via` says who asked (`api`, `browser`, `csb`). `session_id` overrides the derived id for
    callers that must honour an id chosen by the client (the SDK facade's `createSession`)."""
    authorise(actor, user=user, permission=permission)
    at = clock.now()
    async with transaction(rt.sessions) as session:
        sandbox = await access.load(session, actor, sandbox_id)
        _usable(sandbox)
        record = await _take_slot(
            session,
            rt,
            BrowserSession(
                sandbox_id=sandbox.id,
                team_id=sandbox.team_id,
                user=user,
                session_id=session_id or session_id_for(sandbox.team_id, user),
                permission=permission,
                key_id=actor.key_id,
                via=via,
                minted_at=at,
            ),
            at,
        )
        record_id, sid = record.id, record.session_id
        charge = await metering.charge(session, rt.settings, actor, sandbox.team_id, SESSION_WORK)
    try:
        sandbox, started, created = await _resume_and_create(rt, actor, sandbox, sid, permission)
    except BaseException as exc:
        # The slot is given back; a process that dies here leaves an unsettled row, which
        # still counts for one window but is never listed as a minted session.
        async with transaction(rt.sessions) as session:
            await repository.discard(session, record_id)
        await metering.refund(rt.engine, charge, exc)
        raise
    async with transaction(rt.sessions) as session:
        await repository.settle(session, record_id, started.bootup_type)
        await audit.record(
            session,
            actor=actor.key_id,
            action="session.mint",
            team_id=sandbox.team_id,
            target=sandbox.id,
            detail={
                "user": user,
                "session_id": sid,
                "permission": permission,
                "via": via,
                "bootup_type": started.bootup_type,
            },
        )
    metrics.SESSIONS_MINTED.labels(via).inc()
    assert sandbox.upstream_id is not None
    return MintedSession(sandbox, record_id, _answer(sandbox.upstream_id, sid, started, created))


async def _take_slot(
    session: AsyncSession, rt: Runtime, record: BrowserSession, at: datetime
) -> BrowserSession:
    """Insert the record if (team, user) is under its limit for the window, else 429."""
    limit = rt.settings.session_rate_limit
    window = timedelta(seconds=rt.settings.session_rate_window_seconds)
    await repository.lock_user(session, record.team_id, record.user)
    count, oldest = await repository.recent_mints(session, record.team_id, record.user, at - window)
    if count >= limit:
        # One slot frees when the oldest mint in the window leaves it.
        wait = (oldest + window - at).total_seconds() if oldest is not None else 1.0
        raise TooManyRequests(
            f"User {record.user!r} has minted {count} sessions in the last "
            f"{int(window.total_seconds())} s; the limit is {limit}.",
            retry_after=max(1, math.ceil(wait)),
            kind="session-rate-limited",
            extra={"limit": "sessions-per-user", "scope": "user"},
        )
    return await repository.add(session, record)


async def _resume_and_create(
    rt: Runtime, actor: Actor, sandbox: Sandbox, session_id: str, permission: str
) -> tuple[Sandbox, StartResult, SessionResult]:
    """Start (admitted when stopped; RUNNING when running: the start answer carries the
    cluster and versions the SDK needs), then create the session. A VM that stopped between
    the two answers 404; it is started once more and asked again."""
    for attempt in (1, 2):
        outcome = await sandboxes.start(rt, actor, sandbox.id, action="session")
        assert outcome.start is not None and outcome.sandbox.upstream_id is not None
        upstream_id = outcome.sandbox.upstream_id
        try:
            created = await rt.upstream.create_session(upstream_id, session_id, permission)
        except UpstreamNotFound as err:
            if attempt == 2:
                raise to_problem(err, sandbox_id=sandbox.id) from None
            continue
        except UpstreamError as err:
            raise to_problem(err, sandbox_id=sandbox.id) from None
        return outcome.sandbox, outcome.start, created
    raise AssertionError("unreachable")


def _answer(
    upstream_id: str, session_id: str, started: StartResult, created: SessionResult
) -> SandboxSessionOut:
    """The SDK's `createSession({id})`: the start answer, with the session's token, URL and
    workspace path in place of the global ones."""
    return SandboxSessionOut(
        sandboxId=upstream_id,
        sessionId=session_id,
        isPint=False,
        bootupType=started.bootup_type,
        cluster=started.cluster or "",
        pitcherURL=created.pitcher_url,
        pitcherToken=created.pitcher_token,
        userWorkspacePath=created.user_workspace_path or started.user_workspace_path or "",
        workspacePath=started.workspace_path or "",
        pitcherVersion=started.pitcher_version or "",
        latestPitcherVersion=started.latest_pitcher_version or "",
        pitcherManagerVersion=started.pitcher_manager_version or "",
    )


# --- shell credentials of a start ---------------------------------------------------------

# What a start's record holds as its session id: the VM's own session has none upstream.
START_SESSION_ID = ""


def authorise_shell(actor: Actor) -> None:
    """A start's answer (pitcher, pint and reconnect tokens) is a shell on the VM, so it
    needs what a write session needs."""
    if not actor.has("sessions:write"):
        raise MissingScope("sessions:write")


async def record_start(
    rt: Runtime, actor: Actor, sandbox: Sandbox, started: StartResult, *, via: str
) -> None:
    """Record the shell credentials a start hands out, as a minted session is recorded (never
    the tokens): the VM's own session, for the sandbox's owner ("" when it has none)."""
    at = clock.now()
    handed = [
        name
        for name, token in (
            ("pitcher", started.pitcher_token),
            ("pint", started.pint_token),
            ("reconnect", started.reconnect_token),
        )
        if token
    ]
    async with transaction(rt.sessions) as session:
        record = await repository.add(
            session,
            BrowserSession(
                sandbox_id=sandbox.id,
                team_id=sandbox.team_id,
                user=sandbox.owner or "",
                session_id=START_SESSION_ID,
                permission="write",
                key_id=actor.key_id,
                via=via,
                bootup_type=started.bootup_type,
                minted_at=at,
            ),
        )
        await audit.record(
            session,
            actor=actor.key_id,
            action="session.mint",
            team_id=sandbox.team_id,
            target=sandbox.id,
            detail={
                "record": record.id,
                "user": record.user,
                "session_id": START_SESSION_ID,
                "permission": "write",
                "via": via,
                "bootup_type": started.bootup_type,
                "credentials": handed,
            },
        )


# --- records -------------------------------------------------------------------------------


async def list_records(
    rt: Runtime, actor: Actor, sandbox_id: str, *, user: str | None, limit: int, cursor: int | None
) -> SessionRecordPage:
    async with transaction(rt.sessions) as session:
        sandbox = await access.load(session, actor, sandbox_id)
        if actor.owner is not None:
            user = actor.owner
        rows = await repository.page(
            session, sandbox.id, user=user, limit=limit + 1, before_id=cursor
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return SessionRecordPage(
        items=[SessionRecordOut.model_validate(row) for row in rows],
        next_cursor=str(rows[-1].id) if more and rows else None,
    )


# --- browser tokens ------------------------------------------------------------------------


async def issue_browser_token(
    rt: Runtime, actor: Actor, sandbox_id: str, body: BrowserTokenCreate
) -> BrowserTokenOut:
    """A signed token a page can trade for sessions of `user` on this sandbox until it
    expires. Only a team key issues one: the token acts as that key, limited to one
    (user, sandbox, permission)."""
    authorise(actor, user=body.user, permission=body.permission)
    if actor.team_id is None:
        raise Forbidden(
            "Browser tokens are issued by team keys; an admin key has no team to bind.",
            kind="team-key-required",
        )
    signing_key = await tokens.signing_key(rt)
    at = clock.now()
    async with transaction(rt.sessions) as session:
        sandbox = await access.load(session, actor, sandbox_id)
        _usable(sandbox)
        claims = tokens.new_claims(
            user=body.user,
            team=sandbox.team_id,
            sandbox_id=sandbox.id,
            permission=body.permission,
            key_id=actor.key_id,
            at=at,
            ttl=body.ttl_seconds,
        )
        await audit.record(
            session,
            actor=actor.key_id,
            action="browser_token.issue",
            team_id=sandbox.team_id,
            target=sandbox.id,
            detail={
                "user": body.user,
                "permission": body.permission,
                "jti": claims.jti,
                "expires_at": claims.expires_at.isoformat(),
            },
        )
    return BrowserTokenOut(
        token=tokens.encode(claims, signing_key),
        sandbox_id=sandbox.id,
        user=body.user,
        permission=body.permission,
        expires_at=claims.expires_at,
    )


async def mint_for_browser(rt: Runtime, token: str, sandbox_hint: str | None) -> MintedSession:
    """Trade a browser token for a fresh session. The token must verify, be unexpired, and
    its issuing key must still be valid; the page may name the sandbox it expects (Corral's
    or the upstream id), which must be the token's."""
    at = clock.now()
    claims = await tokens.verify(rt, token, at=at)
    async with transaction(rt.sessions) as session:
        key = await repository.get_key(session, claims.key)
        if (
            key is None
            or key.team_id != claims.team
            or key.revoked_at is not None
            or (key.expires_at is not None and key.expires_at <= at)
        ):
            raise tokens.InvalidToken("The key that issued this browser token is revoked.")
        actor = Actor(
            key_id=key.id,
            team_id=key.team_id,
            scopes=frozenset(key.scopes),
            is_admin=False,
            owner=key.owner,
        )
        sandbox = await access.load(session, actor, claims.sbx)
        if sandbox_hint is not None and sandbox_hint not in (sandbox.id, sandbox.upstream_id):
            raise Forbidden(
                "This browser token is for another sandbox.", kind="token-sandbox-mismatch"
            )
    return await mint(rt, actor, claims.sbx, user=claims.sub, permission=claims.perm, via="browser")
