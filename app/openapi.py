"""The OpenAPI document Corral serves: FastAPI's, with the errors every route really answers.

FastAPI documents a route's success and a 422 in its own validation shape, but Corral renders
every error one way (`app.errors`): RFC 9457 `application/problem+json`, and under /csb the
upstream's `{"success": false, "errors": [...]}` (`app.compat.responses`), because the SDK
reads `errors[0]`. So each operation's 422 is replaced by that shape, and the other errors it
can give are added: any 4xx (authentication, scope, tenancy, state, limits, bad input), 502
(the upstream failed) and 503 (the upstream or the database is away). A client generated from
the document, or a fuzzer checking answers against it, then expects what it gets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from app.compat.responses import PREFIX as FACADE_PREFIX
from app.errors import PROBLEM_JSON

PROBLEM: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "Validation errors: where and what, never the input.",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    # Refusals add `limit`, `scope`, `current`, `maximum`; state conflicts add `state`.
    "additionalProperties": True,
}
UPSTREAM_ERROR: dict[str, Any] = {
    "title": "UpstreamError",
    "type": "object",
    "required": ["success", "errors"],
    "properties": {
        "success": {"const": False},
        "errors": {
            "type": "array",
            "minItems": 1,
            "items": {"anyOf": [{"type": "string"}, {"type": "object"}]},
            "description": "A readable message first; a refusal adds its limit's details.",
        },
    },
}
_ERRORS = {
    "4XX": "The request was refused; the body says why.",
    "502": "The upstream failed (Retry-After).",
    "503": "The upstream or the database is unavailable (Retry-After).",
}
# FastAPI's own validation-error schemas, unused once every 422 is Corral's.
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def _error_response(description: str, *, facade: bool) -> dict[str, Any]:
    if facade:
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/UpstreamError"}}}
    else:
        content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {"description": description, "content": content}


def document_errors(document: dict[str, Any]) -> dict[str, Any]:
    """`document` (FastAPI's OpenAPI dict), its error answers documented, changed in place."""
    for path, operations in document.get("paths", {}).items():
        facade = path == FACADE_PREFIX or path.startswith(FACADE_PREFIX + "/")
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, description in _ERRORS.items():
                responses.setdefault(status, _error_response(description, facade=facade))
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM
    schemas["UpstreamError"] = UPSTREAM_ERROR
    return document


def install(app: FastAPI) -> None:
    """Serve `app`'s document with its errors documented (built once, on first request)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            # FastAPI's builder caches its dict on the app; it is edited once, in place.
            app.openapi_schema = document_errors(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
