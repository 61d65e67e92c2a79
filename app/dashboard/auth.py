"""Who is signed in to the dashboard, and what they may do.

Sign-in takes an API key and authenticates it with `identity_service.authenticate`, exactly as
the API does (malformed, unknown, revoked and expired keys are refused alike). The cookie then
holds the key's id, never the key (`app.dashboard.cookies`). Every request reads the key row
again: a revoked, expired or deleted key signs its sessions out at their next request, with no
cache in between.

    admin key        every page, every form
    team key         its own team only, read-only: no form but signing out, other teams'
                     pages 404, admin pages 403, every POST 403. It needs sandboxes:read and
                     usage:read, the scopes of the API routes its pages show.

A POST needs the session's CSRF token in its `csrf_token` field, checked before anything else
happens; a missing or wrong one is 403 and changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app import clock
from app.dashboard import cookies
from app.dashboard.cookies import DashboardSession, SessionKey
from app.dashboard.settings import DashboardSettings
from app.db import transaction
from app.deps import RuntimeDep
from app.identity import keys as key_material
from app.identity import service as identity_service
from app.identity.actor import Actor
from app.identity.errors import KeyNotFound
from app.identity.service import ENV_ADMIN_KEY_ID
from app.runtime import Runtime
from app.sessions.signing_keys import root_of
from app.settings import Settings

# What a team key needs to sign in: the scopes of the API reads its pages show.
TEAM_SCOPES = ("sandboxes:read", "usage:read")
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 200


class SignInRequired(Exception):
    """No valid session: pages send the browser to the sign-in page, JSON answers 401."""


class PageError(Exception):
    """An error page (status, a title and a sentence for the person reading it)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def forbidden(
    message: str = "This page is for admin keys; a team key sees its team, read-only.",
) -> PageError:
    return PageError(403, "Not allowed", message)


def not_found(what: str = "page") -> PageError:
    return PageError(404, "Not found", f"There is no such {what}, or it is not yours to see.")


@dataclass(frozen=True)
class Viewer:
    actor: Actor
    session: DashboardSession

    @property
    def csrf(self) -> str:
        return self.session.csrf

    def sees_team(self, team_id: str) -> bool:
        return self.actor.is_admin or self.actor.team_id == team_id


class Form:
    """A url-encoded form body. Parsed with the standard library: the dashboard's forms post
    nothing else (no file uploads), so no multipart parser is needed."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.pairs = list(pairs)

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.pairs if key == name), None)

    def text(self, name: str) -> str:
        """The field, stripped; '' when absent."""
        return (self.get(name) or "").strip()

    def getlist(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]


@dataclass(frozen=True)
class Posted:
    """A signed-in POST whose CSRF token matched, with its form."""

    viewer: Viewer
    form: Form


# One derived key per settings object: deriving reads the root, which may be a file.
_keys: dict[int, tuple[Settings, SessionKey]] = {}


def session_key(settings: Settings) -> SessionKey:
    cached = _keys.get(id(settings))
    if cached is None or cached[0] is not settings:
        if len(_keys) > 64:
            _keys.clear()
        cached = _keys[id(settings)] = (settings, cookies.session_key(root_of(settings)))
    return cached[1]


def dashboard_settings(request: Request) -> DashboardSettings:
    configured: DashboardSettings = request.app.state.dashboard_settings
    return configured


def session_lifetime(request: Request) -> timedelta:
    return timedelta(hours=dashboard_settings(request).session_hours)


def admin_digest(settings: Settings) -> bytes | None:
    """SHA-256 of CORRAL_ADMIN_KEY, the secret the `env-admin` key id stands for."""
    configured = settings.admin_key
    if configured is None:
        return None
    return hashlib.sha256(configured.get_secret_value().encode()).digest()


def may_sign_in(actor: Actor) -> bool:
    return actor.is_admin or all(actor.has(scope) for scope in TEAM_SCOPES)


async def key_binding(session: AsyncSession, settings: Settings, actor: Actor) -> str | None:
    """The `kb` claim for an authenticated actor's key (None: the key is gone)."""
    key = session_key(settings)
    if actor.key_id == ENV_ADMIN_KEY_ID:
        digest = admin_digest(settings)
        return None if digest is None else cookies.binding(key, digest)
    try:
        row = await identity_service.get_key(session, actor.key_id)
    except KeyNotFound:
        return None
    return cookies.binding(key, row.secret_sha256)


async def _actor_of(
    session: AsyncSession, settings: Settings, signed: DashboardSession
) -> Actor | None:
    """The actor a session stands for now, or None when its key no longer authenticates."""
    key = session_key(settings)
    if signed.key_id == ENV_ADMIN_KEY_ID:
        digest = admin_digest(settings)
        if digest is None or not cookies.same(signed.binding, cookies.binding(key, digest)):
            return None
        # As `identity_service.authenticate` makes it for the configured admin key.
        return Actor(
            key_id=ENV_ADMIN_KEY_ID, team_id=None, scopes=key_material.SCOPES, is_admin=True
        )
    try:
        row = await identity_service.get_key(session, signed.key_id)
    except KeyNotFound:
        return None
    expired = row.expires_at is not None and row.expires_at <= clock.now()
    if row.revoked_at is not None or expired:
        return None
    if not cookies.same(signed.binding, cookies.binding(key, row.secret_sha256)):
        return None
    actor = Actor(
        key_id=row.id,
        team_id=row.team_id,
        scopes=frozenset(row.scopes),
        is_admin=row.is_admin,
        owner=row.owner,
        expires_at=row.expires_at,
    )
    return actor if may_sign_in(actor) else None


async def signed_in(request: Request, rt: Runtime) -> Viewer | None:
    token = request.cookies.get(cookies.COOKIE)
    if not token:
        return None
    signed = cookies.read(session_key(rt.settings), token)
    if signed is None:
        return None
    async with transaction(rt.sessions) as session:
        actor = await _actor_of(session, rt.settings, signed)
    if actor is None:
        return None
    # For the access log's key_id, as the API's authentication sets it.
    request.state.actor = actor
    request.state.dashboard_csrf = signed.csrf
    return Viewer(actor=actor, session=signed)


async def current_viewer(request: Request, rt: RuntimeDep) -> Viewer:
    viewer = await signed_in(request, rt)
    if viewer is None:
        raise SignInRequired()
    return viewer


CurrentViewer = Annotated[Viewer, Depends(current_viewer)]


async def admin_viewer(viewer: CurrentViewer) -> Viewer:
    if not viewer.actor.is_admin:
        raise forbidden()
    return viewer


AdminViewer = Annotated[Viewer, Depends(admin_viewer)]


async def read_form(request: Request) -> Form:
    """The url-encoded body (the request body limit of `RequestContext` bounds it); anything
    else reads as an empty form, which then fails its CSRF check."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != FORM_TYPE:
        return Form([])
    try:
        text = (await request.body()).decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise PageError(400, "Bad form", "The form could not be read; reload the page.") from None
    # Postgres text cannot hold a NUL (app.inputs): a field with one is refused here, whatever
    # the field.
    if any("\x00" in key or "\x00" in value for key, value in pairs):
        raise PageError(400, "Bad form", "A field holds a NUL character.")
    return Form(pairs)


def check_csrf(viewer: Viewer, form: Form) -> None:
    if not cookies.same(form.get("csrf_token"), viewer.csrf):
        raise PageError(
            403, "Form expired", "The form's security token is missing or stale; reload the page."
        )


async def posted(request: Request, viewer: CurrentViewer) -> Posted:
    """Any signed-in viewer's POST (signing out), CSRF-checked."""
    form = await read_form(request)
    check_csrf(viewer, form)
    return Posted(viewer, form)


async def edit(request: Request, viewer: CurrentViewer) -> Posted:
    """An admin's POST, CSRF-checked; a team key's is refused before its body is read."""
    if not viewer.actor.is_admin:
        raise forbidden("A team key is read-only here: nothing was changed.")
    form = await read_form(request)
    check_csrf(viewer, form)
    return Posted(viewer, form)


PostedForm = Annotated[Posted, Depends(posted)]
EditForm = Annotated[Posted, Depends(edit)]
