"""Errors raised by `app.upstream.client.UpstreamClient`.

Callers never see ``httpx`` or ``aiohttp`` exceptions; every failure is one of::

    UpstreamError                  operation, status, messages, rate_limits
    ├── UpstreamRejected           a 4xx: the upstream understood and refused; do not retry as is
    │   ├── UpstreamBadRequest     400, 422 and any 4xx not listed below
    │   ├── UpstreamUnauthorized   401, 403
    │   ├── UpstreamNotFound       404 (for hibernate/shutdown: the VM is not running)
    │   └── UpstreamRateLimited    429; retry_after, limit_family
    └── UpstreamUnavailable        5xx, transport failure, unusable 2xx; retry_after, maybe_applied
        └── UpstreamTimeout        a per-attempt timeout or the overall deadline ran out

``status`` is the HTTP status, or ``None`` when no response arrived. ``messages`` are the
human-readable strings the upstream sent, whatever the body shape (possibly none).

``UpstreamUnavailable.maybe_applied`` answers "could the upstream have acted on this request?".
It is ``False`` only when the request certainly did no work (connection refused, DNS or TLS
handshake failed, connect or pool timeout, a 503 turned away before work) and ``True`` otherwise:
a read timeout, a reset, a server that closed without answering or answered cut short or garbled.
A caller whose fork failed with ``maybe_applied=True`` must assume a sandbox may exist and
reconcile, not blindly fork again.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.upstream.ratelimit import LimitFamily, RateLimits

__all__ = [
    "UpstreamBadRequest",
    "UpstreamError",
    "UpstreamNotFound",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnauthorized",
    "UpstreamUnavailable",
    "maybe_applied",
]


class UpstreamError(Exception):
    """Base class: a call to the upstream API did not succeed."""

    def __init__(
        self,
        operation: str,
        status: int | None,
        messages: Sequence[str] = (),
        rate_limits: RateLimits | None = None,
    ) -> None:
        self.operation = operation
        self.status = status
        self.messages = list(messages)
        self.rate_limits = rate_limits
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"upstream {self.operation}"
        if self.status is not None:
            where += f" returned {self.status}"
        if self.messages:
            return f"{where}: {'; '.join(self.messages)}"
        return where

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(operation={self.operation!r}, status={self.status!r}, "
            f"messages={self.messages!r})"
        )


class UpstreamRejected(UpstreamError):
    """The upstream answered with a 4xx: repeating the same request will not help.

    ``earlier_maybe_applied``: the refusal answered a retry, and an earlier attempt of the same
    call may have acted (a stop retried after a lost answer meets a 404: the VM it stopped)."""

    earlier_maybe_applied: bool = False


class UpstreamBadRequest(UpstreamRejected):
    """400, 422, or another 4xx without a more specific class."""


class UpstreamUnauthorized(UpstreamRejected):
    """401 or 403: the API key is invalid or lacks a scope."""


class UpstreamNotFound(UpstreamRejected):
    """404: no such sandbox, or (hibernate, shutdown, sessions) its VM is not running."""


class UpstreamRateLimited(UpstreamRejected):
    """429. ``limit_family`` names the exhausted ``x-csb-*`` family when the headers said so."""

    def __init__(
        self,
        operation: str,
        status: int | None,
        messages: Sequence[str] = (),
        rate_limits: RateLimits | None = None,
        *,
        retry_after: float | None = None,
        limit_family: LimitFamily | None = None,
    ) -> None:
        self.retry_after = retry_after
        self.limit_family = limit_family
        super().__init__(operation, status, messages, rate_limits)


class UpstreamUnavailable(UpstreamError):
    """The upstream could not be reached or did not give a usable answer; may be transient."""

    def __init__(
        self,
        operation: str,
        status: int | None,
        messages: Sequence[str] = (),
        rate_limits: RateLimits | None = None,
        *,
        maybe_applied: bool = True,
        retry_after: float | None = None,
    ) -> None:
        # True is the default because claiming "nothing happened" wrongly is the costly mistake.
        self.maybe_applied = maybe_applied
        self.retry_after = retry_after
        super().__init__(operation, status, messages, rate_limits)


class UpstreamTimeout(UpstreamUnavailable):
    """An attempt timed out, or the call's overall deadline ran out."""


def maybe_applied(err: UpstreamError) -> bool:
    """Could the upstream have done what the failed call asked? Only an unavailable upstream
    leaves that open; a 4xx is a refusal, so certainly not applied."""
    return isinstance(err, UpstreamUnavailable) and err.maybe_applied
