"""Prometheus metrics: every metric Corral exports, defined once here.

Label cardinality stays bounded: teams, tiers, operations, limits, route templates and status
codes only, never sandbox ids, owners or raw paths. Gauges that describe the database (running
sandboxes, burn rate, budget, plan headroom) are computed at scrape time by a collector, so
every replica reports the same truth; counters and histograms count what this replica did.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

UPSTREAM_MODE = Gauge(
    "corral_upstream_mode",
    "1 for the upstream Corral drives: simulator (built-in fake) or codesandbox (real).",
    ["mode"],
    registry=REGISTRY,
)
UPSTREAM_CIRCUIT = Gauge(
    "corral_upstream_circuit_state",
    "1 for the upstream circuit state this replica sees (closed, open, half-open), else 0.",
    ["state"],
    registry=REGISTRY,
)
ADMISSIONS = Counter(
    "corral_admissions_total",
    "Admission decisions for actions that make a VM run, by outcome and the limit that refused.",
    ["action", "outcome", "limit"],
    registry=REGISTRY,
)
UPSTREAM_LATENCY = Histogram(
    "corral_upstream_request_duration_seconds",
    "Upstream API request latency per attempt, by operation.",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "corral_upstream_errors_total",
    "Failed upstream attempts by operation and status (transport failures: status 'none').",
    ["operation", "status"],
    registry=REGISTRY,
)
RECONCILE_RUNS = Counter(
    "corral_reconcile_runs_total",
    "Reconcile periods run by this replica as leader, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "corral_reconcile_duration_seconds",
    "How long one reconcile period took.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
RECONCILE_DRIFT = Counter(
    "corral_reconcile_drift_total",
    "Drift found by the reconciler, by kind.",
    ["kind"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "corral_http_request_duration_seconds",
    "HTTP request latency by method, route template and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
SESSIONS_MINTED = Counter(
    "corral_sessions_minted_total",
    "Browser sessions minted, by who asked (api, browser, csb).",
    ["via"],
    registry=REGISTRY,
)
UPSTREAM_WORK_REFUSED = Counter(
    "corral_upstream_work_refused_total",
    "Forks, starts and sessions refused by the hourly meter, by limit and scope (team, key).",
    ["limit", "scope"],
    registry=REGISTRY,
)
BUDGET_HIBERNATIONS = Counter(
    "corral_budget_hibernations_total",
    "Sandboxes hibernated because their team's budget was exhausted.",
    ["team"],
    registry=REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "corral_webhook_attempts_total",
    "Webhook delivery attempts made by this replica, by event type and outcome (succeeded, "
    "retrying, failed, disabled).",
    ["type", "outcome"],
    registry=REGISTRY,
)
WEBHOOK_DELAY = Histogram(
    "corral_webhook_delivery_delay_seconds",
    "From an event to its successful delivery, on Corral's clock.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200),
    registry=REGISTRY,
)

# Scrape-time gauges (computed from the database by app/metrics_collector.py):
#   corral_sandboxes_running{team,tier}          running sandboxes
#   corral_sandboxes_starting{team}              admitted, upstream call in flight
#   corral_burn_rate_credits_per_hour{team}      summed rate of the team's running sandboxes
#   corral_budget_remaining_credits{team}        monthly budget minus month-to-date spend
#   corral_org_plan_limit                        the effective org limit
#   corral_org_plan_headroom                     effective limit minus live sandboxes
#   corral_unmanaged_sandboxes                   VMs running upstream that Corral did not start
#   corral_webhook_events_total{type}            events written to the outbox (a counter: its
#                                                family is corral_webhook_events)
#   corral_webhook_deliveries{status}            deliveries by status (pending is the backlog)
GAUGE_NAMES = (
    "corral_sandboxes_running",
    "corral_sandboxes_starting",
    "corral_burn_rate_credits_per_hour",
    "corral_budget_remaining_credits",
    "corral_org_plan_limit",
    "corral_org_plan_headroom",
    "corral_unmanaged_sandboxes",
    "corral_webhook_events",
    "corral_webhook_deliveries",
)


def observe_upstream(operation: str, status: int | None, seconds: float) -> None:
    """The upstream client's observer: latency of every attempt, and every failed one."""
    UPSTREAM_LATENCY.labels(operation).observe(seconds)
    if status is None or status >= 400:
        UPSTREAM_ERRORS.labels(operation, str(status) if status is not None else "none").inc()
