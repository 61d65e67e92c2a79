"""The typed client for the CodeSandbox VM sandbox API (CONTRACT.md is the reference).

Invariants:

- One ``httpx.AsyncClient`` per `UpstreamClient`; the API key lives only in its headers, which
  httpx masks in ``repr``, and never in our own ``repr``, messages or logs.
- Callers see results from `app.upstream.schemas` or errors from `app.upstream.errors`, never an
  httpx or aiohttp exception.
- The calls travel over aiohttp's connection pool (`httpx_aiohttp`), under httpx's API: httpx
  still builds requests, reads ``HTTP(S)_PROXY``/``NO_PROXY`` and picks a proxy per URL, and
  aiohttp carries each call, through that proxy or not. aiohttp itself resends a GET, PUT or
  DELETE once when the connection drops before the answer (RFC 9112 §9.3.1 allows it for
  idempotent methods); a POST it never resends.
- Only ``start``, ``hibernate`` and ``shutdown`` are retried, because only they are idempotent;
  a retried fork would create a second sandbox. Retries happen on `UpstreamUnavailable` only,
  with exponential backoff and full jitter, and never past the call's overall deadline.
- Every path segment taken from a caller is percent-encoded in full, and ids that could change
  the path's meaning (``""``, ``"."``, ``".."``, anything with ``/``) are refused up front.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
from httpx_aiohttp import HttpxAiohttpClient

from app.upstream.ratelimit import RateLimits
from app.upstream.requester import Observer, Requester
from app.upstream.responses import data_as, decode_json, envelope_data, ignore_body, validate
from app.upstream.schemas import (
    ForkResult,
    HibernationTimeoutResult,
    MetaInfo,
    PreviewTokenCreated,
    PreviewTokenList,
    PreviewTokenUpdated,
    RunningVMs,
    SandboxInfo,
    SandboxPage,
    SessionResult,
    SpecsResult,
    StartOptions,
    StartResult,
)

__all__ = ["LIMITS", "USER_AGENT", "Observer", "UpstreamClient", "infer_base_url"]


def _version() -> str:
    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:  # running from a source checkout
        return "dev"


USER_AGENT = f"corral/{_version()}"


def infer_base_url(api_key: str) -> str:
    """The upstream the official SDK would pick for this key (CONTRACT §1.1)."""
    if api_key.startswith("csb_"):
        return "https://api.codesandbox.io"
    return "https://api.together.ai/csb/sdk"


def _segment(value: str, what: str) -> str:
    # quote(safe="") also encodes "@" (namespace@alias fork sources) the way the SDK does.
    if not isinstance(value, str) or value in ("", ".", "..") or "/" in value:
        raise ValueError(f"invalid {what}: {value!r}")
    return quote(value, safe="")


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# Up to 100 calls in flight per client (aiohttp's connector limit, waiting included in the pool
# timeout), and idle connections kept 5 seconds, httpx's own default: one idle that long is near
# a server's idle timeout, where reusing it races the server closing it.
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=5.0)


class UpstreamClient:
    """Async client for the upstream API. Use as ``async with`` or call `aclose`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        deadline: float = 60.0,
        max_attempts: int = 4,
        backoff_base: float = 0.2,
        backoff_max: float = 5.0,
        observer: Observer | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is required")
        if httpx.URL(base_url).scheme not in ("http", "https"):
            raise ValueError(f"base_url must be an http(s) URL: {base_url!r}")
        if timeout <= 0 or deadline <= 0 or max_attempts < 1:
            raise ValueError("timeout and deadline must be positive and max_attempts at least 1")
        self.base_url = base_url
        # With no transport given, the client builds aiohttp transports itself: one direct, and
        # one per proxy the environment names, so a proxied upstream takes the same path.
        http = HttpxAiohttpClient(
            base_url=base_url,
            transport=transport,
            limits=LIMITS,
            headers={
                "Authorization": f"Bearer {api_key}",
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
            },
            # Connecting and waiting for a pooled connection get a shorter budget than the
            # attempt, so that they fail as themselves (nothing sent: maybe_applied=False)
            # rather than as the attempt timing out (maybe applied).
            timeout=httpx.Timeout(
                timeout, connect=min(10.0, timeout / 2), pool=min(10.0, timeout / 2)
            ),
            follow_redirects=False,
        )
        self._requester = Requester(
            http,
            timeout=timeout,
            deadline=deadline,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            observer=observer,
        )
        self._call = self._requester.call

    @property
    def last_rate_limits(self) -> RateLimits | None:
        """The ``x-csb-*`` headers of the most recent response that carried any.

        Shared by all concurrent calls, so it is a recent snapshot, not this call's answer;
        errors carry their own response's limits in ``rate_limits``.
        """
        return self._requester.last_rate_limits

    def __repr__(self) -> str:
        return f"UpstreamClient(base_url={self.base_url!r})"

    async def aclose(self) -> None:
        await self._requester.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- lifecycle ---------------------------------------------------------------------------

    async def fork(
        self,
        template_id: str,
        *,
        title: str | None = None,
        description: str | None = None,
        privacy: int | None = None,
        private_preview: bool | None = None,
        tags: Sequence[str] | None = None,
        path: str | None = None,
        start_options: StartOptions | None = None,
    ) -> ForkResult:
        """``POST /sandbox/{template_id}/fork``. Never retried: a retry could fork twice."""
        fields: dict[str, Any] = {
            "title": title,
            "description": description,
            "privacy": privacy,
            "private_preview": private_preview,
            "tags": list(tags) if tags is not None else None,
            "path": path,
            "start_options": start_options.to_body() if start_options is not None else None,
        }
        body = {key: value for key, value in fields.items() if value is not None}
        url = f"/sandbox/{_segment(template_id, 'template id')}/fork"
        return await self._call("fork", "POST", url, data_as(ForkResult), body=body)

    async def start(self, vm_id: str, options: StartOptions | None = None) -> StartResult:
        """``POST /vm/{id}/start``: start or resume; starting a running VM is a success."""
        body = options.to_body() if options is not None else {}
        url = f"/vm/{_segment(vm_id, 'vm id')}/start"
        parse = data_as(StartResult)
        return await self._call("start", "POST", url, parse, body=body, retry=True)

    async def hibernate(self, vm_id: str) -> None:
        """``POST /vm/{id}/hibernate``. Raises `UpstreamNotFound` when the VM is not running."""
        url = f"/vm/{_segment(vm_id, 'vm id')}/hibernate"
        await self._call("hibernate", "POST", url, ignore_body, retry=True)

    async def shutdown(self, vm_id: str) -> None:
        """``POST /vm/{id}/shutdown``. Raises `UpstreamNotFound` when the VM is not running."""
        url = f"/vm/{_segment(vm_id, 'vm id')}/shutdown"
        await self._call("shutdown", "POST", url, ignore_body, retry=True)

    async def delete(self, vm_id: str) -> None:
        """``DELETE /vm/{id}``: permanent."""
        url = f"/vm/{_segment(vm_id, 'vm id')}"
        await self._call("delete", "DELETE", url, ignore_body)

    async def update_specs(self, vm_id: str, tier: str) -> SpecsResult:
        """``PUT /vm/{id}/specs``: change a running VM's tier."""
        url = f"/vm/{_segment(vm_id, 'vm id')}/specs"
        parse = data_as(SpecsResult)
        return await self._call("specs", "PUT", url, parse, body={"tier": tier})

    async def update_hibernation_timeout(
        self, vm_id: str, seconds: int
    ) -> HibernationTimeoutResult:
        """``PUT /vm/{id}/hibernation_timeout`` (1 to 86400 seconds)."""
        if not 1 <= seconds <= 86400:
            raise ValueError(f"hibernation timeout must be 1..86400 seconds, not {seconds}")
        url = f"/vm/{_segment(vm_id, 'vm id')}/hibernation_timeout"
        parse = data_as(HibernationTimeoutResult)
        body = {"hibernation_timeout_seconds": seconds}
        return await self._call("hibernation_timeout", "PUT", url, parse, body=body)

    # -- reads -------------------------------------------------------------------------------

    async def list_sandboxes(
        self,
        *,
        page: int = 1,
        page_size: int = 50,
        tags: Sequence[str] | None = None,
        order_by: str | None = None,
        direction: str | None = None,
        status: str | None = None,
    ) -> SandboxPage:
        """``GET /sandbox``: one page; the upstream caps ``page_size`` at 50."""
        params: dict[str, str | int] = {"page": page, "page_size": page_size}
        optional = {
            "tags": ",".join(tags) if tags else None,
            "order_by": order_by,
            "direction": direction,
            "status": status,
        }
        params.update({key: value for key, value in optional.items() if value is not None})

        def parse(
            operation: str, response: httpx.Response, rate_limits: RateLimits | None
        ) -> SandboxPage:
            data = envelope_data(decode_json(response))
            if data is not None:
                pagination = data.get("pagination")
                data = {
                    "sandboxes": data.get("sandboxes"),
                    **(pagination if isinstance(pagination, dict) else {}),
                }
            return validate(operation, response, rate_limits, SandboxPage, data)

        return await self._call("list", "GET", "/sandbox", parse, params=params)

    async def get_sandbox(self, sandbox_id: str) -> SandboxInfo:
        """``GET /sandbox/{id}``: metadata only; the upstream reports no run state here."""
        url = f"/sandbox/{_segment(sandbox_id, 'sandbox id')}"
        return await self._call("get", "GET", url, data_as(SandboxInfo))

    async def running_vms(self) -> RunningVMs:
        """``GET /vm/running``: refreshed by the upstream only about every 30 seconds."""
        return await self._call("running", "GET", "/vm/running", data_as(RunningVMs))

    async def create_session(self, vm_id: str, session_id: str, permission: str) -> SessionResult:
        """``POST /vm/{id}/sessions``: a single-use Pitcher token for one Linux user."""
        url = f"/vm/{_segment(vm_id, 'vm id')}/sessions"
        body = {"session_id": session_id, "permission": permission}
        parse = data_as(SessionResult)
        return await self._call("sessions", "POST", url, parse, body=body)

    async def meta_info(self) -> MetaInfo:
        """``GET /meta/info``, which unlike every other endpoint is not wrapped in ``data``."""

        def parse(
            operation: str, response: httpx.Response, rate_limits: RateLimits | None
        ) -> MetaInfo:
            body = decode_json(response)
            data: object = body
            # Tolerate a wrapped answer too (e.g. a fake that wraps everything).
            if isinstance(body, dict) and "api" not in body:
                data = envelope_data(body)
            return validate(operation, response, rate_limits, MetaInfo, data)

        return await self._call("meta", "GET", "/meta/info", parse)

    # -- preview tokens ----------------------------------------------------------------------

    async def create_preview_token(
        self, sandbox_id: str, expires_at: datetime | None
    ) -> PreviewTokenCreated:
        """``POST /sandbox/{id}/tokens``; ``expires_at=None`` means the token never expires."""
        body = {} if expires_at is None else {"expires_at": _iso(expires_at)}
        url = f"/sandbox/{_segment(sandbox_id, 'sandbox id')}/tokens"
        parse = data_as(PreviewTokenCreated)
        return await self._call("tokens", "POST", url, parse, body=body)

    async def list_preview_tokens(self, sandbox_id: str) -> PreviewTokenList:
        url = f"/sandbox/{_segment(sandbox_id, 'sandbox id')}/tokens"
        return await self._call("tokens", "GET", url, data_as(PreviewTokenList))

    async def update_preview_token(
        self, sandbox_id: str, token_id: str, expires_at: datetime | None
    ) -> PreviewTokenUpdated:
        """``PATCH``; ``expires_at=None`` clears the expiry, a past time revokes the token."""
        body = {"expires_at": None if expires_at is None else _iso(expires_at)}
        url = (
            f"/sandbox/{_segment(sandbox_id, 'sandbox id')}/tokens/{_segment(token_id, 'token id')}"
        )
        parse = data_as(PreviewTokenUpdated)
        return await self._call("tokens", "PATCH", url, parse, body=body)

    async def revoke_preview_tokens(self, sandbox_id: str) -> None:
        """``DELETE /sandbox/{id}/tokens``: revoke every preview token of the sandbox."""
        url = f"/sandbox/{_segment(sandbox_id, 'sandbox id')}/tokens"
        await self._call("tokens", "DELETE", url, ignore_body)
