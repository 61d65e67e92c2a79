"""Added latency: the same work straight against the simulator and through Corral, one request
at a time, and what Corral adds.

Runs a standalone simulator (no latency) and one `corral serve` on loopback against a scratch
database on `--database-server` (created, migrated, dropped afterwards), then, for each row,
`--requests` times in turn (direct, then through Corral, so that a noisy neighbour hits both
alike):

    get       GET /sandbox/{id}           vs  GET /v1/sandboxes/{id}  and  GET /csb/sandbox/{id}
    list 20   GET /sandbox?page_size=20   vs  GET /v1/sandboxes?limit=20  and  /csb/sandbox
    running   GET /vm/running             vs  GET /csb/vm/running
    cycle     POST /vm/{id}/hibernate + /start  vs  POST /v1/sandboxes/{id}/hibernate + /start
    cycled    the get again, of the sandbox the cycles gave an interval per start (`--requests`
              + 21 of them)

and reports p50/p90/p99 of each side in milliseconds, with the added p50 (Corral - direct).
Prints one JSON object and a table (`--json-only`: the JSON alone).

    .venv/bin/python bench/overhead.py [--requests 300] [--json-only]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from httpx_aiohttp import HttpxAiohttpClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.db import create_engine, migrate
from tests import processes
from tests.database import scratch

ADMIN_KEY = "bench-admin-key-" + "o" * 32
SIM_KEY = "bench-simulator-key"
OWNER = "bench@corp"
LISTED = 20
WARMUP = 20

Timed = Callable[[], Awaitable[None]]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantile(samples: list[float], q: float) -> float:
    """The nearest-rank quantile, in milliseconds."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return round(ordered[rank] * 1000, 2)


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50": quantile(samples, 0.5),
        "p90": quantile(samples, 0.9),
        "p99": quantile(samples, 0.99),
    }


class Meter:
    """Wall time of each call, and the CPU Corral's process spent during its own calls: on a
    shared machine CPU per request varies less than latency, which waits for the neighbours."""

    def __init__(self, corral_pid: int) -> None:
        self.corral_pid = corral_pid

    async def measure(self, n: int, direct: Timed, corral: Timed) -> dict[str, Any]:
        """Alternates the two sides, `WARMUP` unmeasured rounds first."""
        times: dict[str, list[float]] = {"direct": [], "corral": []}
        cpu = 0.0
        for i in range(WARMUP + n):
            for side, call in (("direct", direct), ("corral", corral)):
                cpu_before = cpu_seconds(self.corral_pid) if side == "corral" else 0.0
                started = time.perf_counter()
                await call()
                if i >= WARMUP:
                    times[side].append(time.perf_counter() - started)
                    if side == "corral":
                        cpu += cpu_seconds(self.corral_pid) - cpu_before
        return {
            **{side: summary(samples) for side, samples in times.items()},
            "corral_cpu_ms": round(cpu / n * 1000, 2),
        }


def expect(response: httpx.Response, *statuses: int) -> None:
    if response.status_code not in statuses:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text[:500]}"
        )


async def run(args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    logs = Path(tempfile.mkdtemp(prefix="corral-overhead-"))
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    sim_headers = {"Authorization": f"Bearer {SIM_KEY}"}
    with (
        processes.simulator(SIM_KEY, logs) as simulator,
        processes.corral(
            database_url=database_url,
            upstream_url=simulator.url,
            upstream_key=SIM_KEY,
            admin_key=ADMIN_KEY,
            log_dir=logs,
            log_level=args.log_level,
            **processes.UNMETERED,
        ) as corral_process,
    ):
        # Idle connections go after 1 s, before uvicorn closes them (5 s): a POST sent on a
        # connection the server is closing fails, and aiohttp does not resend it.
        limits = httpx.Limits(max_connections=4, keepalive_expiry=1.0)
        async with HttpxAiohttpClient(timeout=30, limits=limits, trust_env=False) as http:
            sim, crl = simulator.url, corral_process.url
            expect(
                await http.put(
                    f"{sim}/_simulator/config",
                    json={
                        "concurrent_vm_limit": 1_000_000,
                        "latency_ms": 0,
                        "requests_hourly_limit": 100_000_000,
                        "sandboxes_hourly_limit": 1_000_000,
                    },
                ),
                200,
            )
            expect(
                await http.put(
                    f"{crl}/v1/admin/plan",
                    json={"plan": "enterprise", "limit": 1_000_000},
                    headers=admin,
                ),
                200,
            )
            expect(
                await http.post(
                    f"{crl}/v1/admin/teams", json={"id": "bench", "name": "bench"}, headers=admin
                ),
                200,
                201,
            )
            issued = await http.post(
                f"{crl}/v1/admin/teams/bench/keys",
                json={
                    "name": "bench",
                    "scopes": ["sandboxes:read", "sandboxes:write"],
                    "owner": OWNER,
                },
                headers=admin,
            )
            expect(issued, 200, 201)
            team = {"Authorization": f"Bearer {issued.json()['key']}"}

            # Enough sandboxes on both sides for a full page of 20.
            ids: list[str] = []
            for _ in range(LISTED + 1):
                created = await http.post(
                    f"{crl}/v1/sandboxes", json={"tier": "Pico", "owner": OWNER}, headers=team
                )
                expect(created, 201)
                ids.append(created.json()["id"])
            sandbox = (await http.get(f"{crl}/v1/sandboxes/{ids[0]}", headers=team)).json()
            upstream_id = sandbox["upstream_id"]
            # A VM of its own for the direct cycle, so that the two cycles do not interleave.
            forked = await http.post(f"{sim}/sandbox/pcz35m/fork", json={}, headers=sim_headers)
            expect(forked, 201)
            direct_vm = forked.json()["data"]["id"]
            expect(
                await http.post(
                    f"{sim}/vm/{direct_vm}/start", json={"tier": "Pico"}, headers=sim_headers
                ),
                200,
            )

            def get(url: str, headers: dict[str, str]) -> Timed:
                async def call() -> None:
                    expect(await http.get(url, headers=headers), 200)

                return call

            async def lifecycle(
                n: int,
                direct: tuple[str, dict[str, str], Any],
                corral: tuple[str, dict[str, str], Any],
            ) -> dict[str, dict[str, Any]]:
                """hibernate, then start, alternating sides: each call and the pair timed."""
                rows = ("hibernate", "start", "hibernate+start")
                times = {row: {"direct": [], "corral": []} for row in rows}
                cpu = dict.fromkeys(rows, 0.0)
                pid = corral_process.popen.pid
                for i in range(WARMUP + n):
                    for side, (vm, headers, body) in (("direct", direct), ("corral", corral)):
                        cpu_at = [cpu_seconds(pid)]
                        stamps = [time.perf_counter()]
                        expect(await http.post(f"{vm}/hibernate", headers=headers), 200)
                        cpu_at.append(cpu_seconds(pid))
                        stamps.append(time.perf_counter())
                        start = {} if body is None else {"json": body}
                        expect(await http.post(f"{vm}/start", headers=headers, **start), 200)
                        cpu_at.append(cpu_seconds(pid))
                        stamps.append(time.perf_counter())
                        if i < WARMUP:
                            continue
                        spans = {"hibernate": (0, 1), "start": (1, 2), "hibernate+start": (0, 2)}
                        for row, (a, b) in spans.items():
                            times[row][side].append(stamps[b] - stamps[a])
                            if side == "corral":
                                cpu[row] += cpu_at[b] - cpu_at[a]
                return {
                    row: {
                        **{side: summary(samples) for side, samples in times[row].items()},
                        "corral_cpu_ms": round(cpu[row] / n * 1000, 2),
                    }
                    for row in rows
                }

            n = args.requests
            meter = Meter(corral_process.popen.pid)
            direct_get = get(f"{sim}/sandbox/{upstream_id}", sim_headers)
            direct_list = get(f"{sim}/sandbox?page=1&page_size={LISTED}", sim_headers)
            rows = {
                "get (native)": await meter.measure(
                    n, direct_get, get(f"{crl}/v1/sandboxes/{ids[0]}", team)
                ),
                "get (/csb)": await meter.measure(
                    n, direct_get, get(f"{crl}/csb/sandbox/{upstream_id}", team)
                ),
                "list 20 (native)": await meter.measure(
                    n, direct_list, get(f"{crl}/v1/sandboxes?limit={LISTED}", team)
                ),
                "list 20 (/csb)": await meter.measure(
                    n, direct_list, get(f"{crl}/csb/sandbox?page=1&page_size={LISTED}", team)
                ),
                "running (/csb)": await meter.measure(
                    n, get(f"{sim}/vm/running", sim_headers), get(f"{crl}/csb/vm/running", team)
                ),
            }
            cycle = await lifecycle(
                n,
                (f"{sim}/vm/{direct_vm}", sim_headers, {"tier": "Pico"}),
                (f"{crl}/v1/sandboxes/{ids[1]}", team, None),
            )
            for row in ("hibernate", "start", "hibernate+start"):
                rows[f"{row} (native)"] = cycle[row]
            # The cycled sandbox now has an interval per start: a read must not grow with them.
            rows["get, cycled (native)"] = await meter.measure(
                n,
                get(f"{sim}/sandbox/{direct_vm}", sim_headers),
                get(f"{crl}/v1/sandboxes/{ids[1]}", team),
            )
    return {
        "benchmark": "overhead",
        "requests_per_row": args.requests,
        "log_level": args.log_level,
        "unit": "ms",
        "rows": {
            name: {
                "direct": row["direct"],
                "corral": row["corral"],
                "added_p50_ms": round(row["corral"]["p50"] - row["direct"]["p50"], 2),
                "corral_cpu_ms": row["corral_cpu_ms"],
            }
            for name, row in rows.items()
        },
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    # tests.database makes (and drops) the scratch database on this server.
    os.environ["CORRAL_TEST_DATABASE_URL"] = args.database_server
    async with scratch(f"corral_bench_overhead_{os.getpid()}") as url:
        engine = create_engine(url, pool_size=1)
        await migrate(engine)
        await engine.dispose()
        return await run(args, url)


def table(result: dict[str, Any]) -> str:
    head = f"{'ms, one request at a time':<26}{'direct p50/p90/p99':>22}{'Corral p50/p90/p99':>22}"
    lines = [head + f"{'added p50':>11}{'Corral CPU':>12}"]
    for name, row in result["rows"].items():
        d, c = row["direct"], row["corral"]
        lines.append(
            f"{name:<26}{d['p50']:>8}{d['p90']:>7}{d['p99']:>7}"
            f"{c['p50']:>8}{c['p90']:>7}{c['p99']:>7}{row['added_p50_ms']:>+11}"
            f"{row['corral_cpu_ms']:>12}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="measured rounds per row")
    parser.add_argument("--json-only", action="store_true", help="print the JSON object only")
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="Corral's log level (INFO, its default, logs each request)",
    )
    parser.add_argument(
        "--database-server",
        default=os.environ.get(
            "CORRAL_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="Postgres server on which the scratch database is created and dropped",
    )
    arguments = parser.parse_args()
    if arguments.requests < 1:
        parser.error("--requests must be at least 1")
    result = asyncio.run(main(arguments))
    print(json.dumps(result, indent=2))
    if not arguments.json_only:
        print()
        print(table(result))
