"""The chaos benchmark's smoke run (`bench/chaos.py --smoke`): two replicas on one database in
front of a faulty simulator, the reconcile leader killed and replaced, the database restarted.
Whatever happens, Corral answers no 500, never runs more VMs than the org limit, converges
every sandbox with the upstream once it is quiet, and bills the upstream's minutes per VM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAOS = ROOT / "bench" / "chaos.py"


def _short(value: Any, limit: int = 6000) -> str:
    text = json.dumps(value, indent=1, default=str)
    return text if len(text) <= limit else text[:limit] + " ..."


@pytest.fixture(scope="module")
def smoke() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(CHAOS), "--smoke", "--json-only"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.stdout.strip(), (
        f"no JSON from the benchmark (rc {done.returncode}):\n{done.stderr[-4000:]}"
    )
    result: dict[str, Any] = json.loads(done.stdout)
    assert "error" not in result, result["error"]
    return result


class TestChaosSmoke:
    def test_answers_no_500(self, smoke: dict[str, Any]) -> None:
        assert smoke["answers_500"] == 0, _short(
            {
                "by_verb": smoke["requests"]["by_verb"],
                "causes": smoke["replica_errors"],
                "first": smoke["first_500s"],
            }
        )

    def test_never_runs_more_vms_upstream_than_the_org_limit(self, smoke: dict[str, Any]) -> None:
        admission = smoke["admission"]
        assert admission["samples"] > 0
        assert admission["over_admission"] == 0, _short(admission)

    def test_every_sandbox_converges_with_the_upstream_after_the_quiet(
        self, smoke: dict[str, Any]
    ) -> None:
        convergence = smoke["convergence"]
        assert convergence["corral_sandboxes"] > 0, "the run created no sandbox"
        assert convergence["unconverged"] == 0, _short(
            {
                "by_reason": convergence["unconverged_by_reason"],
                "offenders": smoke["offenders"]["unconverged"],
            }
        )

    def test_bills_the_upstreams_minutes_for_every_vm(self, smoke: dict[str, Any]) -> None:
        billing = smoke["billing"]
        assert billing["upstream_billed_minutes"] > 0, "nothing ran upstream"
        assert billing["vms_with_billed_minute_mismatch"] == 0, _short(
            {"billing": billing, "offenders": smoke["offenders"]["billed_minutes"]}
        )
