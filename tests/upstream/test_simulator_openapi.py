"""Every kind of answer the simulator gives is checked against the upstream's OpenAPI spec.

A scenario walks every upstream path through its success and error statuses and records each
answer with the spec path it belongs to. An answer whose status the spec documents is validated
against that response schema ($refs resolved); an error status the spec does not document is
checked against the envelope the SDK relies on: `errors` a non-empty array of strings.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from tests.upstream.conftest import SimDriver

SPEC_PATH = Path(__file__).resolve().parent / "codesandbox-openapi.json"


@cache
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return loaded


def resolve(node: Any) -> Any:
    """Inline every local $ref (the spec has no recursive schemas)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = spec()
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolve(target)
        return {key: resolve(value) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(item) for item in node]
    return node


def response_schema(method: str, path: str, status: int) -> dict[str, Any] | None:
    responses = spec()["paths"][path][method.lower()]["responses"]
    documented = responses.get(str(status))
    if documented is None:
        return None
    schema: dict[str, Any] = resolve(documented["content"]["application/json"]["schema"])
    return schema


def check(method: str, path: str, response: httpx.Response) -> None:
    body = response.json()
    schema = response_schema(method, path, response.status_code)
    if schema is not None:
        OAS30Validator(schema, format_checker=oas30_format_checker).validate(body)
        if path != "/meta/info":
            assert body["success"] is True and body["errors"] == []
            assert isinstance(body["data"], dict)
        return
    assert response.status_code >= 400, (method, path, response.status_code)
    OAS30Validator(resolve(spec()["components"]["schemas"]["Response"])).validate(body)
    assert body["success"] is False
    assert body.get("data") is None
    assert body["errors"] and all(isinstance(e, str) for e in body["errors"])


class Recorder:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.seen: list[tuple[str, str, int]] = []

    async def call(
        self, method: str, template: str, status: int, json: Any = None, **ids: str
    ) -> httpx.Response:
        url = template.format(**ids)
        response = await self.client.request(method, url, json=json)
        assert response.status_code == status, (method, url, response.text)
        check(method, template, response)
        self.seen.append((method, template, status))
        return response


def test_the_spec_file_is_where_ci_has_it() -> None:
    assert spec()["openapi"].startswith("3.0")


async def test_every_simulator_answer_matches_the_spec(
    drive: SimDriver, sim_client: httpx.AsyncClient, sim_app: FastAPI
) -> None:
    rec = Recorder(sim_client)
    fork = await rec.call("POST", "/sandbox/{id}/fork", 201, {"title": "a"}, id="pcz35m")
    vm_id = fork.json()["data"]["id"]
    started_fork = await rec.call(
        "POST", "/sandbox/{id}/fork", 201, {"start_options": {"tier": "Nano"}}, id="pcz35m"
    )
    assert started_fork.json()["data"]["start_response"] is not None
    await rec.call("POST", "/sandbox/{id}/fork", 404, {}, id="nosuch")
    await rec.call("POST", "/sandbox/{id}/fork", 422, {"title": "x" * 300}, id="pcz35m")
    await rec.call("POST", "/sandbox", 201, {"files": {"a.txt": {"code": "hi"}}})
    await rec.call("POST", "/sandbox", 422, {})
    await rec.call("GET", "/sandbox", 200)
    await rec.call("GET", "/sandbox/{id}", 200, id=vm_id)
    await rec.call("GET", "/sandbox/{id}", 200, id="pcz35m")
    await rec.call("GET", "/sandbox/{id}", 404, id="zzzzzz")

    await rec.call("POST", "/vm/{id}/start", 200, {"tier": "Nano"}, id=vm_id)
    await rec.call("POST", "/vm/{id}/start", 422, {"tier": "Huge"}, id=vm_id)
    await rec.call("POST", "/vm/{id}/start", 404, {}, id="zzzzzz")
    await rec.call("PUT", "/vm/{id}/specs", 200, {"tier": "Small"}, id=vm_id)
    await rec.call("POST", "/vm/{id}/update_specs", 200, {"tier": "Micro"}, id=vm_id)
    await rec.call("PUT", "/vm/{id}/specs", 422, {"tier": "Huge"}, id=vm_id)
    await rec.call(
        "PUT", "/vm/{id}/hibernation_timeout", 200, {"hibernation_timeout_seconds": 60}, id=vm_id
    )
    await rec.call(
        "PUT", "/vm/{id}/hibernation_timeout", 422, {"hibernation_timeout_seconds": 0}, id=vm_id
    )
    await rec.call(
        "POST", "/vm/{id}/sessions", 200, {"session_id": "u1", "permission": "write"}, id=vm_id
    )
    await rec.call("POST", "/vm/{id}/sessions", 422, {"session_id": "u 1"}, id=vm_id)
    await rec.call("GET", "/vm/running", 200)
    await rec.call("GET", "/vm/clusters", 200)
    await rec.call("GET", "/meta/info", 200)

    token = await rec.call("POST", "/sandbox/{id}/tokens", 201, {"expires_at": None}, id=vm_id)
    token_id = token.json()["data"]["token"]["token_id"]
    await rec.call("GET", "/sandbox/{id}/tokens", 201, id=vm_id)
    await rec.call(
        "PATCH",
        "/sandbox/{id}/tokens/{token_id}",
        201,
        {"expires_at": "2030-01-01T00:00:00Z"},
        id=vm_id,
        token_id=token_id,
    )
    await rec.call(
        "PATCH", "/sandbox/{id}/tokens/{token_id}", 404, {}, id=vm_id, token_id="prv_nope"
    )
    await rec.call("DELETE", "/sandbox/{id}/tokens", 200, id=vm_id)
    await rec.call("POST", "/sandbox/{id}/tokens", 404, {}, id="zzzzzz")

    await rec.call("POST", "/vm/{id}/hibernate", 200, id=vm_id)
    await rec.call("POST", "/vm/{id}/hibernate", 404, id=vm_id)
    await rec.call("PUT", "/vm/{id}/specs", 404, {"tier": "Small"}, id=vm_id)
    await rec.call(
        "PUT", "/vm/{id}/hibernation_timeout", 404, {"hibernation_timeout_seconds": 9}, id=vm_id
    )
    await rec.call(
        "POST", "/vm/{id}/sessions", 404, {"session_id": "u1", "permission": "read"}, id=vm_id
    )
    await rec.call("POST", "/vm/{id}/start", 200, {}, id=vm_id)
    await rec.call("POST", "/vm/{id}/shutdown", 200, id=vm_id)
    await rec.call("POST", "/vm/{id}/shutdown", 404, id=vm_id)
    await rec.call("DELETE", "/vm/{id}", 200, id=vm_id)
    await rec.call("DELETE", "/vm/{id}", 404, id=vm_id)

    # Limits: concurrency, hourly sandboxes, hourly requests.
    await drive.configure(concurrent_vm_limit=1)
    other = await drive.fork()
    await rec.call("POST", "/vm/{id}/start", 429, {}, id=other)
    await rec.call("POST", "/sandbox/{id}/fork", 429, {"start_options": {}}, id="pcz35m")
    await drive.configure(concurrent_vm_limit=10, sandboxes_hourly_limit=0)
    await rec.call("POST", "/sandbox/{id}/fork", 429, {}, id="pcz35m")
    await rec.call("POST", "/sandbox", 429, {"files": {}})

    # Faults: an injected error, a timeout, and a lost answer.
    await drive.configure(
        sandboxes_hourly_limit=100,
        timeout_seconds=0.01,
        faults={
            "get": {"error_rate": 1, "status": 503},
            "list": {"timeout_rate": 1},
            "running": {"lose_response_rate": 1},
        },
    )
    await rec.call("GET", "/sandbox/{id}", 503, id="pcz35m")
    await rec.call("GET", "/sandbox", 504)
    await rec.call("GET", "/vm/running", 502)

    await drive.configure(faults={}, requests_hourly_limit=0)
    await rec.call("GET", "/vm/running", 429)

    # Auth and bad JSON, through a client without the key.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim_app), base_url="http://simulator"
    ) as anonymous:
        response = await anonymous.get("/vm/running")
        assert response.status_code == 401
        check("GET", "/vm/running", response)
    await drive.configure(requests_hourly_limit=1000)
    bad_json = await sim_client.post(
        "/vm/zzzzzz/start", content=b"[", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400
    check("POST", "/vm/{id}/start", bad_json)

    covered = {(m, p) for m, p, _ in rec.seen}
    simulated_paths = {
        ("POST", "/sandbox/{id}/fork"),
        ("POST", "/sandbox"),
        ("GET", "/sandbox"),
        ("GET", "/sandbox/{id}"),
        ("POST", "/vm/{id}/start"),
        ("POST", "/vm/{id}/hibernate"),
        ("POST", "/vm/{id}/shutdown"),
        ("DELETE", "/vm/{id}"),
        ("PUT", "/vm/{id}/specs"),
        ("POST", "/vm/{id}/update_specs"),
        ("PUT", "/vm/{id}/hibernation_timeout"),
        ("GET", "/vm/running"),
        ("GET", "/vm/clusters"),
        ("POST", "/vm/{id}/sessions"),
        ("POST", "/sandbox/{id}/tokens"),
        ("GET", "/sandbox/{id}/tokens"),
        ("PATCH", "/sandbox/{id}/tokens/{token_id}"),
        ("DELETE", "/sandbox/{id}/tokens"),
        ("GET", "/meta/info"),
    }
    assert simulated_paths <= covered


@pytest.mark.parametrize(
    ("params"), [{"page": "0"}, {"page_size": "x"}, {"order_by": "title"}, {"status": "stopped"}]
)
async def test_list_query_errors_use_the_envelope(
    sim_client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await sim_client.get("/sandbox", params=params)
    assert response.status_code == 422
    check("GET", "/sandbox", response)
