"""Structural checks of the deployment artefacts that need no container engine or cluster.

Run by `.ci/validate-deploy` (which also runs hadolint and promtool). Each check prints one
line and the script exits non-zero if any failed. Checks:

- docker-compose.yml validates against the compose-spec JSON schema (deploy/schemas/), and
  has what the design promises: Postgres, a one-shot migrate that Corral waits for, Corral,
  and the monitoring and simulator profiles;
- the kustomize build (kustomize or `kubectl kustomize` when present, else the same
  resources assembled here) validates with kubernetes-validate --strict, and holds an API
  Deployment of >= 2 replicas, a migration Job, a Service, an HPA, a PodDisruptionBudget, a
  ServiceMonitor and a PrometheusRule whose groups equal deploy/prometheus/alerts.yml;
- the Deployment and the compose file set the secrets a replica on the real upstream needs
  (the browser-token secret, the metrics token) from secrets, never optional;
- every metric that the alert rules and the Grafana dashboard query is one Corral exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASE = ROOT / "deploy" / "kubernetes" / "base"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "corral-dashboard.json"
# Kinds that live outside any namespace (for the fallback assembly of the kustomize base).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}

failures: list[str] = []


def check(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except jsonschema.ValidationError as exc:
                failures.append(name)
                where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
                print(f"FAIL {name}: at {where}: {exc.message}")
            except Exception as exc:
                failures.append(name)
                print(f"FAIL {name}: {exc}")
            else:
                print(f"ok   {name}")

        return run

    return wrap


def exported_metric_names() -> set[str]:
    """Every series name Corral can expose: the registry's samples plus the scrape-time gauges."""
    from app import metrics

    names = set(metrics.GAUGE_NAMES)
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


_PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "by", "without", "on",
    "ignoring", "group_left", "group_right", "and", "or", "unless", "histogram_quantile",
    "offset", "bool", "topk", "bottomk", "abs", "clamp_min", "clamp_max", "delta", "deriv",
    "time", "vector", "scalar", "absent", "le", "humanizePercentage",
}  # fmt: skip


def metric_names_in(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that name series (label matchers and the grouping
    labels in by/on/without clauses are dropped first)."""
    stripped = re.sub(r"\{[^}]*\}", "", expr)
    stripped = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped
    )
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)
    stripped = re.sub(r'"[^"]*"', "", stripped)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", stripped))
    return {w for w in words if w not in _PROMQL_WORDS and not re.fullmatch(r"[0-9e]+", w)}


def kustomize_build() -> list[dict[str, Any]]:
    for command in (["kustomize", "build"], ["kubectl", "kustomize"]):
        if shutil.which(command[0]):
            out = subprocess.run(  # noqa: S603 (a fixed command on repo paths)
                [*command, str(BASE)], check=True, capture_output=True, text=True
            ).stdout
            print(f"     (built with {' '.join(command)})")
            return [d for d in yaml.safe_load_all(out) if d]
    print("     (no kustomize binary: assembling the base's resources here)")
    return assemble_base()


def assemble_base() -> list[dict[str, Any]]:
    """What `kustomize build` does with this base's features: namespace, labels, images."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kustomization.get("images", [])}
    extra_labels: dict[str, str] = {}
    for entry in kustomization.get("labels", []):
        extra_labels.update(entry["pairs"])
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((BASE / resource).read_text()):
            if not doc:
                continue
            meta = doc.setdefault("metadata", {})
            if doc["kind"] not in CLUSTER_SCOPED and "namespace" in kustomization:
                meta["namespace"] = kustomization["namespace"]
            meta.setdefault("labels", {}).update(extra_labels)
            for container in containers(doc):
                container["image"] = images.get(container["image"], container["image"])
            docs.append(doc)
    return docs


def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = doc.get("spec", {})
    template = spec.get("template", {}) if doc["kind"] in ("Deployment", "Job") else {}
    yield from template.get("spec", {}).get("containers", [])


@check("docker-compose.yml matches the compose-spec schema")
def compose_schema() -> None:
    schema = json.loads((ROOT / "deploy" / "schemas" / "compose-spec.json").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    jsonschema.validate(compose, schema)


@check("docker-compose.yml has postgres, migrate, corral and the optional profiles")
def compose_shape() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {"postgres", "migrate", "corral", "prometheus", "simulator"} <= set(services)
    waits = services["corral"]["depends_on"]["migrate"]["condition"]
    assert waits == "service_completed_successfully", waits
    assert services["migrate"]["command"] == ["migrate"]
    assert "monitoring" in services["prometheus"]["profiles"]
    assert "simulator" in services["simulator"]["profiles"]
    assert services["corral"]["environment"]["CORRAL_UPSTREAM"] == "codesandbox"
    for name in ("corral", "migrate"):
        assert "profiles" not in services[name], f"{name} must run by default"


BUILT: list[dict[str, Any]] = []


@check("kustomize build of deploy/kubernetes/base")
def build() -> None:
    BUILT.extend(kustomize_build())
    assert BUILT, "the build produced nothing"


@check("manifests validate with kubernetes-validate --strict")
def kubernetes_validate() -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump_all(BUILT, handle)
    result = subprocess.run(  # noqa: S603 (a fixed command on a temp file)
        [
            str(Path(sys.executable).with_name("kubernetes-validate")),
            "--strict",
            "--quiet",
            handle.name,
        ],
        capture_output=True,
        text=True,
    )
    Path(handle.name).unlink()
    output = (result.stdout + result.stderr).strip()
    # CRD kinds have no schema in kubernetes-validate: checked below instead.
    problems = [
        line for line in output.splitlines()
        if line and "Couldn't find schema for kind" not in line
    ]  # fmt: skip
    assert result.returncode == 0 and not problems, output


def one(kind: str) -> dict[str, Any]:
    found = [d for d in BUILT if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@check("the base holds the API Deployment (>= 2 replicas), Job, Service, HPA, PDB")
def kubernetes_shape() -> None:
    deployment = one("Deployment")
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    [container] = pod["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert one("Job")["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    service = one("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    hpa = one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


# What a replica on the real upstream refuses to start without (app/main.py).
PRODUCTION_SECRETS = ("CORRAL_BROWSER_TOKEN_SECRET", "CORRAL_METRICS_TOKEN")


@check("Deployment and compose set the browser-token secret and metrics token from secrets")
def production_secrets() -> None:
    [container] = one("Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    for name in PRODUCTION_SECRETS:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "corral-secrets" and not ref.get("optional"), name
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    corral = compose["services"]["corral"]["environment"]
    for name in PRODUCTION_SECRETS:
        # Required from the environment (`${VAR:?...}`), never written in the file.
        assert str(corral[name]).startswith("${" + name + ":?"), name
    monitor = one("ServiceMonitor")["spec"]["endpoints"][0]["authorization"]["credentials"]
    assert monitor["key"] == env["CORRAL_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]["key"]


@check("ServiceMonitor scrapes the Service's port at /metrics")
def service_monitor() -> None:
    monitor = one("ServiceMonitor")
    service = one("Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports and endpoint["path"] == "/metrics"


@check("PrometheusRule groups equal deploy/prometheus/alerts.yml")
def prometheus_rule() -> None:
    rule = one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    # The alerts the design asks for: plan headroom, budget exhaustion, drift, upstream errors.
    assert {
        "CorralOrgPlanHeadroomLow",
        "CorralBudgetExhausted",
        "CorralReconcileDrift",
        "CorralUpstreamErrors",
    } <= alerts, alerts


@check("alert rules query only metrics Corral exports")
def alert_metrics() -> None:
    exported = exported_metric_names()
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    unknown = {
        name for g in groups for r in g["rules"] for name in metric_names_in(str(r["expr"]))
    } - exported
    assert not unknown, f"unknown metrics: {sorted(unknown)}"


@check("Grafana dashboard parses and queries only metrics Corral exports")
def dashboard() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] and board["panels"]
    exported = exported_metric_names()
    used: set[str] = set()
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            used |= metric_names_in(target["expr"])
    unknown = used - exported
    assert not unknown, f"unknown metrics: {sorted(unknown)}"
    assert {"corral_org_plan_headroom", "corral_budget_remaining_credits"} <= used
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"


@check("PrometheusRule groups written out for promtool")
def export_rules() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    if target is not None:
        target.write_text(yaml.safe_dump(one("PrometheusRule")["spec"]))


def main() -> int:
    for run in (
        compose_schema,
        compose_shape,
        build,
        kubernetes_validate,
        kubernetes_shape,
        production_secrets,
        service_monitor,
        prometheus_rule,
        alert_metrics,
        dashboard,
        export_rules,
    ):
        run()
    if failures:
        print(f"{len(failures)} deployment check(s) failed: {', '.join(failures)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
