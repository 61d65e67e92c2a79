"""Fixtures for the simulator's own tests: the app, its state, and a client that drives both the
upstream paths and the `/_simulator` control API. No database is needed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.upstream.simulator import Simulator, create_simulator_app, simulator_of

SIM_KEY = "sim-test-key"
SIM_BASE_URL = "http://simulator"


class SimDriver:
    """Short verbs over the simulator's HTTP API, so tests read as scenarios."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def fork(self, source: str = "pcz35m", **body: Any) -> str:
        response = await self.client.post(f"/sandbox/{source}/fork", json=body)
        assert response.status_code == 201, response.text
        vm_id: str = response.json()["data"]["id"]
        return vm_id

    async def start(self, vm_id: str, **options: Any) -> httpx.Response:
        return await self.client.post(f"/vm/{vm_id}/start", json=options)

    async def started(self, **options: Any) -> str:
        vm_id = await self.fork()
        response = await self.start(vm_id, **options)
        assert response.status_code == 200, response.text
        return vm_id

    async def configure(self, **config: Any) -> dict[str, Any]:
        response = await self.client.put("/_simulator/config", json=config)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def advance(self, seconds: float) -> dict[str, Any]:
        response = await self.client.post("/_simulator/clock/advance", json={"seconds": seconds})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def freeze(self) -> None:
        assert (await self.client.post("/_simulator/clock/freeze")).status_code == 200

    async def vm(self, vm_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/_simulator/vms/{vm_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def running_ids(self) -> list[str]:
        response = await self.client.get("/vm/running")
        assert response.status_code == 200, response.text
        return [row["id"] for row in response.json()["data"]["vms"]]


@pytest.fixture
def sim_app() -> FastAPI:
    return create_simulator_app(api_key=SIM_KEY)


@pytest.fixture
def sim(sim_app: FastAPI) -> Simulator:
    return simulator_of(sim_app)


@pytest.fixture
async def sim_client(sim_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim_app),
        base_url=SIM_BASE_URL,
        headers={"Authorization": f"Bearer {SIM_KEY}"},
    ) as client:
        yield client


@pytest.fixture
def drive(sim_client: httpx.AsyncClient) -> SimDriver:
    return SimDriver(sim_client)
