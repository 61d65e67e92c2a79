"""Turning upstream HTTP responses into payloads or `app.upstream.errors` exceptions.

Error bodies are not reliable: the documented shape is ``{"errors": [str | object]}``, the SDK's
own tests use ``{"error": {"errors": [...]}}``, and a real 429 once came with no ``errors`` at all
(CONTRACT §1.2). Every function here therefore accepts any body, including non-JSON and empty.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from app.upstream.errors import (
    UpstreamBadRequest,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamUnauthorized,
    UpstreamUnavailable,
)
from app.upstream.ratelimit import RateLimits, retry_after_seconds

__all__ = [
    "Parse",
    "data_as",
    "decode_json",
    "envelope_data",
    "error_for_response",
    "extract_messages",
    "ignore_body",
    "unusable_body",
    "validate",
]

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)

Parse = Callable[[str, httpx.Response, RateLimits | None], _T]
"""Turns a 2xx response into a result: (operation, response, its rate limits) -> result."""

# Error text ends up in logs and problem documents; an HTML error page must not flood either.
_MAX_MESSAGE_CHARS = 500
_MAX_MESSAGES = 10

# 503 is the upstream turning work away ("currently overloaded"); a 500, 502 or 504 can come after
# the request reached something that acted on it, so only 503 is known not to have applied.
_NOT_APPLIED_STATUSES = frozenset({503})


def _clip(text: str) -> str:
    text = text.strip()
    if len(text) > _MAX_MESSAGE_CHARS:
        return text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return text


def _message_of(item: object) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in ("message", "detail", "error", "msg"):
            value = item.get(key)
            if isinstance(value, str) and value:
                return value
    return json.dumps(item, default=str, sort_keys=True)


def _messages_in(body: object) -> list[str]:
    if isinstance(body, list):
        return [_message_of(item) for item in body]
    if isinstance(body, str):
        return [body]
    if not isinstance(body, dict):
        return [] if body is None else [_message_of(body)]
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        return [_message_of(item) for item in errors]
    if isinstance(errors, (str, dict)):
        return [_message_of(errors)]
    nested = body.get("error")
    if isinstance(nested, (dict, list, str)):
        found = _messages_in(nested)
        if found:
            return found
    for key in ("message", "detail"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return [value]
        if isinstance(value, list) and value:
            return [_message_of(item) for item in value]
    return []


def decode_json(response: httpx.Response) -> object:
    """The decoded JSON body; ``None`` for an empty or non-JSON body (and for JSON ``null``)."""
    if not response.content:
        return None
    try:
        decoded: object = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded


def extract_messages(response: httpx.Response) -> list[str]:
    """Human-readable messages from an error response of any shape."""
    body = decode_json(response)
    if body is None:
        try:
            text = response.text
        except (LookupError, ValueError):
            text = ""
        messages = [text] if text.strip() else []
    else:
        messages = _messages_in(body)
    clipped = (_clip(message) for message in messages[:_MAX_MESSAGES])
    return [message for message in clipped if message]


def error_for_response(
    operation: str, response: httpx.Response, rate_limits: RateLimits | None
) -> UpstreamError:
    """The exception for a non-2xx response."""
    status = response.status_code
    messages = extract_messages(response)
    if status == 429:
        family = rate_limits.exhausted_family() if rate_limits is not None else None
        return UpstreamRateLimited(
            operation,
            status,
            messages,
            rate_limits,
            retry_after=retry_after_seconds(response.headers, rate_limits, family),
            limit_family=family,
        )
    if status in (401, 403):
        return UpstreamUnauthorized(operation, status, messages, rate_limits)
    if status == 404:
        return UpstreamNotFound(operation, status, messages, rate_limits)
    if 400 <= status < 500:
        return UpstreamBadRequest(operation, status, messages, rate_limits)
    # 5xx, and the odd 1xx/3xx (redirects are not followed): nothing usable came back.
    return UpstreamUnavailable(
        operation,
        status,
        messages,
        rate_limits,
        maybe_applied=status not in _NOT_APPLIED_STATUSES,
        retry_after=retry_after_seconds(response.headers, None, None),
    )


def unusable_body(
    operation: str, response: httpx.Response, rate_limits: RateLimits | None, reason: str
) -> UpstreamUnavailable:
    """A 2xx we cannot use: the upstream did act, we just cannot tell the caller the result."""
    return UpstreamUnavailable(
        operation,
        response.status_code,
        [f"unusable success response: {_clip(reason)}"],
        rate_limits,
        maybe_applied=True,
    )


def envelope_data(body: object) -> dict[str, Any] | None:
    """``body["data"]`` when the body is the usual envelope around an object, else ``None``."""
    if not isinstance(body, dict):
        return None
    data = body.get("data")
    return data if isinstance(data, dict) else None


def validate(
    operation: str,
    response: httpx.Response,
    rate_limits: RateLimits | None,
    model: type[_M],
    data: object,
) -> _M:
    """``data`` as a ``model``, or the `UpstreamUnavailable` for an unusable 2xx."""
    if data is None:
        raise unusable_body(operation, response, rate_limits, "no data object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # include_input=False: the offending values may be tokens.
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'data'}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        )
        raise unusable_body(operation, response, rate_limits, problems) from None


def data_as(model: type[_M]) -> Parse[_M]:
    """A parser for the usual envelope: ``body["data"]`` validated as ``model``."""

    def parse(operation: str, response: httpx.Response, rate_limits: RateLimits | None) -> _M:
        data = envelope_data(decode_json(response))
        return validate(operation, response, rate_limits, model, data)

    return parse


def ignore_body(operation: str, response: httpx.Response, rate_limits: RateLimits | None) -> None:
    """For hibernate, shutdown, delete and revoke, where the 2xx status is the whole answer.

    Rejecting an odd body there would report "maybe applied" for something that certainly was.
    """
    return None
