"""Schemathesis over the served OpenAPI of every route, as an admin and as a team.

Every operation gets a bounded number of generated requests (valid and invalid), some of
whose path ids are those of real sandboxes, teams and keys. Each answer must be documented
(status, content type, body schema), never a 5xx, and in the route's error format: RFC 9457
problem+json on the native API, the upstream's `{"success": false, "errors": [...]}` under
/csb (the SDK reads `errors[0]`; DESIGN §7)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import checks as st_checks
from schemathesis.core.failures import AcceptedNegativeData

from app.main import create_app
from app.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.database import drop, recreate
from tests.fuzz.conftest import ADMIN, Tenant, api, make_key, reset_plan, serving, tenant

EXAMPLES = 12
PROBLEM_FIELDS = {"type", "title", "status", "detail"}

CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.response_headers_conformance,
    st_checks.negative_data_rejection,
]


def error_format(ctx: Any, response: Any, case: Any) -> None:
    """Each error in the format its part of the API promises."""
    if response.status_code < 400:
        return
    media = response.headers.get("content-type", [""])[0].split(";")[0].strip()
    body = response.json()
    if case.path.startswith("/csb"):
        assert media == "application/json", f"a facade error is {media}"
        assert body.get("success") is False, body
        errors = body.get("errors")
        assert isinstance(errors, list) and errors and isinstance(errors[0], str), body
    else:
        assert media == "application/problem+json", f"a native error is {media}"
        assert body.keys() >= PROBLEM_FIELDS, body
        assert body["status"] == response.status_code, body


class Seeds:
    """Path ids that exist, so generated requests reach real records some of the time; filled
    by a fixture before the first request (hooks run while Hypothesis generates)."""

    def __init__(self) -> None:
        self.values: dict[str, list[str]] = {}

    def fill(self, tenants: list[Tenant], spare_key_id: str) -> None:
        self.values = {
            "sandbox_id": [s["id"] for t in tenants for s in t.sandboxes],
            "upstream_id": [s["upstream_id"] for t in tenants for s in t.sandboxes],
            "team": [t.team for t in tenants],
            "key_id": [spare_key_id],
        }

    def path_parameters(
        self, generated: dict[str, Any] | None
    ) -> st.SearchStrategy[dict[str, Any] | None]:
        if not generated:
            return st.just(generated)
        choices = []
        for name, value in generated.items():
            seeded = self.values.get(name, [])
            choices.append(st.sampled_from([value, *seeded]).map(lambda v, n=name: (n, v)))
        return st.tuples(*choices).map(dict)


def openapi() -> dict[str, Any]:
    """The OpenAPI document Corral serves (`test_the_served_schema_is_the_one_fuzzed`)."""
    app = create_app(
        Settings(database_url="postgresql://unused@127.0.0.1/unused", admin_key=ADMIN_KEY)
    )
    document: dict[str, Any] = app.openapi()
    return document


def _repeats_a_scalar(document: dict[str, Any], case: Any) -> bool:
    """Whether the case repeats a query parameter that takes one value. Starlette, as most
    servers, reads the last of `?user=a&user=b`; that is not input Corral fails to check."""
    operation = document["paths"][case.path][case.method.lower()]
    takes_many = {
        p["name"] for p in operation.get("parameters", []) if "array" in json.dumps(p["schema"])
    }
    return any(
        isinstance(value, list) and name not in takes_many
        for name, value in (case.query or {}).items()
    )


def fuzzed_schema(seeds: Seeds) -> Any:
    document = openapi()
    loaded = schemathesis.openapi.from_dict(document)

    @loaded.hook
    def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
        return not (isinstance(failure, AcceptedNegativeData) and _repeats_a_scalar(document, case))

    @loaded.hook
    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
        return seeds.path_parameters(path_parameters)

    return loaded


# One schema per caller, each with its own records (and Corral): the admin's calls may delete
# its teams, revoke its keys and delete its sandboxes, which must not take the team run's away.
ADMIN_SEEDS, TEAM_SEEDS = Seeds(), Seeds()
admin_schema = fuzzed_schema(ADMIN_SEEDS)
team_schema = fuzzed_schema(TEAM_SEEDS)


def seeded(served: str, seeds: Seeds, prefix: str) -> Tenant:
    with api(served) as http:
        reset_plan(http)
        mine, theirs = tenant(http, f"{prefix}-a"), tenant(http, f"{prefix}-b")
        spare_key_id, _ = make_key(http, mine.team)
    seeds.fill([mine, theirs], spare_key_id)
    return mine


@pytest.fixture(scope="module")
async def admin_database() -> AsyncIterator[str]:
    name = f"corral_fuzz_admin_{os.getpid()}"
    url = await recreate(name)
    yield url
    await drop(name)


@pytest.fixture(scope="module")
def admin_served(admin_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Corral of the admin run's own: its calls change the plan, teams' guaranteed slots and
    prices, which would otherwise refuse the team run's work."""
    with serving(admin_database, tmp_path_factory.mktemp("admin-served")) as url:
        yield url


@pytest.fixture(scope="module")
def admin_seeded(admin_served: str) -> Tenant:
    return seeded(admin_served, ADMIN_SEEDS, "fz-admin")


@pytest.fixture(scope="module")
def team_seeded(served: str) -> Tenant:
    return seeded(served, TEAM_SEEDS, "fz-team")


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def test_the_served_schema_is_the_one_fuzzed(served: str) -> None:
    assert httpx.get(f"{served}/openapi.json").json() == openapi()


@admin_schema.parametrize()
@FUZZ_SETTINGS
def test_admin_key(case: Any, admin_served: str, admin_seeded: Tenant) -> None:
    case.call_and_validate(
        base_url=admin_served, headers=ADMIN, checks=CHECKS, additional_checks=[error_format]
    )


@team_schema.parametrize()
@FUZZ_SETTINGS
def test_team_key(case: Any, served: str, team_seeded: Tenant) -> None:
    case.call_and_validate(
        base_url=served,
        headers=team_seeded.headers,
        checks=CHECKS,
        additional_checks=[error_format],
    )
