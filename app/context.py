"""Per-request context that logs, events and audit rows pick up without threading it through."""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
