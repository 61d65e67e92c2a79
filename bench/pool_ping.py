"""What testing a pooled connection at checkout costs: the checkout and one query, on an engine
with no test, with SQLAlchemy's `pool_pre_ping` (three round trips on asyncpg: BEGIN, the
query, ROLLBACK), and with Corral's own `app.db.create_engine` (one query in the simple
protocol), both for a connection that sat idle (tested: here every checkout, by setting
`PING_AFTER_IDLE_SECONDS` to 0) and for one used moments ago (not tested, the case of every
checkout here with the default). Every request checks out at least one connection, so this
is added to each.

Runs against `--database-server` (nothing is written). Prints one JSON object and a table.

    .venv/bin/python bench/pool_ping.py [--checkouts 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import db
from app.db import async_url, create_engine

SELECT_1 = text("SELECT 1")


async def per_checkout_ms(engine: AsyncEngine, checkouts: int) -> float:
    async with engine.connect() as conn:  # the pool's connection, made before the clock
        await conn.execute(SELECT_1)
    began = time.perf_counter()
    for _ in range(checkouts):
        async with engine.connect() as conn:
            await conn.execute(SELECT_1)
    elapsed = time.perf_counter() - began
    await engine.dispose()
    return elapsed / checkouts * 1000


async def run(url: str, checkouts: int, rounds: int) -> dict[str, float]:
    default = db.PING_AFTER_IDLE_SECONDS
    # name: (engine, Corral's idle threshold while it runs)
    engines = {
        "no test": (lambda: create_async_engine(url, pool_pre_ping=False), default),
        "pool_pre_ping": (lambda: create_async_engine(url, pool_pre_ping=True), default),
        "corral, idle (tested)": (lambda: create_engine(url), 0.0),
        "corral, recent (untested)": (lambda: create_engine(url), default),
    }
    samples: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):  # interleaved, so that a noisy neighbour hits all alike
        for name, (make, threshold) in engines.items():
            db.PING_AFTER_IDLE_SECONDS = threshold
            samples[name].append(await per_checkout_ms(make(), checkouts))
    db.PING_AFTER_IDLE_SECONDS = default
    return {name: round(statistics.median(values), 3) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkouts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--database-server",
        default=os.environ.get(
            "CORRAL_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    ms = asyncio.run(run(async_url(args.database_server), args.checkouts, args.rounds))
    print(json.dumps({"benchmark": "pool_ping", "unit": "ms per checkout + query", "median": ms}))
    base = ms["no test"]
    for name, value in ms.items():
        print(f"{name:<27} {value:7.3f} ms   {value - base:+.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
