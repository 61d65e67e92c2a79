"""Chaos benchmark: does Corral keep its promises (DESIGN §4, §5, §8, §11) under faults?

A black-box run against real processes on loopback:

- its own Postgres cluster (initdb + pg_ctl under /usr/lib/postgresql/*/bin, run as the
  `postgres` user, a temporary data directory, a free port), migrated with `corral migrate`;
- one standalone simulator (`corral simulator`) and `--replicas` Corral processes
  (`corral serve`) sharing the database, each running the reconciler;
- `--threads` client tasks sending random creates, starts, hibernates, shutdowns, restarts,
  resizes (PATCH tier), gets and deletes for `--seconds`, across three teams, under an org
  limit of `--org-limit` (the simulator's `concurrent_vm_limit` and Corral's plan);
- the simulator failing fork, start, hibernate, shutdown, delete and specs: `--error-rate` 503s,
  `--timeout-rate` hangs of `--hang-seconds` (Corral's per-attempt timeout is
  `--attempt-timeout`) and `--lose-rate` answers lost after the work was done;
- the reconcile leader SIGKILLed at `--kill-replica-at` s and replaced by a fresh replica; the
  database stopped at `--restart-db-at` s for `--db-down-seconds` and started again;
- then faults off and `--quiet-seconds` of quiet (at least two reconcile periods), after which
  every sandbox must have converged with the upstream.

With `--simulated-days N` the shared clock also moves through `POST /v1/admin/clock/advance`
while traffic runs (one step a second), so VMs auto-hibernate, a few hibernated VMs are woken by
traffic (`POST /_simulator/vms/{id}/wake`), team c's monthly budget runs out and rolls over,
and the price book gets a new version half-way (same credits per hour, another USD price per
credit, so credits stay comparable with the upstream's bill). Traffic leaves alone a VM this
bench is deleting at that moment (`wakes.skipped_deleting` counts them): no upstream endpoint
tells whether one VM is running, so a wake landing between a delete's check and its DELETE is
billed upstream and seen by no control plane; the figures measure what Corral can know.

Measured: requests by status and by verb x status, p50/p99 latency per verb, the most VMs
running upstream at once (sampled every 200 ms) against the org limit, sandboxes not converged
after the quiet, VMs whose billed minutes differ from the simulator's ledger, total credits
Corral vs upstream, and sandboxes whose own GET shows another total than their cost statement
(compared where both are fixed: every interval closed). Billed minutes of still-open intervals
and stretches are counted on both sides up to the same instant (the simulator's clock after the
snapshot). Prints one JSON object
and a table; exits 1 when a target fails, 2 when the scenario could not be set up.

    .venv/bin/python bench/chaos.py [--seconds 40] [--replicas 2] [--seed 1] [--json-only]
    .venv/bin/python bench/chaos.py --smoke --json-only    # fixed seed, under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import processes
from tests.pgcluster import Cluster, cluster

ROOT = processes.ROOT

SIM_KEY = "chaos-simulator-key"
ADMIN_KEY = "chaos-admin-key-" + "0123456789abcdef" * 2
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TEAMS = ("chaos-a", "chaos-b", "chaos-c")
BUDGET_TEAM = "chaos-c"
FAULTED = ("fork", "start", "hibernate", "shutdown", "delete", "specs")
TIERS = ("Pico", "Nano", "Micro", "Small")
VERBS = ("create", "start", "hibernate", "shutdown", "restart", "resize", "get", "delete")
WEIGHTS = (18, 16, 12, 8, 8, 10, 18, 10)
# A team with this many sandboxes not deleted gets deletes instead of creates.
MAX_POOL = 20
# Corral states and the upstream VM states they agree with; "absent" is no VM at all.
AGREES: dict[str, set[str]] = {
    "running": {"running"},
    "hibernated": {"hibernated"},
    # A fork that never ran is `created` upstream: stopped and billing nothing, like shutdown.
    "shutdown": {"shutdown", "created"},
    "deleted": {"deleted", "absent"},
    "failed": {"deleted", "absent"},
    "starting": set(),
    "unknown": set(),
}
MICROS_PER_MINUTE = 60_000_000
SHOW = 5
SCENARIO_KEYS = (
    "replicas", "threads", "seconds", "quiet_seconds", "org_limit", "error_rate",
    "timeout_rate", "lose_rate", "hang_seconds", "attempt_timeout", "upstream_deadline",
    "kill_replica_at", "restart_db_at", "db_down_seconds", "reconcile_interval",
    "simulated_days", "seed", "smoke",
)  # fmt: skip

SMOKE = {
    "replicas": 2,
    "threads": 4,
    "seconds": 10.0,
    "quiet_seconds": 12.0,
    "reconcile_interval": 3.0,
    "kill_replica_at": 3.0,
    "restart_db_at": 6.0,
    "db_down_seconds": 2.0,
    "error_rate": 0.05,
    "timeout_rate": 0.02,
    "lose_rate": 0.05,
    "hang_seconds": 2.0,
    # A reservation lasts 2 x deadline + 5 s: one its replica took down with it must lapse
    # within the quiet period.
    "upstream_deadline": 4.0,
    "seed": 7,
    "simulated_days": 0.0,
}


class SetupError(Exception):
    """The scenario could not be set up; nothing was measured."""


def log(args: argparse.Namespace, message: str) -> None:
    if not args.json_only:
        print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the database ---------------------------------------------------------------------------


def migrate(url: str) -> None:
    done = subprocess.run(
        [processes.CORRAL, "migrate"],
        env={**os.environ, "CORRAL_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise SetupError(f"corral migrate failed:\n{done.stderr[-3000:]}")


# --- processes ------------------------------------------------------------------------------


@dataclass
class Replica:
    name: str
    process: processes.Process


def enter_parallel(stack: ExitStack, managers: list[AbstractContextManager[Any]]) -> list[Any]:
    """Enter context managers side by side (each spawn waits for readiness), all owned by
    `stack`; if one fails the others are still closed by the stack."""
    with ThreadPoolExecutor(max_workers=len(managers)) as pool:
        futures = [pool.submit(m.__enter__) for m in managers]
    entered: list[Any] = []
    error: BaseException | None = None
    for manager, future in zip(managers, futures, strict=True):
        if future.exception() is None:
            stack.push(manager.__exit__)
            entered.append(future.result())
        else:
            error = error or future.exception()
    if error is not None:
        raise error
    return entered


# --- measurement ----------------------------------------------------------------------------


@dataclass
class Stats:
    t0: float = 0.0
    by_status: Counter[str] = field(default_factory=Counter)
    by_verb: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    durations: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors_by_second: dict[int, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    answers_500: list[dict[str, Any]] = field(default_factory=list)
    # Request id -> what the client saw, to read a sandbox's events against.
    outcomes: dict[str, str] = field(default_factory=dict)
    # Sandbox id -> every request this run sent about it, as the client saw them.
    history: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    seq: int = 0

    def request_id(self) -> str:
        self.seq += 1
        return f"chaos-{self.seq:06d}"

    def record(
        self, verb: str, status: str, seconds: float, started: float, evidence: dict[str, Any]
    ) -> None:
        self.by_status[status] += 1
        rel = started - self.t0 if self.t0 else 0.0
        seen = f"{evidence['request_id']} {verb} -> {status} at t={rel:.2f}s ({seconds:.2f}s)"
        self.outcomes[evidence["request_id"]] = seen
        if evidence.get("sandbox"):
            self.history[evidence["sandbox"]].append(seen)
        self.by_verb[verb][status] += 1
        self.durations[verb].append(seconds)
        if not status.isdigit() or int(status) >= 500:
            self.errors_by_second[int(started - self.t0)][status] += 1
        if status == "500" and len(self.answers_500) < 20:
            self.answers_500.append({"verb": verb, **evidence})


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def billed_minutes(started: datetime, ended: datetime) -> int:
    micros = max(0, (ended - started) // timedelta(microseconds=1))
    return -(-micros // MICROS_PER_MINUTE)


# --- the run --------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace, pg: Cluster, stack: ExitStack, logs: Path):
        self.args = args
        self.pg = pg
        self.stack = stack
        self.logs = logs
        self.rng = random.Random(args.seed)
        self.stats = Stats()
        self.sim: processes.Process | None = None
        self.live: list[Replica] = []
        self.all_replicas: list[Replica] = []
        self.replica_count = 0
        self.keys: dict[str, dict[str, str]] = {}
        # Per team: sandbox id -> the last state seen for it.
        self.known: dict[str, dict[str, str]] = {team: {} for team in TEAMS}
        self.stop_traffic = asyncio.Event()
        self.stop_sampling = asyncio.Event()
        self.max_running = 0
        self.max_running_at: float | None = None
        self.max_running_ids: list[str] = []
        self.samples = 0
        self.timeline: list[dict[str, Any]] = []
        self.clock_info: dict[str, Any] = {}
        self.wakes: Counter[str] = Counter()
        # What traffic must not wake: the upstream ids of sandboxes with a delete in flight,
        # learnt from the sandboxes Corral's answers carry.
        self.upstream_ids: dict[str, str] = {}
        self.deleting: Counter[str] = Counter()
        self.metrics: dict[str, dict[str, float]] = {}
        self.http: httpx.AsyncClient

    # -- plumbing --

    def mark(self, event: str, **detail: Any) -> None:
        at = round(time.monotonic() - self.stats.t0, 2) if self.stats.t0 else None
        self.timeline.append({"t": at, "event": event, **detail})
        log(self.args, f"t={at} {event} {detail if detail else ''}")

    def replica_settings(self, name: str) -> dict[str, str]:
        assert self.sim is not None
        return {
            "database_url": self.pg.url,
            "upstream_url": self.sim.url,
            "upstream_key": SIM_KEY,
            "admin_key": ADMIN_KEY,
            "replica": name,
            "reconcile_enabled": "true",
            "reconcile_interval": str(self.args.reconcile_interval),
            "upstream_timeout_seconds": str(self.args.attempt_timeout),
            "upstream_deadline_seconds": str(self.args.upstream_deadline),
            # The simulator's `/vm/running` is never stale here (no `running_staleness_seconds`),
            # so an absence can be trusted after a period rather than the production 90 s.
            "reconcile_sighting_grace_seconds": str(self.args.reconcile_interval),
        }

    def new_replica_manager(
        self, name: str | None = None
    ) -> tuple[str, AbstractContextManager[processes.Process]]:
        if name is None:
            self.replica_count += 1
            name = f"replica-{self.replica_count}"
        settings = self.replica_settings(name)
        return name, processes.corral(log_dir=self.logs, **settings)

    def base(self) -> str:
        return self.rng.choice(self.live).process.url

    def learn_upstream_ids(self, response: httpx.Response) -> None:
        try:
            answer = response.json()
        except ValueError:
            return
        items = answer.get("items", [answer]) if isinstance(answer, dict) else []
        for item in items:
            if isinstance(item, dict) and item.get("upstream_id") and item.get("id"):
                self.upstream_ids[str(item["upstream_id"])] = str(item["id"])

    def being_deleted(self, vm_id: str) -> bool:
        sandbox = self.upstream_ids.get(vm_id)
        return sandbox is not None and self.deleting[sandbox] > 0

    async def call(
        self,
        verb: str,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: Any = None,
        base: str | None = None,
    ) -> httpx.Response | None:
        """One request to a live replica, recorded; None when no answer came back."""
        url = (base or self.base()) + path
        request_id = self.stats.request_id()
        started = time.monotonic()
        status: str
        response: httpx.Response | None = None
        deleting = re.search(r"sbx_[a-z0-9]{12}", path) if method == "DELETE" else None
        if deleting:
            self.deleting[deleting.group(0)] += 1
        try:
            response = await self.http.request(
                method, url, json=body, headers={**headers, "X-Request-Id": request_id}
            )
            status = str(response.status_code)
        except httpx.TimeoutException:
            status = "client-timeout"
        except httpx.HTTPError as exc:
            status = f"transport:{type(exc).__name__}"
        finally:
            if deleting:
                self.deleting[deleting.group(0)] -= 1
        if response is not None and response.is_success:
            self.learn_upstream_ids(response)
        found = re.search(r"sbx_[a-z0-9]{12}", path)
        if found is None and response is not None and response.status_code == 201:
            with contextlib.suppress(ValueError, AttributeError):
                found = re.fullmatch(r"sbx_[a-z0-9]{12}", str(response.json().get("id")))
        evidence = {
            "request_id": request_id,
            "method": method,
            "url": url,
            "body": body,
            "sandbox": found.group(0) if found else None,
        }
        if response is not None and response.status_code == 500:
            evidence["answer"] = response.text[:1000]
        self.stats.record(verb, status, time.monotonic() - started, started, evidence)
        return response

    async def control(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """A setup or inspection call; these must succeed."""
        assert self.sim is not None
        base = self.sim.url if path.startswith("/_simulator") else self.live[0].process.url
        headers = {} if path.startswith("/_simulator") else ADMIN
        for attempt in range(20):
            try:
                response = await self.http.request(method, base + path, json=body, headers=headers)
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code < 500:
                return response
            await asyncio.sleep(min(2.0, 0.2 * (attempt + 1)))
            base = base if path.startswith("/_simulator") else self.base()
        raise SetupError(f"{method} {path} kept failing: {response and response.text[:500]}")

    # -- setup --

    async def setup(self) -> None:
        args = self.args
        config = await self.control(
            "PUT",
            "/_simulator/config",
            {
                "concurrent_vm_limit": args.org_limit,
                "timeout_seconds": args.hang_seconds,
                "seed": args.seed,
                "faults": {},
            },
        )
        if config.status_code != 200:
            raise SetupError(f"simulator config refused: {config.text[:500]}")
        plan = await self.control(
            "PUT", "/v1/admin/plan", {"plan": "enterprise", "limit": args.org_limit}
        )
        if plan.status_code != 200:
            raise SetupError(f"plan refused: {plan.text[:500]}")
        for team in TEAMS:
            created = await self.control(
                "POST", "/v1/admin/teams", {"id": team, "name": f"Chaos {team[-1]}"}
            )
            if created.status_code not in (201, 409):
                raise SetupError(f"team {team}: {created.status_code} {created.text[:500]}")
            issued = await self.control(
                "POST",
                f"/v1/admin/teams/{team}/keys",
                {"name": "chaos", "scopes": ["sandboxes:read", "sandboxes:write", "usage:read"]},
            )
            if issued.status_code != 201:
                raise SetupError(f"key for {team}: {issued.status_code} {issued.text[:500]}")
            self.keys[team] = {"Authorization": f"Bearer {issued.json()['key']}"}
        if args.simulated_days > 0:
            # Land a month boundary half-way through the traffic, so the budget month rolls
            # over whatever the date: jump there first (no VM exists yet).
            now = parse_time((await self.control("GET", "/_simulator/clock")).json()["now"])
            next_month = (now.replace(day=1) + timedelta(days=32)).replace(
                day=1, hour=0, minute=0, second=0, microsecond=0
            )
            lead = (next_month - now).total_seconds()
            jump = max(1.0, lead - args.simulated_days * 86400 / 2)
            self.clock_info["pre_advance_seconds"] = round(jump, 3)
            probe = await self.control("POST", "/v1/admin/clock/advance", {"seconds": jump})
            if probe.status_code == 404:
                raise SetupError(
                    "clock advance not available: POST /v1/admin/clock/advance answered 404 "
                    f"({probe.text[:300]})"
                )
            if probe.status_code >= 300:
                raise SetupError(f"clock advance refused: {probe.status_code} {probe.text[:300]}")
            budget = await self.control(
                "PATCH",
                f"/v1/admin/teams/{BUDGET_TEAM}",
                {"monthly_budget_credits": str(args.budget_credits), "budget_policy": "hibernate"},
            )
            if budget.status_code != 200:
                raise SetupError(f"budget refused: {budget.status_code} {budget.text[:300]}")

    async def faults(self, on: bool) -> None:
        args = self.args
        fault = {
            "error_rate": args.error_rate,
            "status": 503,
            "timeout_rate": args.timeout_rate,
            "lose_response_rate": args.lose_rate,
        }
        faults = dict.fromkeys(FAULTED, fault) if on else {}
        response = await self.control("PUT", "/_simulator/config", {"faults": faults})
        if response.status_code != 200:
            raise SetupError(f"faults refused: {response.text[:500]}")

    # -- traffic --

    def pick(self, team: str, verb: str, rng: random.Random) -> str | None:
        pool = self.known[team]
        alive = [s for s, state in pool.items() if state != "deleted"]
        if not alive:
            return None
        wanted = {
            "start": {"hibernated", "shutdown"},
            "hibernate": {"running"},
            "shutdown": {"running"},
            "resize": {"running"},
        }.get(verb)
        if wanted is not None and rng.random() < 0.8:
            preferred = [s for s in alive if pool[s] in wanted]
            if preferred:
                return rng.choice(preferred)
        # Now and then act on a deleted one too: a repeat must be a clean answer.
        if verb in ("get", "delete") and rng.random() < 0.05 and len(alive) < len(pool):
            return rng.choice([s for s, state in pool.items() if state == "deleted"])
        return rng.choice(alive)

    def learn(self, team: str, response: httpx.Response | None) -> None:
        if response is None or not response.headers.get("content-type", "").startswith(
            "application/json"
        ):
            return
        with contextlib.suppress(ValueError, KeyError, TypeError):
            body = response.json()
            if isinstance(body, dict) and str(body.get("id", "")).startswith("sbx_"):
                self.known[team][body["id"]] = body["state"]

    async def create(self, team: str, rng: random.Random) -> None:
        body = {
            "title": f"chaos-{rng.randrange(10**6)}",
            "tier": rng.choice(TIERS),
            "owner": f"user-{rng.randrange(4)}",
            "tags": ["chaos"],
        }
        headers = {**self.keys[team], "Idempotency-Key": uuid.UUID(int=rng.getrandbits(128)).hex}
        response = await self.call("create", "POST", "/v1/sandboxes", headers=headers, body=body)
        self.learn(team, response)
        # A client that got no clear answer tries again once, with the same idempotency key.
        if response is None or response.status_code in (502, 503, 504):
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            retry = await self.call("create", "POST", "/v1/sandboxes", headers=headers, body=body)
            self.learn(team, retry)

    async def act(self, rng: random.Random) -> None:
        team = rng.choice(TEAMS)
        verb = rng.choices(VERBS, WEIGHTS)[0]
        alive = sum(1 for state in self.known[team].values() if state != "deleted")
        if verb == "create" and alive >= MAX_POOL:
            verb = "delete"
        sandbox = None if verb == "create" else self.pick(team, verb, rng)
        if sandbox is None:
            verb = "create"
        headers = self.keys[team]
        path = f"/v1/sandboxes/{sandbox}"
        if verb == "create":
            await self.create(team, rng)
            return
        if verb in ("start", "hibernate", "shutdown", "restart"):
            response = await self.call(verb, "POST", f"{path}/{verb}", headers=headers)
        elif verb == "resize":
            body = {"tier": rng.choice(TIERS)}
            response = await self.call(verb, "PATCH", path, headers=headers, body=body)
        elif verb == "get":
            response = await self.call(verb, "GET", path, headers=headers)
        else:
            response = await self.call(verb, "DELETE", path, headers=headers)
        self.learn(team, response)

    async def worker(self, index: int) -> None:
        rng = random.Random(self.args.seed * 1000 + index)
        while not self.stop_traffic.is_set():
            await self.act(rng)
            await asyncio.sleep(rng.uniform(0.0, 0.05))

    async def list_all(self, verb: str | None = "list") -> list[dict[str, Any]]:
        """Every sandbox Corral has (admin view, every team), all pages."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(1000):
            path = "/v1/sandboxes?limit=200" + (f"&cursor={cursor}" if cursor else "")
            if verb is None:
                response = await self.control("GET", path)
            else:
                maybe = await self.call(verb, "GET", path, headers=ADMIN)
                if maybe is None or maybe.status_code != 200:
                    return []
                response = maybe
            page = response.json()
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return items

    async def refresher(self) -> None:
        """Learns the sandboxes a maybe-applied create left behind (a 503 whose row exists)."""
        while not self.stop_traffic.is_set():
            for item in await self.list_all():
                if item["team"] in self.known:
                    self.known[item["team"]][item["id"]] = item["state"]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_traffic.wait(), 2.0)

    # -- chaos --

    async def sampler(self) -> None:
        assert self.sim is not None
        url = self.sim.url + "/_simulator/vms?state=running"
        while not self.stop_sampling.is_set():
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                vms = (await self.http.get(url)).json()["vms"]
                self.samples += 1
                if len(vms) > self.max_running:
                    self.max_running = len(vms)
                    self.max_running_at = round(time.monotonic() - self.stats.t0, 2)
                    self.max_running_ids = [vm["id"] for vm in vms]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_sampling.wait(), 0.2)

    async def leader_name(self) -> str | None:
        for replica in self.live:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, IndexError):
                response = await self.http.get(
                    replica.process.url + "/v1/admin/reconciliation?limit=1&drift_limit=0",
                    headers=ADMIN,
                    timeout=3,
                )
                return str(response.json()["runs"][0]["replica"])
        return None

    async def scrape(self, replica: Replica) -> None:
        """The replica's upstream error counters, before it dies or is stopped."""
        with contextlib.suppress(httpx.HTTPError):
            url = replica.process.url + "/metrics"
            text = (await self.http.get(url, headers=ADMIN, timeout=5)).text
            counters: dict[str, float] = {}
            pattern = r"^corral_upstream_errors_total\{([^}]*)\} ([0-9.e+]+)$"
            for line in text.splitlines():
                found = re.match(pattern, line)
                if found:
                    labels = dict(re.findall(r'(\w+)="([^"]*)"', found.group(1)))
                    key = f"{labels.get('operation')}:{labels.get('status')}"
                    counters[key] = counters.get(key, 0) + float(found.group(2))
            self.metrics[replica.name] = counters

    async def kill_replica(self) -> None:
        leader = await self.leader_name()
        victim = next((r for r in self.live if r.name == leader), self.live[0])
        await self.scrape(victim)
        self.live.remove(victim)
        victim.process.kill()
        self.mark("replica killed", replica=victim.name, was_leader=victim.name == leader)
        # Like a supervisor, start the replacement again until it stays up (a replica that
        # starts while the database is down exits).
        name: str | None = None
        for attempt in range(1, 11):
            name, manager = self.new_replica_manager(name)
            try:
                process = await asyncio.to_thread(self.stack.enter_context, manager)
                break
            except (RuntimeError, TimeoutError) as exc:
                last = str(exc).strip().splitlines()[-1][:300]
                self.mark("replacement failed to start", replica=name, attempt=attempt, last=last)
                await asyncio.sleep(1.0)
        else:
            self.mark("no replacement", replica=name)
            return
        assert name is not None
        replica = Replica(name, process)
        self.live.append(replica)
        self.all_replicas.append(replica)
        self.mark("replacement ready", replica=name)

    async def restart_db(self) -> None:
        await asyncio.to_thread(self.pg.stop, "fast")
        self.mark("database stopped")
        await asyncio.sleep(self.args.db_down_seconds)
        await asyncio.to_thread(self.pg.start)
        self.mark("database started")

    async def chaos(self) -> None:
        events = [
            (self.args.kill_replica_at, self.kill_replica),
            (self.args.restart_db_at, self.restart_db),
        ]

        async def at_time(at: float, action: Callable[[], Awaitable[None]]) -> None:
            await asyncio.sleep(max(0.0, self.stats.t0 + at - time.monotonic()))
            await action()

        # Each on its own schedule: a slow replacement does not delay the database restart.
        await asyncio.gather(
            *(at_time(at, action) for at, action in events if 0 <= at < self.args.seconds)
        )

    async def advance_clock(self) -> None:
        """Moves the shared clock through Corral, wakes a few hibernated VMs, and changes the
        price book half-way."""
        args = self.args
        if args.simulated_days <= 0:
            return
        assert self.sim is not None
        steps = max(1, int(args.seconds))
        step = args.simulated_days * 86400 / steps
        rng = random.Random(args.seed + 99)
        before = (await self.control("GET", "/_simulator/clock")).json()["now"]
        for number in range(steps):
            await asyncio.sleep(
                max(
                    0.0,
                    self.stats.t0 + (number + 1) * args.seconds / (steps + 1) - time.monotonic(),
                )
            )
            response = await self.call(
                "clock_advance",
                "POST",
                "/v1/admin/clock/advance",
                headers=ADMIN,
                body={"seconds": step},
            )
            if response is None or response.status_code >= 300:
                continue
            hibernated = (await self.control("GET", "/_simulator/vms?state=hibernated")).json()
            corral_vms = [vm["id"] for vm in hibernated["vms"] if "corral" in vm["tags"]]
            for vm_id in rng.sample(corral_vms, min(args.wakes_per_step, len(corral_vms))):
                if self.being_deleted(vm_id):
                    self.wakes["skipped_deleting"] += 1
                    continue
                woken = await self.http.post(f"{self.sim.url}/_simulator/vms/{vm_id}/wake")
                self.wakes[str(woken.status_code)] += 1
            if number == steps // 2:
                await self.change_prices()
        after = (await self.control("GET", "/_simulator/clock")).json()["now"]
        self.clock_info |= {
            "simulator_clock_before": before,
            "simulator_clock_after": after,
            "steps": steps,
            "step_seconds": step,
            "month_rollover": before[:7] != after[:7],
        }

    async def change_prices(self) -> None:
        book = (await self.control("GET", "/v1/admin/prices")).json()["current"]
        body = {
            "credits_per_hour": book["credits_per_hour"],
            "credit_usd": str(
                (Decimal(str(book["credit_usd"])) * Decimal("1.1")).quantize(Decimal("0.0001"))
            ),
        }
        response = await self.call("prices", "PUT", "/v1/admin/prices", headers=ADMIN, body=body)
        self.mark("price book changed", status=response and response.status_code)

    # -- after the quiet --

    async def converged_count(self) -> int:
        assert self.sim is not None
        sandboxes = await self.list_all(verb=None)
        vms = {vm["id"]: vm for vm in (await self.control("GET", "/_simulator/vms")).json()["vms"]}
        return sum(1 for s in sandboxes if not agrees(s, vms.get(s["upstream_id"] or "")))

    async def watch_quiet(self, until: float) -> list[list[float]]:
        """The number of sandboxes not converged, every 2 s of the quiet period."""
        seen: list[list[float]] = []
        quiet_started = time.monotonic()
        while time.monotonic() < until:
            with contextlib.suppress(SetupError, httpx.HTTPError):
                count = await self.converged_count()
                seen.append([round(time.monotonic() - quiet_started, 1), count])
            await asyncio.sleep(max(0.0, min(2.0, until - time.monotonic())))
        return seen

    async def statements(self, sandboxes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        semaphore = asyncio.Semaphore(8)
        out: dict[str, dict[str, Any]] = {}

        async def one(sandbox_id: str) -> None:
            async with semaphore:
                response = await self.control("GET", f"/v1/sandboxes/{sandbox_id}/cost")
                if response.status_code == 200:
                    out[sandbox_id] = response.json()
                    # The sandbox's own view, read after: `reads_not_matching_statements`.
                    read = await self.control("GET", f"/v1/sandboxes/{sandbox_id}")
                    if read.status_code == 200:
                        out[sandbox_id]["read"] = read.json()

        await asyncio.gather(*(one(s["id"]) for s in sandboxes))
        return out

    async def evidence(self, sandbox: dict[str, Any] | None, vm: dict[str, Any] | None) -> Any:
        ids = [x for x in ((sandbox or {}).get("id"), (vm or {}).get("id")) if x]
        events: Any = None
        if sandbox is not None:
            response = await self.control("GET", f"/v1/sandboxes/{sandbox['id']}/events")
            events = response.json()[-30:] if response.status_code == 200 else response.text
        seen: dict[str, str] = {}
        if isinstance(events, list):
            for event in events:
                rid = event.get("request_id")
                if rid:
                    seen[rid] = self.stats.outcomes.get(rid, "not sent by this run")
        return {
            "client_saw": seen,
            "client_requests": self.stats.history.get((sandbox or {}).get("id", ""), [])[-25:],
            "corral": sandbox and {
                k: sandbox.get(k)
                for k in ("id", "upstream_id", "team", "state", "tier", "last_cause",
                          "state_changed_at", "last_started_at", "deleted_at")
            },
            "upstream": vm and {
                k: vm.get(k)
                for k in ("id", "state", "state_cause", "tier", "state_changed_at",
                          "session_started_at", "last_active_at", "billed_minutes", "tags")
            } | {"stretches": vm["ledger"]["stretches"]},
            "events": events,
            "log_lines": grep_logs(self.logs, ids),
        }  # fmt: skip


def agrees(sandbox: dict[str, Any], vm: dict[str, Any] | None) -> bool:
    upstream = vm["state"] if vm is not None else "absent"
    if upstream not in AGREES.get(sandbox["state"], set()):
        return False
    return not (sandbox["state"] == "running" and vm is not None and vm["tier"] != sandbox["tier"])


def why_not(sandbox: dict[str, Any], vm: dict[str, Any] | None) -> str:
    upstream = vm["state"] if vm is not None else "absent"
    if sandbox["state"] == "running" and vm is not None and vm["state"] == "running":
        return f"tier: corral {sandbox['tier']}, upstream {vm['tier']}"
    return f"state: corral {sandbox['state']}, upstream {upstream}"


def final_exception(exc: str) -> str:
    """The last exception line of a logged traceback (skipping SQLAlchemy's footers)."""
    skip = (
        "Traceback", "The above exception", "During handling", "(Background on this", "[SQL:",
        "[parameters:",
    )  # fmt: skip
    lines = [
        line for line in exc.splitlines() if line.strip() and not line.startswith((" ", *skip))
    ]
    # A multi-line SQL statement in SQLAlchemy's message is not the exception line.
    named = [line for line in lines if re.match(r"[A-Za-z_][\w.]*(Error|Exception)\b", line)]
    return (named or lines or [""])[-1][:300]


def log_records(logs: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(logs.glob("corral-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    yield path.name, json.loads(line)


def failure_causes(logs: Path) -> dict[str, Any]:
    """Unhandled request errors by final exception, and the replicas' other errors by message."""
    unhandled: Counter[str] = Counter()
    other: Counter[str] = Counter()
    for _, record in log_records(logs):
        if record.get("level") not in ("error", "critical"):
            continue
        if record.get("logger") == "uvicorn.error" and record.get("exc"):
            unhandled[final_exception(record["exc"])] += 1
        else:
            cause = final_exception(record.get("exc") or "")
            other[f"{record.get('logger')}: {record.get('msg', '')[:120]} {cause}".strip()] += 1
    return {"unhandled_in_requests": dict(unhandled.most_common()), "other_errors": dict(other)}


def cause_of_500(logs: Path, request_id: str) -> str | None:
    """The unhandled exception logged by the replica that answered this request, next to its
    access line (uvicorn logs it just after the access middleware has)."""
    by_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for name, record in log_records(logs):
        by_file[name].append(record)
    for records in by_file.values():
        for index, record in enumerate(records):
            if record.get("request_id") != request_id or record.get("logger") != "corral.access":
                continue
            after = records[index + 1 : index + 40]
            before = reversed(records[max(0, index - 40) : index])
            for near in (*after, *before):
                if near.get("logger") == "uvicorn.error" and near.get("exc"):
                    return final_exception(near["exc"])
    return None


def grep_logs(logs: Path, needles: list[str], limit: int = 10) -> list[str]:
    lines: list[str] = []
    if not needles:
        return lines
    for path in sorted(logs.glob("corral-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if any(n in line for n in needles):
                lines.append(f"{path.name}: {line[:600]}")
                if len(lines) >= limit:
                    return lines
    return lines


def comparable(statement: dict[str, Any]) -> bool:
    """A sandbox's GET, read after its cost statement, must show the statement's total where
    both are fixed: every interval closed, and the sandbox still stopped."""
    read = statement.get("read")
    if read is None or read.get("accrued") is None or read["state"] == "running":
        return False
    return all(line["ended_at"] is not None for line in statement["lines"])


def read_disagrees(statement: dict[str, Any]) -> bool:
    shown, total = statement["read"]["accrued"], statement["total"]
    return (int(shown["billed_minutes"]), Decimal(str(shown["credits"]))) != (
        int(total["billed_minutes"]),
        Decimal(str(total["credits"])),
    )


def corral_bill(statement: dict[str, Any] | None, at: datetime) -> tuple[int, Fraction, int]:
    """Billed minutes and credits of one cost statement up to `at`, and how many closed
    intervals' lines do not add up to the interval's own per-started-minute bill."""
    if statement is None:
        return 0, Fraction(0), 0
    by_interval: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for line in statement["lines"]:
        by_interval[line["interval_id"]].append(line)
    minutes, credits, inconsistent = 0, Fraction(0), 0
    for lines in by_interval.values():
        started = parse_time(lines[0]["started_at"])
        ended = lines[0]["ended_at"]
        counted = sum(int(line["billed_minutes"]) for line in lines)
        worth = sum(
            (Fraction(Decimal(str(line["credits_per_hour"]))) * int(line["billed_minutes"])
             for line in lines),
            Fraction(0),
        ) / 60  # fmt: skip
        if ended is not None:
            total = counted
            if counted != billed_minutes(started, parse_time(ended)):
                inconsistent += 1
        else:
            # Still open: count it up to the same instant as the upstream's open stretches.
            total = max(counted, billed_minutes(started, at))
            rate = Fraction(Decimal(str(lines[-1]["credits_per_hour"])))
            worth += rate * (total - counted) / 60
        minutes += total
        credits += worth
    return minutes, credits, inconsistent


def upstream_bill(vm: dict[str, Any], at: datetime) -> tuple[int, Fraction]:
    minutes, credits = 0, Fraction(0)
    for stretch in vm["ledger"]["stretches"]:
        if stretch["ended_at"] is not None:
            count = int(stretch["billed_minutes"])
        else:
            count = billed_minutes(parse_time(stretch["started_at"]), at)
        minutes += count
        credits += Fraction(int(stretch["credits_per_hour"]) * count, 60)
    return minutes, credits


async def scenario(args: argparse.Namespace, pg: Cluster, stack: ExitStack, logs: Path) -> Any:
    run = Run(args, pg, stack, logs)
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=3.0), limits=limits) as http:
        run.http = http
        log(args, "starting the simulator and the replicas")
        run.sim = stack.enter_context(processes.simulator(SIM_KEY, logs))
        managers = [run.new_replica_manager() for _ in range(args.replicas)]
        started = await asyncio.to_thread(enter_parallel, stack, [m for _, m in managers])
        for (name, _), process in zip(managers, started, strict=True):
            run.live.append(Replica(name, process))
        run.all_replicas = list(run.live)
        await run.setup()

        await run.faults(on=True)
        run.stats.t0 = time.monotonic()
        run.mark("traffic and faults on")
        sampler = asyncio.create_task(run.sampler())
        background = [
            asyncio.create_task(run.refresher()),
            asyncio.create_task(run.chaos()),
            asyncio.create_task(run.advance_clock()),
        ]
        workers = [asyncio.create_task(run.worker(i)) for i in range(args.threads)]
        await asyncio.sleep(args.seconds)
        run.stop_traffic.set()
        await run.faults(on=False)
        quiet_from = time.monotonic()
        run.mark("traffic stopped, faults off")
        await asyncio.gather(*workers, *background)
        run.mark("in-flight requests done")
        quiet = await run.watch_quiet(quiet_from + args.quiet_seconds)
        run.mark("quiet over")
        run.stop_sampling.set()
        await sampler

        for replica in run.live:
            await run.scrape(replica)
        vms = (await run.control("GET", "/_simulator/vms")).json()["vms"]
        sandboxes = await run.list_all(verb=None)
        statements = await run.statements(sandboxes)
        at = parse_time((await run.control("GET", "/_simulator/clock")).json()["now"])
        reconciliation = (
            await run.control("GET", "/v1/admin/reconciliation?limit=30&drift_limit=200")
        ).json()
        return await report(run, vms, sandboxes, statements, at, reconciliation, quiet)


async def report(
    run: Run,
    vms: list[dict[str, Any]],
    sandboxes: list[dict[str, Any]],
    statements: dict[str, dict[str, Any]],
    at: datetime,
    reconciliation: dict[str, Any],
    quiet: list[list[float]],
) -> dict[str, Any]:
    args, stats = run.args, run.stats
    vm_by_id = {vm["id"]: vm for vm in vms}
    claims: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sandbox in sandboxes:
        if sandbox["upstream_id"]:
            claims[sandbox["upstream_id"]].append(sandbox)

    unconverged: list[tuple[dict[str, Any] | None, dict[str, Any] | None, str]] = []
    for sandbox in sandboxes:
        vm = vm_by_id.get(sandbox["upstream_id"] or "")
        if not agrees(sandbox, vm):
            unconverged.append((sandbox, vm, why_not(sandbox, vm)))
    for upstream_id, owners in claims.items():
        if len(owners) > 1:
            for extra in owners[1:]:
                why = f"upstream VM {upstream_id} claimed by {len(owners)} sandboxes"
                unconverged.append((extra, vm_by_id.get(upstream_id), why))
    orphans: Counter[str] = Counter()
    for vm in vms:
        if vm["id"] in claims or vm["state"] == "deleted":
            continue
        if vm["state"] == "running":
            unconverged.append((None, vm, "running upstream, no sandbox has its upstream id"))
        else:
            orphans[vm["state"]] += 1

    minute_mismatches: list[tuple[dict[str, Any] | None, dict[str, Any] | None, int, int]] = []
    # Same minutes, other credits: minutes billed at another tier than the upstream's.
    credit_mismatches: list[tuple[dict[str, Any] | None, dict[str, Any], Fraction, Fraction]] = []
    corral_credits, upstream_credits, inconsistent = Fraction(0), Fraction(0), 0
    corral_minutes_total, upstream_minutes_total = 0, 0
    corral_by_vm: dict[str, tuple[int, Fraction]] = {}
    compared = [s for s in statements.values() if comparable(s)]
    reads_disagreeing = [s for s in compared if read_disagrees(s)]
    for sandbox in sandboxes:
        minutes, credits, bad = corral_bill(statements.get(sandbox["id"]), at)
        inconsistent += bad
        corral_credits += credits
        corral_minutes_total += minutes
        key = sandbox["upstream_id"] or f"none:{sandbox['id']}"
        had = corral_by_vm.get(key, (0, Fraction(0)))
        corral_by_vm[key] = (had[0] + minutes, had[1] + credits)
    for vm in vms:
        minutes, credits = upstream_bill(vm, at)
        upstream_credits += credits
        upstream_minutes_total += minutes
        ours, our_credits = corral_by_vm.get(vm["id"], (0, Fraction(0)))
        owner = claims.get(vm["id"], [None])[0]
        if ours != minutes:
            minute_mismatches.append((owner, vm, ours, minutes))
        elif our_credits != credits:
            credit_mismatches.append((owner, vm, our_credits, credits))
    for key, (minutes, _) in corral_by_vm.items():
        if key not in vm_by_id and minutes:
            sandbox = next(s for s in sandboxes if (s["upstream_id"] or f"none:{s['id']}") == key)
            minute_mismatches.append((sandbox, None, minutes, 0))

    # The worst first: the evidence shown is for the largest differences.
    minute_mismatches.sort(key=lambda m: -abs(m[2] - m[3]))
    error_pct = (
        float((corral_credits - upstream_credits) / upstream_credits * 100)
        if upstream_credits
        else 0.0
    )
    over_admission = max(0, run.max_running - args.org_limit)
    answers_500 = stats.by_status.get("500", 0)
    credit_tolerance = 0.1 if args.simulated_days > 0 else 0.0
    targets = {
        "no_500_answers": answers_500 == 0,
        "no_over_admission": over_admission == 0,
        "all_converged": not unconverged,
        "billed_minutes_match": not minute_mismatches,
        "credit_error_within_tolerance": round(abs(error_pct), 2) <= credit_tolerance,
        "reads_match_statements": not reads_disagreeing,
    }

    for item in stats.answers_500[:SHOW]:
        item["likely_cause"] = cause_of_500(run.logs, item["request_id"])
        item["log_lines"] = grep_logs(run.logs, [item["request_id"]], limit=4)
    offenders_unconverged = [
        {"why": why, **await run.evidence(s, v)} for s, v, why in unconverged[:SHOW]
    ]
    credit_mismatches.sort(key=lambda m: -abs(m[2] - m[3]))
    offenders_credits = [
        {
            "corral_credits": f"{float(ours):.6f}",
            "upstream_credits": f"{float(theirs):.6f}",
            **await run.evidence(s, v),
        }
        for s, v, ours, theirs in credit_mismatches[:SHOW]
    ]
    offenders_minutes = [
        {"corral_minutes": ours, "upstream_minutes": theirs, **await run.evidence(s, v)}
        for s, v, ours, theirs in minute_mismatches[:SHOW]
    ]
    latency = {
        verb: {
            "count": len(values),
            "p50_ms": round(percentile(values, 0.5) * 1000, 1),
            "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        }
        for verb, values in sorted(stats.durations.items())
    }
    runs = reconciliation.get("runs", [])
    drift_kinds: Counter[str] = Counter()
    for drift in reconciliation.get("drifts", []):
        drift_kinds[drift["kind"]] += 1
    return {
        "benchmark": "chaos",
        "scenario": {k: getattr(args, k) for k in SCENARIO_KEYS},
        "requests": {
            "total": sum(stats.by_status.values()),
            "by_status": dict(sorted(stats.by_status.items())),
            "by_verb": {v: dict(sorted(c.items())) for v, c in sorted(stats.by_verb.items())},
            "errors_by_second": {
                str(s): dict(c) for s, c in sorted(stats.errors_by_second.items())
            },
        },
        "latency": latency,
        "answers_500": answers_500,
        "first_500s": stats.answers_500[:SHOW],
        "replica_errors": failure_causes(run.logs),
        "admission": {
            "org_limit": args.org_limit,
            "max_running_upstream": run.max_running,
            "max_running_at_s": run.max_running_at,
            "over_admission": over_admission,
            "samples": run.samples,
            # Starts the upstream refused at its own concurrency limit: Corral tried to run
            # more than the org limit (counters of the replicas alive at the end, and of the
            # killed one just before it died).
            "upstream_errors_by_replica": run.metrics,
            "upstream_refused_at_its_limit": sum(
                count
                for counters in run.metrics.values()
                for key, count in counters.items()
                if key in ("start:429", "fork:429")
            ),
        },
        "convergence": {
            "corral_sandboxes": len(sandboxes),
            "corral_states": dict(Counter(s["state"] for s in sandboxes)),
            "upstream_vms": len(vms),
            "upstream_states": dict(Counter(vm["state"] for vm in vms)),
            "unconverged": len(unconverged),
            "unconverged_by_reason": dict(Counter(why for _, _, why in unconverged)),
            "orphan_vms_upstream": dict(orphans),
            "during_quiet": quiet,
        },
        "billing": {
            "at": at.isoformat(),
            "vms_with_billed_minute_mismatch": len(minute_mismatches),
            "vms_with_credit_mismatch_only": len(credit_mismatches),
            "corral_billed_minutes": corral_minutes_total,
            "upstream_billed_minutes": upstream_minutes_total,
            "corral_credits": f"{float(corral_credits):.6f}",
            "upstream_credits": f"{float(upstream_credits):.6f}",
            "credit_error_pct": round(error_pct, 4),
            "statement_lines_not_adding_up": inconsistent,
            "reads_not_matching_statements": [
                {"sandbox_id": s["sandbox_id"], "read": s["read"]["accrued"], "total": s["total"]}
                for s in reads_disagreeing[:SHOW]
            ],
            "reads_compared": len(compared),
        },
        "reconciler": {
            "runs_seen": len(runs),
            "last_runs": [
                {k: r.get(k) for k in ("replica", "started_at", "outcome", "error", "drift")}
                for r in runs[:8]
            ],
            "drift_kinds_recent": dict(drift_kinds),
        },
        "simulated_clock": run.clock_info,
        "wakes": dict(run.wakes),
        "timeline": run.timeline,
        "targets": targets,
        "credit_error_tolerance_pct": credit_tolerance,
        "passed": all(targets.values()),
        "offenders": {
            "unconverged": offenders_unconverged,
            "billed_minutes": offenders_minutes,
            "credits_only": offenders_credits,
        },
        "replicas": [
            {"name": r.name, "log": r.process.log.name, "alive_at_end": r in run.live}
            for r in run.all_replicas
        ],
        "log_dir": str(run.logs),
    }


def print_table(result: dict[str, Any]) -> None:
    requests = result["requests"]
    statuses = sorted({s for c in requests["by_verb"].values() for s in c})
    short = [s.replace("transport:", "t:") for s in statuses]
    header = "".join(f"{s[:14]:>15}" for s in short)
    print(f"\n{'verb':<14}{header}{'p50 ms':>9}{'p99 ms':>9}")
    for verb, counts in requests["by_verb"].items():
        lat = result["latency"].get(verb, {})
        cells = "".join(f"{counts.get(s, 0):>15}" for s in statuses)
        print(f"{verb:<14}{cells}{lat.get('p50_ms', 0):>9}{lat.get('p99_ms', 0):>9}")
    a, c, b = result["admission"], result["convergence"], result["billing"]
    print(f"\n{'measure':<44}{'value':>16}")
    rows = [
        ("requests", requests["total"]),
        ("answers 500", result["answers_500"]),
        ("max VMs running upstream / org limit", f"{a['max_running_upstream']} / {a['org_limit']}"),
        ("over-admission", a["over_admission"]),
        ("sandboxes (corral) / VMs (upstream)", f"{c['corral_sandboxes']} / {c['upstream_vms']}"),
        ("not converged after quiet", c["unconverged"]),
        ("VMs with billed-minute mismatch", b["vms_with_billed_minute_mismatch"]),
        ("billed minutes corral / upstream",
         f"{b['corral_billed_minutes']} / {b['upstream_billed_minutes']}"),
        ("credits corral", b["corral_credits"]),
        ("credits upstream", b["upstream_credits"]),
        ("credit error %", f"{b['credit_error_pct']:.4f}"),
    ]  # fmt: skip
    for name, value in rows:
        print(f"{name:<44}{value!s:>16}")
    print()
    for target, ok in result["targets"].items():
        print(f"{'PASS' if ok else 'FAIL'}  {target}")
    print(f"\nlogs: {result['log_dir']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--replicas", type=int, default=2)
    add("--threads", type=int, default=8, help="client tasks")
    add("--seconds", type=float, default=40.0, help="traffic with faults")
    add("--quiet-seconds", type=float, default=30.0, help="no faults, no traffic, then measure")
    add("--org-limit", type=int, default=12)
    add("--error-rate", type=float, default=0.15)
    add("--timeout-rate", type=float, default=0.05)
    add("--lose-rate", type=float, default=0.10)
    add("--hang-seconds", type=float, default=3.0, help="how long a simulated timeout hangs")
    add("--attempt-timeout", type=float, default=1.0, help="Corral's per-attempt timeout")
    add("--upstream-deadline", type=float, default=10.0, help="Corral's per-call deadline")
    add("--kill-replica-at", type=float, default=12.0, help="seconds; negative: never")
    add("--restart-db-at", type=float, default=24.0, help="seconds; negative: never")
    add("--db-down-seconds", type=float, default=3.0)
    add("--reconcile-interval", type=float, default=5.0)
    add("--simulated-days", type=float, default=0.0)
    add("--wakes-per-step", type=int, default=3)
    add("--budget-credits", type=Decimal, default=Decimal(100), help="team c, simulated days")
    add("--seed", type=int, default=1)
    add("--log-dir", type=Path, default=None, help="default: a new directory under /tmp")
    add("--json-only", action="store_true")
    add("--smoke", action="store_true", help="a short fixed-seed run for the test suite")
    args = parser.parse_args(argv)
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name, value)
    if args.replicas < 1 or args.threads < 1:
        parser.error("--replicas and --threads must be at least 1")
    if args.quiet_seconds < 2 * args.reconcile_interval + 1:
        parser.error("--quiet-seconds must cover at least two reconcile periods (plus 1 s)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs = args.log_dir or Path(tempfile.mkdtemp(prefix="corral-chaos-logs-"))
    logs.mkdir(parents=True, exist_ok=True)

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    began = time.monotonic()
    try:
        with cluster() as pg, ExitStack() as stack:
            log(args, f"postgres on 127.0.0.1:{pg.port}; logs in {logs}")
            migrate(pg.url)
            result = asyncio.run(scenario(args, pg, stack, logs))
            result["postgres_log_tail"] = (
                pg.logfile.read_text(errors="replace").splitlines()[-5:]
                if pg.logfile.exists()
                else []
            )
    except SetupError as exc:
        print(json.dumps({"benchmark": "chaos", "error": str(exc), "log_dir": str(logs)}))
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    result["wall_seconds"] = round(time.monotonic() - began, 1)
    print(json.dumps(result, indent=2, default=str))
    if not args.json_only:
        print_table(result)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
