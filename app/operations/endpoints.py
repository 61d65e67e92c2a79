"""Operations routes: `/healthz` (alive), `/readyz` (able to serve) and `/metrics`.

`/healthz` never touches the database, so a slow database cannot get a live process killed.
`/readyz` fails (503) when the database is unreachable or its schema is not at the migrations'
head; the upstream circuit state is shown, and fails readiness only with
`CORRAL_READY_REQUIRES_UPSTREAM=true`. The upstream mode (simulator or codesandbox) is in both
answers and in `corral_upstream_mode`, so a simulated deployment cannot pass unnoticed.

`/metrics` is closed by default, because its labels name every team and its gauges show each
one's spend: with `CORRAL_METRICS_TOKEN` set it answers that bearer only; without it, admin
keys only (a deployment on the real upstream cannot start without the token).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from app import metrics
from app.db import migrations_current
from app.deps import RuntimeDep, authenticate
from app.errors import BearerRejected, Forbidden, Unauthorized
from app.metrics_collector import DatabaseGauges
from app.operations.circuit import STATES
from app.runtime import Runtime

router = APIRouter(tags=["operations"])


def gauges_of(runtime: Runtime) -> DatabaseGauges:
    """The runtime's database gauges, made on the first scrape."""
    if runtime.gauges is None:
        runtime.gauges = DatabaseGauges(
            runtime.sessions,
            timezone=runtime.settings.budget_timezone,
            ttl_seconds=runtime.settings.metrics_cache_seconds,
        )
    return runtime.gauges


@router.get("/healthz")
async def healthz(rt: RuntimeDep) -> dict[str, str]:
    return {
        "status": "ok",
        "upstream": rt.settings.upstream_mode,
        "upstream_circuit": rt.circuit.state,
    }


@router.get("/readyz")
async def readyz(rt: RuntimeDep) -> JSONResponse:
    checks: dict[str, object] = {"upstream": rt.settings.upstream_mode}
    try:
        checks["migrations_current"] = await migrations_current(rt.engine)
        checks["database"] = "ok"
    except Exception as exc:  # any failure to reach the database means not ready
        checks["database"] = f"unreachable: {type(exc).__name__}"
        checks["migrations_current"] = False
    circuit = rt.circuit.summary()
    checks["upstream_circuit"] = circuit
    ready = checks["database"] == "ok" and checks["migrations_current"] is True
    if rt.settings.ready_requires_upstream and circuit["state"] == "open":
        ready = False
    return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)


class _Exposition:
    """The process-wide registry plus this scrape's database gauges, as one collector."""

    def __init__(self, *collectors: Collector) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[object]:
        for collector in self.collectors:
            yield from collector.collect()


class MetricsClosed(Unauthorized):
    kind = "metrics-closed"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


CLOSED = (
    "/metrics is closed: no CORRAL_METRICS_TOKEN is set, so it answers admin keys only. Set "
    "CORRAL_METRICS_TOKEN and scrape with Authorization: Bearer <token>, or present an admin key."
)


async def authorise_scrape(request: Request, rt: Runtime) -> None:
    """The metrics token when one is set (and nothing else); otherwise an admin key."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    presented = presented.strip() if scheme.lower() == "bearer" else ""
    token = rt.settings.metrics_token
    if token is not None:
        if not hmac.compare_digest(presented.encode(), token.get_secret_value().encode()):
            raise BearerRejected(
                "/metrics needs the metrics token: Authorization: Bearer <CORRAL_METRICS_TOKEN>."
            )
        return
    if not presented:
        raise MetricsClosed(CLOSED)
    try:
        actor = await authenticate(request, rt)
    except BearerRejected as exc:
        raise MetricsClosed(CLOSED) from exc
    if not actor.is_admin:
        raise Forbidden(CLOSED, kind="metrics-closed")


@router.get("/metrics", response_class=Response)
async def scrape(request: Request, rt: RuntimeDep) -> Response:
    await authorise_scrape(request, rt)
    for mode in ("simulator", "codesandbox"):
        metrics.UPSTREAM_MODE.labels(mode).set(1 if mode == rt.settings.upstream_mode else 0)
    state = rt.circuit.state
    for name in STATES:
        metrics.UPSTREAM_CIRCUIT.labels(name).set(1 if name == state else 0)
    gauges = gauges_of(rt)
    snapshot = await gauges.refresh()
    body = generate_latest(_Exposition(metrics.REGISTRY, gauges.collector(snapshot)))  # type: ignore[arg-type]
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
