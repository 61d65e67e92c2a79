"""/healthz and /readyz: alive, ready (database, migrations, upstream circuit), upstream mode."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from app.db import create_engine, session_factory
from app.main import build_runtime, close_runtime, create_app
from app.operations.circuit import UpstreamCircuit
from app.runtime import Runtime
from app.settings import Settings
from tests.database import recreate
from tests.fixtures.factories import ADMIN


def open_circuit() -> UpstreamCircuit:
    circuit = UpstreamCircuit(min_attempts=2)
    circuit.observe("fork", None, 1.0)
    circuit.observe("fork", 503, 1.0)
    assert circuit.state == "open"
    return circuit


async def client_on(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime=runtime)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://corral"
    ) as http:
        yield http


class TestHealthz:
    async def test_alive_and_names_the_upstream_mode(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {
            "status": "ok",
            "upstream": "simulator",
            "upstream_circuit": "closed",
        }

    async def test_stays_alive_when_the_database_is_gone(self, runtime: Runtime) -> None:
        runtime.engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
        try:
            async for client in client_on(runtime):
                assert (await client.get("/healthz")).status_code == 200
                ready = await client.get("/readyz")
                assert ready.status_code == 503
                assert ready.json()["ready"] is False
                assert ready.json()["database"].startswith("unreachable")
        finally:
            await runtime.engine.dispose()


class TestReadyz:
    async def test_ready_with_database_at_head_and_circuit_closed(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/readyz")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["ready"] is True
        assert body["database"] == "ok"
        assert body["migrations_current"] is True
        assert body["upstream"] == "simulator"
        assert body["upstream_circuit"]["state"] == "closed"

    async def test_not_ready_when_migrations_are_behind(self, runtime: Runtime) -> None:
        empty = await recreate(f"corral_unmigrated_{os.getpid()}")
        engine = create_engine(empty)
        behind = Runtime(
            settings=runtime.settings,
            engine=engine,
            sessions=session_factory(engine),
            upstream=runtime.upstream,
        )
        try:
            async for client in client_on(behind):
                response = await client.get("/readyz")
                assert response.status_code == 503
                assert response.json()["database"] == "ok"
                assert response.json()["migrations_current"] is False
        finally:
            await engine.dispose()

    async def test_open_circuit_is_reported_but_ready_by_default(
        self, runtime: Runtime, client: httpx.AsyncClient
    ) -> None:
        runtime.circuit = open_circuit()
        response = await client.get("/readyz")
        assert response.status_code == 200
        assert response.json()["upstream_circuit"]["state"] == "open"
        assert response.json()["upstream_circuit"]["recent_failures"] == 2
        assert (await client.get("/healthz")).json()["upstream_circuit"] == "open"

    async def test_open_circuit_fails_readiness_when_required(self, runtime: Runtime) -> None:
        runtime.settings = runtime.settings.model_copy(update={"ready_requires_upstream": True})
        runtime.circuit = open_circuit()
        async for client in client_on(runtime):
            response = await client.get("/readyz")
            assert response.status_code == 503
            assert response.json()["ready"] is False
            runtime.circuit = UpstreamCircuit()
            assert (await client.get("/readyz")).status_code == 200


class TestRuntimeWiring:
    @pytest.fixture
    async def built(self, settings: Settings) -> AsyncIterator[Runtime]:
        rt = await build_runtime(settings)
        yield rt
        await close_runtime(rt)

    async def test_build_runtime_feeds_the_circuit_and_metrics(self, built: Runtime) -> None:
        from app.metrics import REGISTRY

        def meta_calls() -> float:
            return (
                REGISTRY.get_sample_value(
                    "corral_upstream_request_duration_seconds_count", {"operation": "meta"}
                )
                or 0.0
            )

        before = meta_calls()
        await built.upstream.meta_info()
        assert meta_calls() == before + 1
        assert built.circuit.summary()["recent_attempts"] == 1

    async def test_codesandbox_mode_is_announced_everywhere(
        self, settings: Settings, runtime: Runtime
    ) -> None:
        runtime.settings = settings.model_copy(
            update={"upstream": "codesandbox", "upstream_key": SecretStr("csb_" + "k" * 20)}
        )
        async for client in client_on(runtime):
            assert (await client.get("/healthz")).json()["upstream"] == "codesandbox"
            assert (await client.get("/readyz")).json()["upstream"] == "codesandbox"
            metrics = (await client.get("/metrics", headers=ADMIN)).text
            assert 'corral_upstream_mode{mode="codesandbox"} 1.0' in metrics
            assert 'corral_upstream_mode{mode="simulator"} 0.0' in metrics
