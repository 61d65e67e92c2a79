"""Reconcile period time with many running VMs, half of them drifting.

Builds a scratch database and an in-process simulator with `--vms` running VMs (default
10,000), then splits `--drift` of that count (default half: 5,000) evenly over four kinds:

- unmanaged:        running upstream, no row here;
- woken_upstream:   running upstream, hibernated here;
- tier_changed:     running both sides, at another tier upstream;
- stopped_upstream: running here (seen before), hibernated upstream: extra rows, so the number
                    of VMs running upstream stays `--vms`.

The rest are running on both sides and agree. Then it runs reconcile periods back to back:
the first repairs three kinds and counts the first miss of the fourth, the second closes the
fourth, the third finds nothing. Prints one JSON object and a short table; the target on the
development machine is under 2 s per period.

    .venv/bin/python bench/reconcile.py [--vms 10000] [--drift 0.5] [--periods 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.db import create_engine, migrate, session_factory, transaction
from app.models import Sandbox, UsageInterval
from app.reconcile.service import reconcile_once
from app.runtime import Runtime
from app.settings import Settings
from app.tiers import LIST_CREDITS_PER_HOUR
from app.upstream.client import UpstreamClient
from app.upstream.simulator import create_simulator_app
from app.upstream.simulator.app import simulator_of
from app.upstream.simulator.config import SimulatorConfig
from app.upstream.simulator.schemas import OutsideVmRequest
from app.upstream.simulator.tiers import Tier
from tests.database import drop, recreate

SIM_KEY = "bench-simulator-key"
TEAM = "bench"
KINDS = ("unmanaged", "woken_upstream", "tier_changed", "stopped_upstream")


def build_simulator(vms: int, extra: int) -> Any:
    config = SimulatorConfig(
        concurrent_vm_limit=vms + extra,
        requests_hourly_limit=10**9,
        sandboxes_hourly_limit=10**9,
    )
    return create_simulator_app(api_key=SIM_KEY, config=config)


def sandbox_row(index: int, vm_id: str, tier: str, state: str, now: datetime) -> dict[str, Any]:
    started = now - timedelta(hours=1)
    return {
        "id": f"sbx_bench{index:07d}",
        "upstream_id": vm_id,
        "team_id": TEAM,
        "owner": f"user-{index % 500}",
        "template": "pcz35m",
        "tier": tier,
        "hibernation_timeout_seconds": 86400,
        "state": state,
        "last_cause": "api",
        "operation_id": f"bench{index:027d}",
        "state_changed_at": started,
        "last_started_at": started,
        "last_seen_running_at": now - timedelta(seconds=20),
        "missed_polls": 0,
    }


async def populate(rt: Runtime, simulator: Any, vms: int, drift: float) -> dict[str, int]:
    """VMs upstream and rows here, per the module docstring; returns the count per kind."""
    state = simulator_of(simulator)
    per_kind = int(vms * drift) // len(KINDS)
    counts = {"agreeing": vms - 3 * per_kind, **dict.fromkeys(KINDS, per_kind)}
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    intervals: list[dict[str, Any]] = []
    index = 0

    def outside(tier: Tier) -> str:
        vm = state.start_outside(OutsideVmRequest(tier=tier, hibernation_timeout_seconds=86400))
        return str(vm.id)

    def add(vm_id: str, tier: str, row_state: str) -> None:
        nonlocal index
        row = sandbox_row(index, vm_id, tier, row_state, now)
        index += 1
        rows.append(row)
        if row_state == "running":
            intervals.append(
                {
                    "sandbox_id": row["id"],
                    "team_id": TEAM,
                    "owner": row["owner"],
                    "tier": tier,
                    "credits_per_hour": LIST_CREDITS_PER_HOUR[tier],
                    "started_at": row["last_started_at"],
                }
            )

    for _ in range(counts["agreeing"]):
        add(outside(Tier.NANO), "Nano", "running")
    for _ in range(counts["unmanaged"]):
        outside(Tier.MICRO)
    for _ in range(counts["woken_upstream"]):
        add(outside(Tier.NANO), "Nano", "hibernated")
    for _ in range(counts["tier_changed"]):
        add(outside(Tier.SMALL), "Nano", "running")
    for _ in range(counts["stopped_upstream"]):
        vm_id = outside(Tier.NANO)
        state.hibernate(vm_id)
        add(vm_id, "Nano", "running")

    async with transaction(rt.sessions) as session:
        await session.execute(text("INSERT INTO teams (id, name) VALUES (:id, :id)"), {"id": TEAM})
        for first in range(0, len(rows), 2000):
            await session.execute(insert(Sandbox), rows[first : first + 2000])
        for first in range(0, len(intervals), 2000):
            await session.execute(insert(UsageInterval), intervals[first : first + 2000])
    async with rt.engine.connect() as conn:
        await conn.execute(text("ANALYZE"))
    return counts


async def main(args: argparse.Namespace) -> dict[str, Any]:
    database = f"corral_bench_reconcile_{os.getpid()}"
    url = await recreate(database)
    engine = create_engine(url)
    try:
        await migrate(engine)
        simulator = build_simulator(args.vms, int(args.vms * args.drift))
        upstream = UpstreamClient(
            "http://simulator",
            SIM_KEY,
            transport=httpx.ASGITransport(app=simulator),
        )
        settings = Settings(database_url=url, upstream="simulator", reconcile_enabled=False)
        rt = Runtime(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            upstream=upstream,
            simulator=simulator,
        )
        setup_started = time.perf_counter()
        counts = await populate(rt, simulator, args.vms, args.drift)
        setup_seconds = time.perf_counter() - setup_started

        poll_started = time.perf_counter()
        polled = await upstream.running_vms()
        poll_seconds = time.perf_counter() - poll_started

        periods = []
        for number in range(1, args.periods + 1):
            started = time.perf_counter()
            summary = await reconcile_once(rt, replica="bench")
            seconds = time.perf_counter() - started
            periods.append(
                {
                    "period": number,
                    "seconds": round(seconds, 3),
                    "outcome": summary.outcome,
                    "phases_ms": summary.phases,
                    "drift": summary.drift,
                }
            )
        await upstream.aclose()
    finally:
        await engine.dispose()
        await drop(database)

    found: dict[str, int] = {}
    for period in periods:
        for kind, count in period["drift"].items():
            found[kind] = found.get(kind, 0) + count
    return {
        "vms_running_upstream": polled.concurrent_vm_count,
        "planted": counts,
        "found": found,
        "all_found": all(found.get(kind, 0) == counts[kind] for kind in KINDS),
        "setup_seconds": round(setup_seconds, 2),
        "poll_seconds": round(poll_seconds, 3),
        "periods": periods,
        "max_period_seconds": max(p["seconds"] for p in periods),
        "target_seconds": 2.0,
    }


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--drift", type=float, default=0.5)
    parser.add_argument("--periods", type=int, default=3)
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result, indent=2))
    print(f"\n{'period':<8}{'seconds':>9}{'poll':>7}{'load':>7}{'repair':>8}  drift")
    for period in result["periods"]:
        drift = ", ".join(f"{k} {v}" for k, v in sorted(period["drift"].items())) or "-"
        ms = period["phases_ms"]
        print(
            f"{period['period']:<8}{period['seconds']:>9.3f}{ms.get('poll', 0) / 1000:>7.2f}"
            f"{ms.get('load', 0) / 1000:>7.2f}{ms.get('repair', 0) / 1000:>8.2f}  {drift}"
        )
    print(
        f"\nslowest period {result['max_period_seconds']:.3f} s (target < 2 s); "
        f"poll alone {result['poll_seconds']:.3f} s; every planted drift found: "
        f"{result['all_found']}"
    )


if __name__ == "__main__":
    cli()
