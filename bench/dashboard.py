"""Dashboard pages on a year of data: each page's server time, p50/p90 over `--requests` calls.

Builds a scratch database on `--database-server` (created, migrated with the project's
migrations, dropped afterwards unless `--keep`), fills it in bulk with INSERT ... SELECT over
generate_series (no row crosses the client):

    200 teams (limits; two thirds with a budget of 0.8 to 3 times their month so far, so some
    are over), 10,000 sandboxes (250 running, a few starting, unmanaged, shut down, deleted),
    1,000,000 usage intervals over the last 365 days (100 per sandbox, the running ones' last
    one open), 2 events per interval, 1 audit row per interval, 30 days of reconcile runs
    every 15 s with some drift, 3 webhook endpoints with 20,000 events and their deliveries,

then starts a standalone simulator and one `corral serve` on loopback against it (the
reconciler off, so the seeded states stay as loaded), signs in to the dashboard through its
login form, and requests each page `--requests` times after `--warmup` calls, one at a time,
over one keep-alive connection:

    with the admin key: overview (window 24h, 7d, 30d), teams, a team page, sandboxes (and
    filtered), a sandbox page, usage (this month, grouped by team), usage.csv (the same),
    reconciliation, audit (and filtered), prices, webhooks, an endpoint's deliveries, the
    overview's live JSON;
    with a team key: overview (24h, 30d), its team page, usage.

Times are measured client-side over loopback (the whole answer read) and, when the page
sends one, from its `Server-Timing` header (the sum of its `dur` values: the time the
dashboard took to start its answer, so a streamed CSV's covers its first line only). The target is
every page under 300 ms at p90. Prints one JSON object and a table (`--json-only`: the JSON
alone). Loading takes 1.5 to 3 minutes on 2 cores; `--keep` loads into `corral_bench_dashboard`
and leaves it, `--reuse` times the pages again on it without loading.

    .venv/bin/python bench/dashboard.py [--requests 20] [--keep | --reuse] [--json-only]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy.engine import make_url

from app.db import create_engine, migrate
from tests import processes
from tests.database import drop, recreate

ADMIN_KEY = "bench-admin-key-" + "d" * 32
SIM_KEY = "bench-simulator-key"
TEAMS = 200
SANDBOXES = 10_000
INTERVALS_PER_SANDBOX = 100
TARGET_MS = 300
# A closed loopback port: an endpoint the delivery worker might try never leaves the machine.
HOOK_URL = "http://127.0.0.1:9/corral"

# Each statement names its parameters: `:now` is the load's "now" (so the year ends where
# Corral's clock is), `:teams`, `:sandboxes`, `:runs` (intervals per sandbox) and `:hook`.
LOAD = [
    "SELECT setseed(0.42)",
    # Teams: a third without a budget (the rest get theirs once the ledger is in), some limits.
    """
    INSERT INTO teams (id, name, created_at, max_concurrent, max_concurrent_per_owner,
                       max_tier, guaranteed, monthly_budget_credits, budget_policy,
                       budget_soft_threshold)
    SELECT format('team-%s', lpad(t::text, 3, '0')), format('Team %s', t),
           :now - interval '400 days',
           CASE WHEN t % 4 = 0 THEN 20 END,
           CASE WHEN t % 5 = 0 THEN 3 END,
           CASE WHEN t % 6 = 0 THEN 'Large' END,
           CASE WHEN t % 50 = 0 THEN 2 ELSE 0 END,
           CASE WHEN t % 3 = 0 THEN NULL ELSE 50000 END,
           CASE WHEN t % 7 = 0 THEN 'hibernate' ELSE 'block' END,
           CASE WHEN t % 3 = 0 THEN NULL ELSE 0.8 END
      FROM generate_series(0, :teams - 1) AS t
    """,
    """
    UPDATE org_plan SET plan = 'enterprise', plan_limit = 400, observed_limit = 500,
                        observed_at = :now, updated_at = :now
    """,
    # 50 sandboxes a team; one in 40 running, one in 1,000 starting, one in 10 shut down, one
    # in 50 deleted, the rest hibernated; tiers weighted towards the small ones.
    """
    INSERT INTO sandboxes (id, upstream_id, team_id, owner, title, template, tier,
                           hibernation_timeout_seconds, tags, state, last_cause, operation_id,
                           reservation_expires_at, created_at, updated_at, state_changed_at,
                           last_started_at, deleted_at, last_seen_running_at)
    SELECT 'sbx_' || lpad(s::text, 12, '0'), 'up' || lpad(s::text, 8, '0'),
           format('team-%s', lpad((s / (:sandboxes / :teams))::text, 3, '0')),
           format('user-%s@team-%s', s % 10, lpad((s / (:sandboxes / :teams))::text, 3, '0')),
           format('sandbox %s', s), 'pcz35m',
           CASE WHEN r < 0.30 THEN 'Pico' WHEN r < 0.60 THEN 'Nano' WHEN r < 0.80 THEN 'Micro'
                WHEN r < 0.90 THEN 'Small' WHEN r < 0.96 THEN 'Medium' WHEN r < 0.99 THEN 'Large'
                ELSE 'XLarge' END,
           300,
           CASE s % 3 WHEN 0 THEN ARRAY['ci']::varchar[] WHEN 1 THEN ARRAY['demo']::varchar[]
                      ELSE ARRAY[]::varchar[] END,
           state, 'api', 'op' || s,
           CASE WHEN state = 'starting' THEN :now + interval '1 hour' END,
           :now - interval '366 days', :now, :now - interval '1 hour', :now - interval '2 hours',
           CASE WHEN state = 'deleted' THEN :now - interval '1 hour' END,
           CASE WHEN state = 'running' THEN :now END
      FROM generate_series(0, :sandboxes - 1) AS s,
           LATERAL (SELECT random() AS r,
                           CASE WHEN s % 40 = 1 THEN 'running'
                                WHEN s % 1000 = 3 THEN 'starting'
                                WHEN s % 50 = 9 THEN 'deleted'
                                WHEN s % 10 = 7 THEN 'shutdown'
                                ELSE 'hibernated' END AS state) AS pick
    """,
    # A few VMs found running upstream that Corral did not start (adopted, team unassigned).
    """
    INSERT INTO sandboxes (id, upstream_id, team_id, template, tier,
                           hibernation_timeout_seconds, state, last_cause, operation_id,
                           managed, created_at, updated_at, state_changed_at, last_started_at,
                           last_seen_running_at)
    SELECT 'sbx_unmanaged' || lpad(u::text, 3, '0'), 'unmanaged' || u, 'unassigned', 'unknown',
           'Nano', 300, 'running', 'reconciler', 'adopt' || u, false,
           :now - interval '3 hours', :now, :now - interval '3 hours',
           :now - interval '3 hours', :now
      FROM generate_series(1, 5) AS u
    """,
    # The ledger, in time order as a real one is written: sandbox s runs once in each of 100
    # equal slots of the year, 1 minute to 8 hours; a running sandbox's last run is open.
    """
    INSERT INTO usage_intervals (sandbox_id, team_id, owner, tier, credits_per_hour,
                                 price_book_id, started_at, ended_at, end_cause)
    SELECT id, team_id, owner, tier, rate, 1, started,
           CASE WHEN open THEN NULL ELSE started + seconds * interval '1 second' END,
           CASE WHEN open THEN NULL WHEN k % 3 = 0 THEN 'upstream' ELSE 'api' END
      FROM (SELECT s.id, s.team_id, s.owner, s.tier, k,
                   (p.credits_per_hour ->> s.tier)::numeric AS rate,
                   s.state = 'running' AND k = :runs - 1 AS open,
                   CASE WHEN s.state = 'running' AND k = :runs - 1
                        THEN :now - random() * interval '6 hours'
                        ELSE :now - interval '365 days' + k * (interval '365 days' / :runs)
                             + random() * (interval '365 days' / :runs - interval '8 hours')
                   END AS started,
                   60 + floor(random() * (8 * 3600 - 60)) AS seconds
              FROM sandboxes s
             CROSS JOIN generate_series(0, :runs - 1) AS k
              JOIN price_books p ON p.id = 1
             WHERE s.managed) AS runs
     ORDER BY started
    """,
    # The unmanaged VMs' open intervals, from when they were adopted.
    """
    INSERT INTO usage_intervals (sandbox_id, team_id, owner, tier, credits_per_hour,
                                 price_book_id, started_at)
    SELECT id, team_id, NULL, tier, 10, 1, last_started_at FROM sandboxes WHERE NOT managed
    """,
    # Budgets from 0.8 to 3 times the month's spend so far, whatever day the bench runs on:
    # some teams are over, some near, most comfortably under.
    """
    UPDATE teams t
       SET monthly_budget_credits = greatest(100, round(m.spent * (0.8 + (right(t.id, 3)::int
                                                                   * 37 % 10) * 0.25)))
      FROM (SELECT team_id,
                   sum(credits_per_hour * extract(epoch FROM
                       coalesce(ended_at, :now) - greatest(started_at, date_trunc('month', :now)))
                       / 3600) AS spent
              FROM usage_intervals
             WHERE coalesce(ended_at, :now) > date_trunc('month', :now)
             GROUP BY team_id) AS m
     WHERE t.id = m.team_id AND t.monthly_budget_credits IS NOT NULL
    """,
    # Two events per run (its start and its stop) and the creation before them.
    """
    INSERT INTO sandbox_events (sandbox_id, at, from_state, to_state, cause, actor)
    SELECT sandbox_id, at, from_state, to_state, cause, actor FROM (
        SELECT id AS sandbox_id, created_at AS at, NULL AS from_state, 'starting' AS to_state,
               'api' AS cause, 'benchkey' AS actor
          FROM sandboxes
        UNION ALL
        SELECT sandbox_id, started_at, 'hibernated', 'running', 'api', 'benchkey'
          FROM usage_intervals
        UNION ALL
        SELECT sandbox_id, ended_at, 'running', 'hibernated', end_cause,
               CASE WHEN end_cause = 'api' THEN 'benchkey' END
          FROM usage_intervals WHERE ended_at IS NOT NULL
    ) AS e ORDER BY at
    """,
    # The secret of a team's seeded keys, so the bench can sign in with one (team_key).
    """
    CREATE FUNCTION pg_temp.team_secret(t int, n int) RETURNS text IMMUTABLE LANGUAGE sql
        AS $$ SELECT format('bench-team-secret-%s-%s', lpad(t::text, 3, '0'), n) $$
    """,
    # One audit row per start (the stops the upstream made are not calls).
    """
    INSERT INTO audit_log (at, actor, team_id, action, target, cause, request_id, outcome)
    SELECT started_at, 'benchkey', team_id, 'sandbox.start', sandbox_id, 'api',
           'req' || id, CASE WHEN id % 97 = 0 THEN 'refused' ELSE 'ok' END
      FROM usage_intervals ORDER BY started_at
    """,
    # The leader's runs every 15 s over the last 30 days; one in 500 finds drift.
    """
    INSERT INTO reconcile_runs (replica, started_at, finished_at, duration_ms, outcome,
                                upstream_running, observed_limit, drift)
    SELECT 'corral-0:1', at, at + interval '120 milliseconds', 120, 'ok', 255, 500,
           CASE WHEN n % 500 = 0 THEN '{"stopped_upstream": 1}'::jsonb ELSE '{}'::jsonb END
      FROM generate_series(1, 30 * 24 * 240) AS n,
           LATERAL (SELECT :now - interval '30 days' + n * interval '15 seconds') AS t(at)
    """,
    """
    INSERT INTO drifts (run_id, at, kind, sandbox_id, upstream_id, action)
    SELECT r.id, r.started_at, 'stopped_upstream', s.id, s.upstream_id, 'closed'
      FROM reconcile_runs r
      JOIN sandboxes s ON s.id = 'sbx_' || lpad(((r.id * 7919) % :sandboxes)::text, 12, '0')
     WHERE r.drift <> '{}'::jsonb
    """,
    """
    INSERT INTO api_keys (id, team_id, name, secret_sha256, scopes, created_at)
    SELECT format('k%s%s', lpad(t::text, 3, '0'), n), format('team-%s', lpad(t::text, 3, '0')),
           format('backend %s', n), sha256(convert_to(pg_temp.team_secret(t, n), 'UTF8')),
           ARRAY['sandboxes:read', 'sandboxes:write', 'usage:read']::varchar[],
           :now - interval '200 days'
      FROM generate_series(0, :teams - 1) AS t, generate_series(1, 2) AS n
    """,
    """
    INSERT INTO webhook_endpoints (id, url, events, description, secret, enabled, created_at,
                                   updated_at)
    SELECT 'whep_bench' || e, :hook, ARRAY['budget.threshold_crossed', 'budget.exhausted',
                                        'reconcile.drift_found']::varchar[],
           format('bench endpoint %s', e), 'whsec_' || md5(e::text), true,
           :now - interval '100 days', :now - interval '100 days'
      FROM generate_series(1, 3) AS e
    """,
    """
    INSERT INTO webhook_events (id, type, team_id, data, occurred_at)
    SELECT 'msg_bench' || n, 'budget.threshold_crossed',
           format('team-%s', lpad((n % 200)::text, 3, '0')),
           jsonb_build_object('team', format('team-%s', lpad((n % 200)::text, 3, '0'))),
           :now - (20000 - n) * interval '3 minutes'
      FROM generate_series(1, 20000) AS n
    """,
    # Every event to every endpoint, all settled (none pending, so nothing is sent).
    """
    INSERT INTO webhook_deliveries (event_id, endpoint_id, status, attempts, last_status_code,
                                    last_error, created_at, completed_at)
    SELECT ev.id, ep.id, CASE WHEN ep.id = 'whep_bench3' THEN 'failed' ELSE 'succeeded' END,
           CASE WHEN ep.id = 'whep_bench3' THEN 7 ELSE 1 END,
           CASE WHEN ep.id = 'whep_bench3' THEN 500 ELSE 204 END,
           CASE WHEN ep.id = 'whep_bench3' THEN 'HTTP 500' END,
           ev.occurred_at, ev.occurred_at + interval '1 second'
      FROM webhook_events ev CROSS JOIN webhook_endpoints ep
     ORDER BY ev.occurred_at
    """,
    """
    INSERT INTO webhook_attempts (delivery_id, attempt, at, duration_ms, status_code, error)
    SELECT id, 1, created_at, 40, last_status_code, last_error FROM webhook_deliveries
    """,
]


_NAMED = re.compile(r"(?<![:\w]):(now|teams|sandboxes|runs|hook)\b")


def positional(statement: str, values: dict[str, Any]) -> list[Any]:
    """asyncpg's `$n` form of a statement with `:name` parameters, then its arguments."""
    order: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in order:
            order.append(match[1])
        return f"${order.index(match[1]) + 1}::{_TYPES[match[1]]}"

    return [_NAMED.sub(number, statement), *(values[name] for name in order)]


# Postgres cannot always infer a parameter's type (`$1 - interval '1 day'`): each is cast.
_TYPES = {"now": "timestamptz", "teams": "int", "sandboxes": "int", "runs": "int", "hook": "text"}


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def load(url: str) -> dict[str, Any]:
    """Fill the migrated database; the load's "now", the row counts and how long it took."""
    now = datetime.now(UTC).replace(microsecond=0)
    values = {
        "now": now,
        "teams": TEAMS,
        "sandboxes": SANDBOXES,
        "runs": INTERVALS_PER_SANDBOX,
        "hook": HOOK_URL,
    }
    started = time.perf_counter()
    conn = await asyncpg.connect(_dsn(url))
    try:
        for statement in LOAD:
            await conn.execute(*positional(statement, values))
        await conn.execute("VACUUM ANALYZE")
        counts = {
            table: await conn.fetchval(f"SELECT count(*) FROM {table}")
            for table in (
                "teams",
                "sandboxes",
                "usage_intervals",
                "sandbox_events",
                "audit_log",
                "reconcile_runs",
                "drifts",
                "webhook_deliveries",
            )
        }
    finally:
        await conn.close()
    return {
        "now": now.isoformat(),
        "rows": counts,
        "load_s": round(time.perf_counter() - started, 1),
    }


def team_key(team: int) -> str:
    """The first seeded key of team-NNN, as a caller presents it."""
    return f"crl_k{team:03d}1_bench-team-secret-{team:03d}-1"


def team_pages(team: str) -> dict[str, str]:
    """What a team key sees: its own figures, its team's chart and usage."""
    return {
        "team key: overview 24h": "/dashboard?window=24h",
        "team key: overview 30d": "/dashboard?window=30d",
        "team key: team": f"/dashboard/teams/{team}",
        "team key: usage": "/dashboard/usage",
    }


def pages(sandbox: str, team: str) -> dict[str, str]:
    """What is timed: each page by name, with ids from the load."""
    return {
        "overview 24h": "/dashboard?window=24h",
        "overview 7d": "/dashboard?window=7d",
        "overview 30d": "/dashboard?window=30d",
        "teams": "/dashboard/teams",
        "team": f"/dashboard/teams/{team}",
        "sandboxes": "/dashboard/sandboxes",
        "sandboxes filtered": f"/dashboard/sandboxes?team={team}&state=hibernated&tier=Nano",
        "sandbox": f"/dashboard/sandboxes/{sandbox}",
        "usage month by team": "/dashboard/usage?group_by=team",
        "usage.csv month by team": "/dashboard/usage.csv?group_by=team",
        "reconciliation": "/dashboard/reconciliation",
        "audit": "/dashboard/audit",
        "audit filtered": f"/dashboard/audit?team={team}&action=sandbox.start",
        "prices": "/dashboard/prices",
        "webhooks": "/dashboard/webhooks",
        "webhook deliveries": "/dashboard/webhooks/whep_bench3",
        "live overview (JSON)": "/dashboard/live/overview",
    }


def quantile(samples: list[float], q: float) -> float:
    """The nearest-rank quantile."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return round(ordered[rank], 1)


_DUR = re.compile(r"dur=([0-9.]+)")


def server_ms(header: str | None) -> float | None:
    """The page's own account of its time: the sum of the `dur` of its Server-Timing metrics."""
    if not header:
        return None
    found = [float(d) for d in _DUR.findall(header)]
    return sum(found) if found else None


async def sign_in(client: httpx.AsyncClient, key: str) -> None:
    """As the login form does: its signed double-submit token, then the key."""
    form = await client.get("/dashboard/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None, form.text[:500]
    answer = await client.post("/dashboard/login", data={"api_key": key, "csrf_token": token[1]})
    if answer.status_code != 303 or answer.headers.get("location") != "/dashboard":
        raise RuntimeError(f"sign-in refused: {answer.status_code} {answer.text[:500]}")


async def time_page(
    client: httpx.AsyncClient, path: str, requests: int, warmup: int
) -> dict[str, Any]:
    for _ in range(warmup):
        await client.get(path)
    client_ms: list[float] = []
    server: list[float] = []
    status, size = 0, 0
    for _ in range(requests):
        started = time.perf_counter()
        answer = await client.get(path)
        body = answer.content
        client_ms.append((time.perf_counter() - started) * 1000)
        status, size = answer.status_code, len(body)
        if (reported := server_ms(answer.headers.get("server-timing"))) is not None:
            server.append(reported)
    figures: dict[str, Any] = {
        "status": status,
        "bytes": size,
        "p50": quantile(client_ms, 0.5),
        "p90": quantile(client_ms, 0.9),
        "max": round(max(client_ms), 1),
    }
    if server:
        figures["server_p50"] = quantile(server, 0.5)
        figures["server_p90"] = quantile(server, 0.9)
    return figures


async def run(args: argparse.Namespace, url: str, loaded: dict[str, Any] | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as logs, ExitStack() as stack:
        sim = stack.enter_context(processes.simulator(SIM_KEY, Path(logs)))
        corral = stack.enter_context(
            processes.corral(
                database_url=url,
                upstream_url=sim.url,
                upstream_key=SIM_KEY,
                admin_key=ADMIN_KEY,
                log_dir=Path(logs),
                log_level=args.log_level,
            )
        )
        # A running sandbox (100 runs, 201 events) of a team with a budget and 50 sandboxes.
        sandbox, team = "sbx_000000002081", 41
        timed: dict[str, Any] = {}
        for key, shown in (
            (ADMIN_KEY, pages(sandbox, f"team-{team:03d}")),
            (team_key(team), team_pages(f"team-{team:03d}")),
        ):
            async with httpx.AsyncClient(base_url=corral.url, timeout=60) as client:
                await sign_in(client, key)
                for name, path in shown.items():
                    timed[name] = await time_page(client, path, args.requests, args.warmup)
    return {
        "load": loaded,
        "server": "corral serve (one process, uvicorn) on loopback, reconciler off",
        "requests_per_page": args.requests,
        "target_ms": TARGET_MS,
        "unit": "ms",
        "pages": timed,
        "over_target": [
            name
            for name, figures in timed.items()
            if figures["p90"] > TARGET_MS or figures["status"] != 200
        ],
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    # tests.database makes (and drops) the scratch database on this server.
    os.environ["CORRAL_TEST_DATABASE_URL"] = args.database_server
    name = (
        "corral_bench_dashboard"
        if args.keep or args.reuse
        else f"corral_bench_dashboard_{os.getpid()}"
    )
    if args.reuse:
        from tests.database import url_for

        return await run(args, url_for(name), None)
    url = await recreate(name)
    try:
        engine = create_engine(url, pool_size=1)
        await migrate(engine)
        await engine.dispose()
        loaded = await load(url)
        return await run(args, url, loaded)
    finally:
        if not args.keep:
            await drop(name)


def table(result: dict[str, Any]) -> str:
    lines = [f"{'page':<26}{'status':>7}{'KiB':>8}{'p50 ms':>9}{'p90 ms':>9}{'server p50':>12}"]
    for name, row in result["pages"].items():
        server = row.get("server_p50", "—")
        lines.append(
            f"{name:<26}{row['status']:>7}{row['bytes'] / 1024:>8.1f}{row['p50']:>9}"
            f"{row['p90']:>9}{server:>12}"
        )
    over = result["over_target"]
    lines.append(
        f"over {result['target_ms']} ms (p90) or not 200: " + (", ".join(over) if over else "none")
    )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20, help="measured requests per page")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured requests per page first")
    parser.add_argument("--json-only", action="store_true", help="print the JSON object only")
    parser.add_argument(
        "--keep", action="store_true", help="load into corral_bench_dashboard and keep it"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="time the pages on a kept corral_bench_dashboard"
    )
    parser.add_argument("--log-level", default="WARNING", help="Corral's log level")
    parser.add_argument(
        "--database-server",
        "--database-url",
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
