"""How an upstream failure is answered to Corral's own clients (problem+json, with Retry-After)."""

from __future__ import annotations

from app.errors import AppError, BadGateway, ServiceUnavailable, TooManyRequests
from app.upstream.errors import (
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnauthorized,
    UpstreamUnavailable,
)

DEFAULT_RETRY_AFTER = 5.0


def to_problem(err: UpstreamError, *, sandbox_id: str | None = None) -> AppError:
    extra: dict[str, object] = {"operation": err.operation, "upstream_status": err.status}
    if sandbox_id is not None:
        extra["sandbox_id"] = sandbox_id
    message = "; ".join(err.messages) or "no detail"
    if isinstance(err, UpstreamRateLimited):
        return TooManyRequests(
            f"The upstream refused {err.operation}: {message}",
            retry_after=err.retry_after or DEFAULT_RETRY_AFTER,
            kind="upstream-rate-limited",
            extra={**extra, "limit": "upstream", "scope": "org"},
        )
    if isinstance(err, UpstreamUnavailable) and not err.maybe_applied:
        return ServiceUnavailable(
            f"The upstream is unavailable for {err.operation}: {message}",
            retry_after=err.retry_after or DEFAULT_RETRY_AFTER,
            extra=extra,
        )
    if isinstance(err, UpstreamUnauthorized):
        # Corral's own upstream credentials were refused: an operator problem, not the caller's.
        return BadGateway("The upstream refused Corral's credentials.", retry_after=60, extra=extra)
    return BadGateway(
        f"The upstream failed {err.operation}: {message}",
        retry_after=getattr(err, "retry_after", None) or DEFAULT_RETRY_AFTER,
        extra=extra,
    )
