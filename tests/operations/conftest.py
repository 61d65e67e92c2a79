"""Operations fixtures: the runtime's upstream client reports to the metrics and the circuit,
as `app.main.build_runtime` wires it in production, and a scrape parser."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import observe_upstream
from app.operations.circuit import UpstreamCircuit, chain
from app.runtime import Runtime
from app.upstream.client import UpstreamClient
from tests.conftest import SIMULATOR_KEY

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def runtime(runtime: Runtime) -> AsyncIterator[Runtime]:
    circuit = UpstreamCircuit()
    observed = UpstreamClient(
        "http://simulator",
        SIMULATOR_KEY,
        transport=httpx.ASGITransport(app=runtime.simulator),
        backoff_base=0.01,
        backoff_max=0.05,
        deadline=10,
        observer=chain(observe_upstream, circuit.observe),
    )
    plain, runtime.upstream = runtime.upstream, observed
    runtime.circuit = circuit
    yield runtime
    runtime.upstream = plain
    await observed.aclose()


def parse(exposition: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape(client: httpx.AsyncClient, **headers: str) -> Samples:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)
