"""Signing in and out of the dashboard (the rules are in `app.dashboard.auth` and
`app.dashboard.cookies`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.dashboard import auth, cookies
from app.dashboard.auth import PostedForm
from app.dashboard.render import page
from app.db import transaction
from app.deps import RuntimeDep
from app.errors import BearerRejected
from app.identity import service as identity_service
from app.runtime import Runtime

router = APIRouter(prefix="/dashboard")

# One sentence for every refused key, so the page tells nothing about which keys exist.
NOT_ACCEPTED = "That key was not accepted: it is malformed, unknown, revoked or expired."
MISSING_SCOPES = (
    "This team key cannot use the dashboard: it needs the "
    + " and ".join(auth.TEAM_SCOPES)
    + " scopes."
)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _login_page(request: Request, rt: Runtime, *, status: int, error: str | None) -> Response:
    """The sign-in form with a fresh signed double-submit pair (cookie nonce, form token)."""
    nonce = cookies.login_nonce()
    response = page(
        request,
        "login.html",
        {"error": error},
        actor=None,
        csrf=cookies.login_token(auth.session_key(rt.settings), nonce),
        timezone=rt.settings.budget_timezone,
        status_code=status,
    )
    response.set_cookie(
        cookies.LOGIN_COOKIE,
        nonce,
        max_age=cookies.LOGIN_NONCE_SECONDS,
        path=cookies.PATH,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/login")
async def login_form(request: Request, rt: RuntimeDep) -> Response:
    if await auth.signed_in(request, rt) is not None:
        return RedirectResponse("/dashboard", status_code=303)
    return _login_page(request, rt, status=200, error=None)


@router.post("/login")
async def login(request: Request, rt: RuntimeDep) -> Response:
    form = await auth.read_form(request)
    key = auth.session_key(rt.settings)
    nonce = request.cookies.get(cookies.LOGIN_COOKIE)
    if not nonce or not cookies.same(form.get("csrf_token"), cookies.login_token(key, nonce)):
        return _login_page(
            request, rt, status=403, error="The sign-in form expired. Please sign in again."
        )
    admin_key = rt.settings.admin_key
    try:
        async with transaction(rt.sessions) as session:
            actor = await identity_service.authenticate(
                session,
                form.text("api_key"),
                env_admin_key=admin_key.get_secret_value() if admin_key else None,
            )
            binding = await auth.key_binding(session, rt.settings, actor)
    except BearerRejected:
        return _login_page(request, rt, status=401, error=NOT_ACCEPTED)
    if binding is None:
        return _login_page(request, rt, status=401, error=NOT_ACCEPTED)
    if not auth.may_sign_in(actor):
        return _login_page(request, rt, status=403, error=MISSING_SCOPES)
    lifetime = auth.session_lifetime(request)
    token, _ = cookies.issue(key, key_id=actor.key_id, kb=binding, lifetime=lifetime)
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(
        cookies.COOKIE,
        token,
        max_age=int(lifetime.total_seconds()),
        path=cookies.PATH,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(
        cookies.LOGIN_COOKIE, path=cookies.PATH, httponly=True, samesite="strict"
    )
    return response


@router.post("/logout")
async def logout(request: Request, posted: PostedForm) -> Response:
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(
        cookies.COOKIE,
        path=cookies.PATH,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    return response
