"""The Corral application: `create_app(settings)` and the runtime its lifespan builds."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from app import clock, openapi
from app.admin.endpoints import router as admin_router
from app.admission.endpoints import router as admission_router
from app.audit.endpoints import router as audit_router
from app.compat.endpoints import router as compat_router
from app.dashboard import site as dashboard
from app.db import (
    create_engine,
    database_url,
    migrate,
    session_factory,
    transaction,
)
from app.errors import install_handlers
from app.identity import service as identity_service
from app.locks import Lock
from app.metrics import observe_upstream
from app.middleware import RequestContext
from app.operations.circuit import UpstreamCircuit, chain
from app.operations.clock import ClockFollower
from app.operations.clock import router as clock_router
from app.operations.endpoints import router as operations_router
from app.reconcile.endpoints import router as reconcile_router
from app.reconcile.loop import ReconcileLoop
from app.reconcile.service import replica_name
from app.runtime import Runtime
from app.sandboxes.endpoints import router as sandboxes_router
from app.sessions.cors import BrowserCORS
from app.sessions.endpoints import router as sessions_router
from app.sessions.key_endpoints import router as browser_token_keys_router
from app.settings import Settings
from app.templates.endpoints import router as templates_router
from app.upstream.client import Observer, UpstreamClient
from app.usage.endpoints import router as usage_router
from app.usage.warning import BudgetWarning
from app.webhooks.endpoints import router as webhooks_router
from app.webhooks.worker import DeliveryWorker

log = logging.getLogger("corral")


class StartupError(RuntimeError):
    """Corral cannot start as configured (the message says why)."""


# What each secret a real deployment must set is for, in the message that refuses the start.
PRODUCTION_SECRETS = {
    "CORRAL_BROWSER_TOKEN_SECRET": "the root browser tokens are signed from, >= 32 characters",
    "CORRAL_METRICS_TOKEN": "the bearer /metrics requires, >= 16 characters",
}


def build_upstream(
    settings: Settings, observer: Observer | None = None
) -> tuple[UpstreamClient, object | None]:
    """The upstream client, and the in-process simulator app when simulating."""
    if settings.upstream_mode == "simulator" and not settings.upstream_url:
        from app.upstream.simulator import create_simulator_app

        key = secrets.token_urlsafe(24)
        simulator = create_simulator_app(api_key=key)
        transport = httpx.ASGITransport(app=simulator)
        return (
            UpstreamClient(
                "http://simulator",
                key,
                transport=transport,
                timeout=settings.upstream_timeout_seconds,
                deadline=settings.upstream_deadline_seconds,
                observer=observer,
            ),
            simulator,
        )
    # The real upstream, or a standalone simulator (`corral simulator`) spoken to like it, whose
    # clock Corral's follows (`app.operations.clock`).
    if settings.upstream_key is None:
        raise StartupError(
            f"CORRAL_UPSTREAM={settings.upstream_mode} needs CORRAL_UPSTREAM_KEY (or CSB_API_KEY)."
        )
    client = UpstreamClient(
        settings.upstream_base_url,
        settings.upstream_key.get_secret_value(),
        timeout=settings.upstream_timeout_seconds,
        deadline=settings.upstream_deadline_seconds,
        observer=observer,
    )
    return client, None


async def build_runtime(settings: Settings) -> Runtime:
    if missing := settings.missing_production_secrets():
        raise StartupError(
            f"CORRAL_UPSTREAM={settings.upstream_mode} needs {' and '.join(missing)} ("
            + "; ".join(f"{name}: {PRODUCTION_SECRETS[name]}" for name in missing)
            + "). Generate one with `openssl rand -hex 32`."
        )
    engine = create_engine(database_url(settings))
    await migrate(engine)
    # Every upstream attempt feeds the latency/error metrics and the circuit /readyz reports.
    circuit = UpstreamCircuit()
    upstream, simulator = build_upstream(settings, chain(observe_upstream, circuit.observe))
    if simulator is not None:
        follow_simulator(simulator)
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        upstream=upstream,
        simulator=simulator,
        circuit=circuit,
    )


def follow_simulator(simulator: object | None) -> None:
    """Corral's clock is the in-process simulator's (None: the wall clock again)."""
    from app.upstream.simulator import simulator_of

    clock.CLOCK.follow(simulator_of(simulator).clock.now if simulator is not None else None)  # type: ignore[arg-type]


async def close_runtime(runtime: Runtime) -> None:
    await runtime.upstream.aclose()
    await runtime.engine.dispose()


async def bootstrap_admin_key(runtime: Runtime) -> str | None:
    """On a first start without CORRAL_ADMIN_KEY, issue an admin key and return it once."""
    if runtime.settings.admin_key is not None:
        return None
    async with transaction(runtime.sessions) as session:
        # Serialise replicas starting together, so only one of them issues the first key.
        await session.execute(text(f"SELECT pg_advisory_xact_lock({Lock.ADMIN_BOOTSTRAP:d})"))
        if await identity_service.has_admin_key(session):
            return None
        issued = await identity_service.issue_key(
            session, team_id=None, name="bootstrap admin", scopes=["admin"], is_admin=True
        )
    return issued.token


def announce(runtime: Runtime, admin_key: str | None) -> None:
    if runtime.settings.upstream_mode == "simulator":
        log.warning(
            "UPSTREAM IS SIMULATED: no upstream key is set, so Corral drives its built-in "
            "simulator. Set CORRAL_UPSTREAM=codesandbox and CORRAL_UPSTREAM_KEY for real VMs."
        )
    if admin_key is not None:
        # Printed once, to the console, never logged: the database keeps only its hash.
        print(
            "\n"
            + "=" * 72
            + "\nCorral admin key (shown once, store it now):\n\n    "
            + admin_key
            + "\n\n"
            + "=" * 72
            + "\n",
            flush=True,
        )


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """The ASGI app. With `runtime` given (tests), the caller owns the runtime's lifetime."""
    settings = settings or (runtime.settings if runtime else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            app.state.runtime = runtime
            yield
            return
        built = await build_runtime(settings)
        app.state.runtime = built
        announce(built, await bootstrap_admin_key(built))
        follower = None
        if settings.upstream_mode == "simulator" and built.simulator is None:
            follower = ClockFollower(built, replica_name(settings))
            await follower.start()
        reconciler = ReconcileLoop(built) if settings.reconcile_enabled else None
        if reconciler is not None:
            reconciler.start()
        webhooks = DeliveryWorker(built) if settings.webhook_worker_enabled else None
        if webhooks is not None:
            webhooks.start()
        try:
            yield
        finally:
            if webhooks is not None:
                await webhooks.stop()
            if reconciler is not None:
                await reconciler.stop()
            if follower is not None:
                await follower.stop()
            await close_runtime(built)

    app = FastAPI(
        title="Corral",
        version="0.1.0",
        description="A control plane in front of the CodeSandbox VM sandbox API.",
        lifespan=lifespan,
    )
    if runtime is not None:
        app.state.runtime = runtime
    install_handlers(app)
    openapi.install(app)
    app.include_router(sandboxes_router)
    app.include_router(admin_router)
    app.include_router(templates_router)
    app.include_router(admission_router)
    app.include_router(reconcile_router)

    app.include_router(operations_router)
    app.include_router(clock_router)
    app.include_router(audit_router)

    app.include_router(usage_router)
    app.include_router(sessions_router)
    app.include_router(browser_token_keys_router)
    app.include_router(compat_router)
    app.include_router(webhooks_router)
    # The admin dashboard: its own HTML app under /dashboard (app/dashboard/site.py).
    dashboard.install(app)

    app.add_middleware(BrowserCORS, origins=settings.browser_origins)
    app.add_middleware(BudgetWarning, cache_seconds=settings.budget_warning_cache_seconds)
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes)
    return app
