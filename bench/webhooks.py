"""Webhook delivery: throughput, and the delay from event to delivery of healthy endpoints with
and without a slow and a failing endpoint beside them.

Runs a receiver process (tests/webhooks/receiver.py, which verifies every signature), a
standalone simulator and `--replicas` `corral serve` processes (their delivery workers are what
is measured) on loopback against a scratch database, then, twice:

1. baseline: three healthy endpoints (/ok); `--events` events written through the outbox at
   `--rate` events per second (0: all at once), each delivered to all three;
2. with trouble: the same three plus one slow endpoint (/slow, `--slow-delay` s per request)
   and one failing endpoint (/fail, 500, so every delivery is retried on the back-off); as
   many events again, each to all five.

Each run waits until every healthy delivery succeeded, and reports healthy deliveries per
second, the p50/p99/max delay from an event to its arrival at the receiver (the receiver's
wall clock minus the event's), and, for the second run, how far the slow and failing
endpoints had got by then: their backlogs are still there when the healthy ones are done.

`--no-pending-index` drops the index the claim's per-endpoint look-up reads,
(endpoint_id, next_attempt_at, id) WHERE status = 'pending', to show what it is for.

    .venv/bin/python bench/webhooks.py [--events 10000] [--rate 150] [--no-pending-index]
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

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.db import create_engine, migrate, session_factory, transaction
from app.models import WebhookEndpoint
from app.webhooks import events, signing
from tests import processes
from tests.database import drop, recreate
from tests.webhooks.receiver import Receiver, running

ADMIN_KEY = "bench-admin-key-" + "w" * 32
SIM_KEY = "bench-simulator-key"
SECRET = signing.new_secret()
EVENT_TYPE = "reconcile.drift_found"
DATABASE = f"corral_bench_webhooks_{os.getpid()}"
# The index the claim's per-endpoint look-up wants (see app/webhooks/delivery_repository.py);
# a no-op once the schema has it.
DROP_PENDING_INDEX = "DROP INDEX ix_webhook_deliveries_pending_endpoint"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def add_endpoints(sessions: Any, receiver: Receiver, paths: dict[str, str]) -> None:
    async with transaction(sessions) as session:
        for endpoint_id, path in paths.items():
            session.add(
                WebhookEndpoint(
                    id=endpoint_id,
                    url=f"{receiver.url}{path}",
                    events=[EVENT_TYPE],
                    secret=SECRET,
                    enabled=True,
                )
            )


async def emit_all(sessions: Any, count: int, rate: float, batch: int) -> set[str]:
    """Write `count` events at `rate` per second in batches; their ids."""
    ids: set[str] = set()
    started = time.monotonic()
    written = 0
    while written < count:
        size = min(batch, count - written)
        if rate > 0:
            # Keep to the schedule rather than to the batch's own pace.
            await asyncio.sleep(max(0.0, started + written / rate - time.monotonic()))
        batch_events = [events.Event(type=EVENT_TYPE, data={"n": written + i}) for i in range(size)]
        async with transaction(sessions) as session:
            await events.emit_many(session, batch_events)
        ids.update(e.id for e in batch_events)
        written += size
    return ids


async def occurred_at(engine: Any, ids: set[str]) -> dict[str, float]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT id, extract(epoch FROM occurred_at) FROM webhook_events")
        )
        return {row[0]: float(row[1]) for row in rows if row[0] in ids}


async def succeeded(engine: Any, endpoint_ids: list[str]) -> int:
    async with engine.connect() as conn:
        found: int = await conn.scalar(
            text(
                "SELECT count(*) FROM webhook_deliveries"
                " WHERE endpoint_id = ANY(:ids) AND status = 'succeeded'"
            ),
            {"ids": endpoint_ids},
        )
        return found


async def run(
    engine: Any,
    receiver: Receiver,
    corrals: list[int],
    args: argparse.Namespace,
    healthy: list[str],
    troubled: dict[str, str],
) -> dict[str, Any]:
    sessions = session_factory(engine)
    cpu_before = {"corral": sum(map(cpu_seconds, corrals)), "receiver": cpu_seconds(receiver.pid)}
    # The healthy endpoints' deliveries of an earlier run are done already.
    target = await succeeded(engine, healthy) + args.events * len(healthy)
    began = time.time()
    emitting = asyncio.create_task(emit_all(sessions, args.events, args.rate, args.batch))
    while (done := await succeeded(engine, healthy)) < target or not emitting.done():
        if time.time() - began > args.timeout:
            raise TimeoutError(f"{done} of {target} healthy deliveries after {args.timeout} s")
        await asyncio.sleep(0.25)
    await emitting
    finished = time.time()
    cpu_after = {"corral": sum(map(cpu_seconds, corrals)), "receiver": cpu_seconds(receiver.pid)}
    ids = await emitting
    # When each happened, as Corral stamped it (its clock is the wall clock here).
    when = await occurred_at(engine, ids)
    healthy_paths = {f"/ok/{e}" for e in healthy}
    first_arrival: dict[tuple[str, str], float] = {}
    troubled_requests = dict.fromkeys(troubled, 0)
    for request in receiver.requests():
        if request["id"] not in ids:
            continue
        assert request["verified"], request
        key = (request["path"], request["id"])
        if request["path"] in healthy_paths and key not in first_arrival:
            first_arrival[key] = request["received_at"]
        for name, path in troubled.items():
            if request["path"] == path and request["received_at"] <= finished:
                troubled_requests[name] += 1
    delays = [at - when[event_id] for (_, event_id), at in first_arrival.items()]
    requests = len(first_arrival) + sum(troubled_requests.values())
    last = max(first_arrival.values())
    result: dict[str, Any] = {
        "events": args.events,
        "healthy_deliveries": len(first_arrival),
        "healthy_deliveries_per_second": round(len(first_arrival) / (last - began), 1),
        "healthy_delay_ms": {
            "p50": round(percentile(delays, 0.50) * 1000, 1),
            "p99": round(percentile(delays, 0.99) * 1000, 1),
            "max": round(max(delays) * 1000, 1),
        },
        "seconds": round(last - began, 2),
        # Every request sent meanwhile, the slow and failing endpoints' included.
        "requests": requests,
        "cpu_ms_per_request": {
            part: round((cpu_after[part] - cpu_before[part]) / requests * 1000, 3)
            for part in cpu_before
        },
    }
    if troubled:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT endpoint_id, count(*) FILTER (WHERE status = 'pending'),"
                    " count(*) FILTER (WHERE status = 'succeeded'), sum(attempts)"
                    " FROM webhook_deliveries WHERE endpoint_id = ANY(:ids) GROUP BY endpoint_id"
                ),
                {"ids": list(troubled)},
            )
            state = {row[0]: row[1:] for row in rows}
        result["when_healthy_were_done"] = {
            name: {
                "requests_received": troubled_requests[name],
                "pending": int(state[name][0]),
                "succeeded": int(state[name][1]),
                "attempts": int(state[name][2]),
            }
            for name in troubled
        }
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    # The machine's load before and after: other work on it shows in every figure.
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    url = await recreate(DATABASE)
    logs = Path(tempfile.mkdtemp(prefix="corral-bench-webhooks-"))
    engine = create_engine(url, pool_size=2)
    try:
        await migrate(engine)
        if args.no_pending_index:
            async with engine.begin() as conn:
                await conn.execute(text(DROP_PENDING_INDEX))
        with ExitStack() as stack:
            receiver = stack.enter_context(
                running([SECRET], logs, "--slow-delay", str(args.slow_delay))
            )
            sim = stack.enter_context(processes.simulator(SIM_KEY, logs))
            corrals = [
                stack.enter_context(
                    processes.corral(
                        database_url=url,
                        upstream_url=sim.url,
                        upstream_key=SIM_KEY,
                        admin_key=ADMIN_KEY,
                        log_dir=logs,
                        log_level="WARNING",
                        replica=f"bench-{name}",
                    )
                ).popen.pid
                for name in range(args.replicas)
            ]
            sessions = session_factory(engine)
            healthy = [f"healthy{i}" for i in range(3)]
            # A path per endpoint, so the receiver's log says which endpoint a request was for.
            await add_endpoints(sessions, receiver, {e: f"/ok/{e}" for e in healthy})
            baseline = await run(engine, receiver, corrals, args, healthy, {})
            troubled = {"slow": "/slow", "failing": "/fail"}
            await add_endpoints(sessions, receiver, troubled)
            with_trouble = await run(engine, receiver, corrals, args, healthy, troubled)
    finally:
        await engine.dispose()
        await drop(DATABASE)
    return {
        "benchmark": "webhooks",
        "replicas": args.replicas,
        "rate_events_per_second": args.rate,
        "slow_delay_seconds": args.slow_delay,
        "pending_index": not args.no_pending_index,
        "concurrency_per_endpoint": 4,
        "cpus": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "baseline_3_healthy": baseline,
        "with_slow_and_failing": with_trouble,
    }


def table(result: dict[str, Any]) -> None:
    base, mixed = result["baseline_3_healthy"], result["with_slow_and_failing"]
    print(f"\n{'healthy endpoints':<34}{'alone':>12}{'with slow+failing':>20}")
    print(
        f"{'deliveries/s':<34}{base['healthy_deliveries_per_second']:>12}"
        f"{mixed['healthy_deliveries_per_second']:>20}"
    )
    for name in ("p50", "p99", "max"):
        print(
            f"{'delay ' + name + ' ms':<34}{base['healthy_delay_ms'][name]:>12}"
            f"{mixed['healthy_delay_ms'][name]:>20}"
        )
    print(f"{'all delivered after s':<34}{base['seconds']:>12}{mixed['seconds']:>20}")
    for part in base["cpu_ms_per_request"]:
        print(
            f"{'CPU ms per request, ' + part:<34}{base['cpu_ms_per_request'][part]:>12}"
            f"{mixed['cpu_ms_per_request'][part]:>20}"
        )
    for name, state in mixed["when_healthy_were_done"].items():
        print(
            f"{name + ' then: received / pending':<34}"
            f"{state['requests_received']:>12}{state['pending']:>20}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=150, help="events/s; 0: all at once")
    parser.add_argument("--batch", type=int, default=10, help="events per outbox transaction")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--slow-delay", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--no-pending-index", action="store_true")
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result, indent=2))
    table(result)
