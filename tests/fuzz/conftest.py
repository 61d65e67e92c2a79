"""A served Corral for the fuzz and lifecycle tests: `corral serve` on loopback in front of a
standalone simulator, on a database of its own (the in-process tests truncate theirs after
each test, and a served process outlives a test). Schemathesis and Hypothesis' state
machines drive it synchronously over HTTP, so nothing here shares the tests' event loop."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import processes
from tests.conftest import ADMIN_KEY
from tests.database import drop, recreate

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TEAM_SCOPES = ["sandboxes:read", "sandboxes:write", "sessions:read", "sessions:write", "usage:read"]


@contextmanager
def serving(database_url: str, logs: Path) -> Iterator[str]:
    """The base URL of a Corral (admin key `ADMIN_KEY`) on a simulated upstream."""
    with (
        processes.simulator("fuzz-simulator-key", logs) as sim,
        processes.corral(
            database_url=database_url,
            upstream_url=sim.url,
            upstream_key="fuzz-simulator-key",
            admin_key=ADMIN_KEY,
            log_dir=logs,
            log_level="WARNING",
        ) as corral,
    ):
        # The simulator's own plan (10 VMs) would refuse before Corral's (250) does: the fuzzing
        # and the lifecycle model are about Corral, so give the upstream room.
        response = httpx.put(
            f"{sim.url}/_simulator/config",
            json={"concurrent_vm_limit": 1000},
            headers={"Authorization": "Bearer fuzz-simulator-key"},
        )
        assert response.status_code == 200, response.text
        yield corral.url


@pytest.fixture(scope="module")
async def served_database() -> AsyncIterator[str]:
    name = f"corral_fuzz_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = await recreate(name)
    yield url
    await drop(name)


@pytest.fixture(scope="module")
def served(served_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving(served_database, tmp_path_factory.mktemp("served")) as url:
        yield url


@dataclass
class Tenant:
    """A team with an all-scopes key and sandboxes in several states."""

    team: str
    headers: dict[str, str]
    key_id: str
    sandboxes: list[dict[str, Any]]


def api(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=30)


def make_team(http: httpx.Client, team: str) -> None:
    response = http.post("/v1/admin/teams", json={"id": team, "name": team}, headers=ADMIN)
    assert response.status_code == 201, response.text


def make_key(
    http: httpx.Client, team: str, *, scopes: list[str] | None = None, owner: str | None = None
) -> tuple[str, dict[str, str]]:
    body: dict[str, Any] = {"name": "fuzz", "scopes": scopes or TEAM_SCOPES}
    if owner is not None:
        body["owner"] = owner
    response = http.post(f"/v1/admin/teams/{team}/keys", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    issued = response.json()
    return issued["id"], {"Authorization": f"Bearer {issued['key']}"}


def reset_plan(http: httpx.Client) -> None:
    # An earlier fuzz run may have set a small plan; seeding needs room to start sandboxes.
    response = http.put("/v1/admin/plan", json={"plan": "scale"}, headers=ADMIN)
    assert response.status_code == 200, response.text


def tenant(http: httpx.Client, prefix: str) -> Tenant:
    """A fresh team (unique id) with a running, a hibernated and a shut-down sandbox."""
    team = f"{prefix}-{uuid.uuid4().hex[:8]}"
    make_team(http, team)
    key_id, headers = make_key(http, team)
    sandboxes = []
    for verb in (None, "hibernate", "shutdown"):
        response = http.post(
            "/v1/sandboxes", json={"title": f"seed {verb}", "owner": "seed@corp"}, headers=headers
        )
        assert response.status_code == 201, response.text
        created = response.json()
        if verb is not None:
            response = http.post(f"/v1/sandboxes/{created['id']}/{verb}", headers=headers)
            assert response.status_code == 200, response.text
            created = response.json()
        sandboxes.append(created)
    return Tenant(team=team, headers=headers, key_id=key_id, sandboxes=sandboxes)
