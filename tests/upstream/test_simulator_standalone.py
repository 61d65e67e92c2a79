"""The standalone simulator (a real uvicorn process) answers like the in-process one."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.upstream.conftest import SIM_KEY

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def standalone_url() -> AsyncIterator[str]:
    port = free_port()
    code = (
        "from app.upstream.simulator.standalone import run_standalone; "
        f"run_standalone(host='127.0.0.1', port={port}, api_key={SIM_KEY!r})"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as probe:
            for _ in range(200):
                try:
                    if (await probe.get("/_simulator/config")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the standalone simulator did not come up")
        yield url
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=10)


async def scenario(client: httpx.AsyncClient) -> list[Any]:
    """A short lifecycle whose statuses and answer shapes must not depend on the transport."""
    seen: list[Any] = []
    unauthorized = await client.get("/vm/running", headers={"Authorization": "Bearer nope"})
    seen.append((unauthorized.status_code, unauthorized.json()["success"]))
    fork = await client.post("/sandbox/pcz35m/fork", json={"tags": ["sdk"]})
    vm_id = fork.json()["data"]["id"]
    seen.append((fork.status_code, sorted(fork.json()["data"])))
    start = await client.post(f"/vm/{vm_id}/start", json={"tier": "Nano"})
    seen.append((start.status_code, start.json()["data"]["bootup_type"]))
    running = await client.get("/vm/running")
    seen.append((running.status_code, running.json()["data"]["concurrent_vm_count"]))
    seen.append(running.headers["x-csb-vms-used"])
    hibernate = await client.post(f"/vm/{vm_id}/hibernate")
    seen.append((hibernate.status_code, hibernate.json()))
    again = await client.post(f"/vm/{vm_id}/hibernate")
    seen.append((again.status_code, again.json()["success"]))
    await client.put("/_simulator/config", json={"concurrent_vm_limit": 0})
    refused = await client.post(f"/vm/{vm_id}/start", json={})
    seen.append((refused.status_code, refused.headers["x-csb-vms-remaining"]))
    vms = (await client.get("/_simulator/vms")).json()["vms"]
    seen.append([(vm["state"], len(vm["ledger"]["stretches"])) for vm in vms])
    return seen


async def test_standalone_and_in_process_behave_the_same(
    standalone_url: str, sim_client: httpx.AsyncClient
) -> None:
    async with httpx.AsyncClient(
        base_url=standalone_url, headers={"Authorization": f"Bearer {SIM_KEY}"}
    ) as remote:
        over_the_network = await scenario(remote)
    assert over_the_network == await scenario(sim_client)
    assert over_the_network[2] == (200, "FORK")


def test_run_standalone_refuses_an_empty_key() -> None:
    from app.upstream.simulator.standalone import run_standalone

    with pytest.raises(ValueError, match="API key"):
        run_standalone(host="127.0.0.1", port=1, api_key="")
