"""The upstream's response envelope: `{"success", "errors", "data"}` around every answer.

Successes always carry a `data` object (the SDK throws on a missing or empty `data`); failures
carry `"data": null` and `errors` as a list of strings, because the SDK reads `errors[0]` as a
string for every status it does not special-case.
"""

import json
from typing import Any

from starlette.responses import Response

_JSON = "application/json"


def _dump(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def raw(payload: Any, status: int = 200) -> Response:
    return Response(content=_dump(payload), status_code=status, media_type=_JSON)


def raw_bytes(body: bytes, status: int = 200) -> Response:
    return Response(content=body, status_code=status, media_type=_JSON)


def success(data: dict[str, Any], status: int = 200) -> Response:
    return raw({"success": True, "errors": [], "data": data}, status)


def failure(status: int, messages: list[str]) -> Response:
    return raw({"success": False, "errors": messages, "data": None}, status)
