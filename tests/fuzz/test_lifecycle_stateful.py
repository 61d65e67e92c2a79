"""A Hypothesis state machine over the sandbox lifecycle, on a served Corral (real Postgres,
the simulator behind): random verbs on random sandboxes by four callers, two owner-bound keys
in each of two teams, checked against a model of what each caller may see and do.

The model (DESIGN §3, README "Sandbox states"): a create starts the sandbox (`running`);
hibernate and shutdown stop a running one and answer a stopped one as it is; start, restart
and a session mint leave it `running`; a resize keeps the state; a delete is final, and every
verb on a deleted sandbox is a 409 problem. Another team's or another owner's sandbox is a 404.
After every step each caller's list is exactly its model, and no answer is a 5xx."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.fuzz.conftest import api, make_key, make_team, reset_plan

OWNERS = ("alice@corp", "bob@corp")
TIERS = ("Pico", "Nano", "Micro")
STOPPED = {"hibernated", "shutdown"}


@dataclass
class Caller:
    team: str
    owner: str
    headers: dict[str, str]


@dataclass
class Modelled:
    id: str
    team: str
    owner: str
    state: str
    tier: str


def machine(base_url: str) -> type[RuleBasedStateMachine]:
    class Lifecycle(RuleBasedStateMachine):
        sandboxes = Bundle("sandboxes")

        def __init__(self) -> None:
            super().__init__()
            self.http = api(base_url)
            reset_plan(self.http)
            self.callers: list[Caller] = []
            for side in ("a", "b"):
                team = f"life-{side}-{uuid.uuid4().hex[:8]}"
                make_team(self.http, team)
                for owner in OWNERS:
                    _, headers = make_key(self.http, team, owner=owner)
                    self.callers.append(Caller(team, owner, headers))
            self.model: dict[str, Modelled] = {}

        def teardown(self) -> None:
            # Free the org's slots for the next example: shut down what still runs.
            for sandbox in self.model.values():
                if sandbox.state == "running":
                    owner = next(c for c in self.callers if self.sees(c, sandbox))
                    self.http.post(f"/v1/sandboxes/{sandbox.id}/shutdown", headers=owner.headers)
            self.http.close()

        # --- helpers ---------------------------------------------------------------------

        def call(self, caller: Caller, method: str, path: str, **kwargs: Any) -> httpx.Response:
            response = self.http.request(method, path, headers=caller.headers, **kwargs)
            assert response.status_code < 500, f"{method} {path}: {response.text}"
            if response.status_code >= 400:
                assert response.headers["content-type"] == "application/problem+json"
            return response

        def sees(self, caller: Caller, sandbox: Modelled) -> bool:
            return (caller.team, caller.owner) == (sandbox.team, sandbox.owner)

        def expect(
            self, response: httpx.Response, caller: Caller, sandbox: Modelled, state: str | None
        ) -> None:
            """`state`: what the verb leaves (None: a 409, the sandbox unchanged)."""
            if not self.sees(caller, sandbox):
                assert response.status_code == 404, response.text
                assert response.json()["type"].endswith("/sandbox-not-found")
                return
            if state is None:
                assert response.status_code == 409, response.text
                return
            assert response.status_code in (200, 201), response.text
            body = response.json()
            if "state" in body:
                assert body["state"] == state, (body, sandbox)
            sandbox.state = state

        # --- rules -----------------------------------------------------------------------

        @rule(target=sandboxes, who=st.integers(0, 3), tier=st.sampled_from(TIERS))
        def create(self, who: int, tier: str) -> str:
            caller = self.callers[who]
            response = self.call(caller, "POST", "/v1/sandboxes", json={"tier": tier})
            assert response.status_code == 201, response.text
            body = response.json()
            assert (body["team"], body["owner"], body["state"]) == (
                caller.team,
                caller.owner,
                "running",
            )
            self.model[body["id"]] = Modelled(
                body["id"], caller.team, caller.owner, "running", tier
            )
            sandbox_id: str = body["id"]
            return sandbox_id

        @rule(
            sandbox_id=sandboxes,
            who=st.integers(0, 3),
            verb=st.sampled_from(["start", "hibernate", "shutdown", "restart"]),
        )
        def lifecycle_verb(self, sandbox_id: str, who: int, verb: str) -> None:
            caller, sandbox = self.callers[who], self.model[sandbox_id]
            response = self.call(caller, "POST", f"/v1/sandboxes/{sandbox_id}/{verb}")
            if sandbox.state == "deleted":
                after = None
            elif verb in ("hibernate", "shutdown"):
                after = sandbox.state if sandbox.state in STOPPED else verb_state(verb)
            else:
                after = "running"
            self.expect(response, caller, sandbox, after)

        @rule(sandbox_id=sandboxes, who=st.integers(0, 3), tier=st.sampled_from(TIERS))
        def resize(self, sandbox_id: str, who: int, tier: str) -> None:
            caller, sandbox = self.callers[who], self.model[sandbox_id]
            response = self.call(
                caller, "PATCH", f"/v1/sandboxes/{sandbox_id}", json={"tier": tier}
            )
            after = None if sandbox.state == "deleted" else sandbox.state
            self.expect(response, caller, sandbox, after)
            if response.status_code == 200:
                assert response.json()["tier"] == tier
                sandbox.tier = tier

        # Deleted sandboxes stay in the bundle: every later verb on one must be a 409.
        @rule(sandbox_id=sandboxes, who=st.integers(0, 3))
        def delete(self, sandbox_id: str, who: int) -> None:
            caller, sandbox = self.callers[who], self.model[sandbox_id]
            response = self.call(caller, "DELETE", f"/v1/sandboxes/{sandbox_id}")
            # A delete is idempotent: a deleted sandbox answers 200 as it is.
            self.expect(response, caller, sandbox, "deleted")

        @rule(sandbox_id=sandboxes, who=st.integers(0, 3))
        def get(self, sandbox_id: str, who: int) -> None:
            caller, sandbox = self.callers[who], self.model[sandbox_id]
            response = self.call(caller, "GET", f"/v1/sandboxes/{sandbox_id}")
            self.expect(response, caller, sandbox, sandbox.state)
            if response.status_code == 200:
                assert response.json()["tier"] == sandbox.tier

        @rule(sandbox_id=sandboxes, who=st.integers(0, 3))
        def mint_session(self, sandbox_id: str, who: int) -> None:
            caller, sandbox = self.callers[who], self.model[sandbox_id]
            response = self.call(
                caller,
                "POST",
                f"/v1/sandboxes/{sandbox_id}/sessions",
                json={"user": caller.owner, "permission": "write"},
            )
            self.expect(
                response, caller, sandbox, None if sandbox.state == "deleted" else "running"
            )

        # --- invariants ------------------------------------------------------------------

        @invariant()
        def each_caller_lists_its_model(self) -> None:
            for caller in self.callers:
                response = self.call(caller, "GET", "/v1/sandboxes", params={"limit": 200})
                assert response.status_code == 200, response.text
                listed = {item["id"]: item["state"] for item in response.json()["items"]}
                modelled = {s.id: s.state for s in self.model.values() if self.sees(caller, s)}
                assert listed == modelled

    return Lifecycle


def verb_state(verb: str) -> str:
    return {"hibernate": "hibernated", "shutdown": "shutdown"}[verb]


def test_lifecycle_matches_the_model(served: str) -> None:
    run_state_machine_as_test(
        machine(served),
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
