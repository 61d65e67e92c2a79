"""Admission throughput: admitted creates per second through Corral, next to direct simulator
fork+start calls, and the count of over-admissions (which must be 0).

Runs a standalone simulator (no latency) and one `corral serve` on loopback against a scratch
database, then:
1. `--creates` creates at `--concurrency` through Corral (`--replicas` processes sharing the
   database, round robin) with limits high enough to admit all;
2. the same number of fork+start pairs sent straight to the simulator at the same concurrency;
3. an over-admission probe: org limit `--limit`, `--probe` concurrent creates; counts 201s
   beyond the limit, and VMs running upstream beyond it.

Prints one JSON object and a short table.

    .venv/bin/python bench/admission.py [--creates 2000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from httpx_aiohttp import HttpxAiohttpClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.db import create_engine, migrate
from tests import processes
from tests.database import recreate

ADMIN_KEY = "bench-admin-key-" + "b" * 32
SIM_KEY = "bench-simulator-key"


async def scratch_database() -> str:
    url = await recreate(f"corral_bench_admission_{os.getpid()}")
    engine = create_engine(url, pool_size=1)
    await migrate(engine)
    await engine.dispose()
    return url


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU time of every local `postgres` process alive now (the server and its backends)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended while we looked
        if "(postgres)" in text:
            total += cpu_seconds(int(stat.parent.name))
    return total


def cpu_split(corrals: list[processes.Process], simulator: processes.Process) -> dict[str, float]:
    """CPU seconds so far of each part of the run, to see where a create's time goes."""
    own = os.times()
    return {
        "corral": sum(cpu_seconds(c.popen.pid) for c in corrals),
        "simulator": cpu_seconds(simulator.popen.pid),
        "postgres": postgres_cpu_seconds(),
        "client": own.user + own.system,
    }


def per_create_ms(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {part: round((after[part] - before[part]) / max(n, 1) * 1000, 2) for part in before}


async def run_pool(n: int, concurrency: int, one: Any) -> tuple[float, list[int]]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    codes: list[int] = []

    async def worker() -> None:
        while not queue.empty():
            codes.append(await one(queue.get_nowait()))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, codes


async def main(args: argparse.Namespace) -> dict[str, Any]:
    url = await scratch_database()
    logs = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with processes.simulator(SIM_KEY, logs) as sim_process, ExitStack() as replicas:
        corrals = [
            replicas.enter_context(
                processes.corral(
                    database_url=url,
                    upstream_url=sim_process.url,
                    upstream_key=SIM_KEY,
                    admin_key=ADMIN_KEY,
                    log_dir=logs,
                    log_level="WARNING",
                    **processes.UNMETERED,
                )
            )
            for _ in range(args.replicas)
        ]
        corral = corrals[0]
        # The load generator uses the transport Corral uses upstream (aiohttp), the cheapest in
        # CPU, so that it takes as little of the machine from the processes measured as it can.
        # Idle connections are dropped after 1 s, well before uvicorn closes them (5 s): a POST
        # sent on a connection the server is closing fails, and aiohttp does not resend it.
        limits = httpx.Limits(max_connections=args.concurrency * 2, keepalive_expiry=1.0)
        async with HttpxAiohttpClient(timeout=120, limits=limits, trust_env=False) as http:
            sim_headers = {"Authorization": f"Bearer {SIM_KEY}"}
            await http.put(
                f"{sim_process.url}/_simulator/config",
                json={"concurrent_vm_limit": 1_000_000, "latency_ms": 0},
            )
            await http.put(
                f"{corral.url}/v1/admin/plan",
                json={"plan": "enterprise", "limit": 1_000_000},
                headers=admin,
            )
            await http.post(
                f"{corral.url}/v1/admin/teams", json={"id": "bench", "name": "bench"}, headers=admin
            )
            issued = await http.post(
                f"{corral.url}/v1/admin/teams/bench/keys",
                json={"name": "bench", "scopes": ["sandboxes:write", "sandboxes:read"]},
                headers=admin,
            )
            team = {"Authorization": f"Bearer {issued.json()['key']}"}

            async def create(i: int) -> int:
                # Round robin over the replicas, as a load balancer would.
                replica = corrals[i % len(corrals)].url
                response = await http.post(
                    f"{replica}/v1/sandboxes", json={"tier": "Pico"}, headers=team
                )
                return response.status_code

            # Warm up connections and caches; not measured.
            await run_pool(args.concurrency, args.concurrency, create)
            cpu_before = cpu_split(corrals, sim_process)
            corral_seconds, corral_codes = await run_pool(args.creates, args.concurrency, create)
            corral_cpu = per_create_ms(cpu_before, cpu_split(corrals, sim_process), args.creates)

            async def direct(i: int) -> int:
                fork = await http.post(
                    f"{sim_process.url}/sandbox/pcz35m/fork",
                    json={"tags": ["bench"]},
                    headers=sim_headers,
                )
                start = await http.post(
                    f"{sim_process.url}/vm/{fork.json()['data']['id']}/start",
                    json={"tier": "Pico"},
                    headers=sim_headers,
                )
                return start.status_code

            cpu_before = cpu_split(corrals, sim_process)
            direct_seconds, direct_codes = await run_pool(args.creates, args.concurrency, direct)
            direct_cpu = per_create_ms(cpu_before, cpu_split(corrals, sim_process), args.creates)

            # Over-admission probe: reset, then a burst against a small org limit.
            await http.post(f"{sim_process.url}/_simulator/reset")
            await http.put(
                f"{sim_process.url}/_simulator/config", json={"concurrent_vm_limit": 1_000_000}
            )
            engine = create_engine(url, pool_size=1)
            async with engine.begin() as conn:
                from sqlalchemy import text

                await conn.execute(
                    text("UPDATE sandboxes SET state = 'deleted' WHERE state <> 'deleted'")
                )
                await conn.execute(
                    text("UPDATE usage_intervals SET ended_at = now() WHERE ended_at IS NULL")
                )
            await engine.dispose()
            await http.put(
                f"{corral.url}/v1/admin/plan",
                json={"plan": "enterprise", "limit": args.limit},
                headers=admin,
            )
            _, probe_codes = await run_pool(args.probe, args.probe, create)
            vms = (await http.get(f"{sim_process.url}/_simulator/vms")).json()["vms"]
            running_upstream = sum(1 for vm in vms if vm["state"] == "running")

    admitted = corral_codes.count(201)
    probe_admitted = probe_codes.count(201)
    return {
        "benchmark": "admission",
        "concurrency": args.concurrency,
        "replicas": args.replicas,
        "creates": args.creates,
        "corral": {
            "seconds": round(corral_seconds, 3),
            "admitted": admitted,
            "other_statuses": sorted(set(corral_codes) - {201}),
            "admitted_creates_per_second": round(admitted / corral_seconds, 1),
            # Where the time goes: CPU each part of the run spent per create.
            "cpu_ms_per_create": corral_cpu,
        },
        "direct_simulator": {
            "seconds": round(direct_seconds, 3),
            "fork_start_pairs_per_second": round(len(direct_codes) / direct_seconds, 1),
            "cpu_ms_per_pair": direct_cpu,
        },
        "over_admission_probe": {
            "org_limit": args.limit,
            "concurrent_creates": args.probe,
            "admitted": probe_admitted,
            "running_upstream": running_upstream,
            "over_admissions": max(0, probe_admitted - args.limit)
            + max(0, running_upstream - args.limit),
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--creates", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--probe", type=int, default=300)
    parser.add_argument("--replicas", type=int, default=1, help="Corral processes, round robin")
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result, indent=2))
    c, d, p = result["corral"], result["direct_simulator"], result["over_admission_probe"]
    print(f"\n{'measure':<40}{'value':>12}")
    print(f"{'admitted creates/s through Corral':<40}{c['admitted_creates_per_second']:>12}")
    for part, ms in c["cpu_ms_per_create"].items():
        print(f"{'CPU ms per create, ' + part:<40}{ms:>12}")
    for part, ms in d["cpu_ms_per_pair"].items():
        print(f"{'CPU ms per direct pair, ' + part:<40}{ms:>12}")
    print(f"{'direct fork+start pairs/s':<40}{d['fork_start_pairs_per_second']:>12}")
    print(f"{'over-admissions':<40}{p['over_admissions']:>12}")
