"""Typed requests and results of the upstream API (CONTRACT §2).

Results are frozen and ignore unknown fields, so the upstream adding a field never breaks us.
Fields the spec marks required but that no caller depends on are optional here: a missing
version string should not turn a successful start into an error.

Secrets (Pitcher, Pint and preview tokens) are excluded from ``repr`` so a logged model never
leaks them; they are still in ``model_dump()``, which callers must treat accordingly.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "AutomaticWakeupConfig",
    "ForkResult",
    "HibernationTimeoutResult",
    "MetaInfo",
    "NewPreviewToken",
    "PreviewToken",
    "PreviewTokenCreated",
    "PreviewTokenList",
    "PreviewTokenUpdated",
    "RunningVM",
    "RunningVMs",
    "SandboxInfo",
    "SandboxPage",
    "SessionResult",
    "SpecsResult",
    "StartOptions",
    "StartResult",
    "VMSpecs",
    "parse_timestamp",
]

# Epoch values at or above this are milliseconds: 1e11 seconds is the year 5138, while
# 1e11 milliseconds is 1973, before any sandbox existed.
_EPOCH_MILLIS_FLOOR = 1e11
_NUMERIC = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def parse_timestamp(value: object) -> datetime | None:
    """An aware UTC datetime from ISO-8601, or epoch seconds or milliseconds (number or string).

    ``/vm/running`` is documented as ISO-8601 but the SDK parses it as epoch (CONTRACT §2.11), so
    we accept both. ``None`` and ``""`` give ``None``; anything else unreadable raises ValueError.
    Naive ISO values are taken as UTC, which is what the upstream means by them.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    elif isinstance(value, (int, float)):
        return _from_epoch(float(value))
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if _NUMERIC.fullmatch(text):
            return _from_epoch(float(text))
        moment = datetime.fromisoformat(text)
    else:
        raise ValueError(f"not a timestamp: {type(value).__name__}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _from_epoch(number: float) -> datetime:
    if not math.isfinite(number):
        raise ValueError("timestamp is not finite")
    seconds = number / 1000 if abs(number) >= _EPOCH_MILLIS_FLOOR else number
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError) as exc:
        raise ValueError(f"timestamp out of range: {number}") from exc


def _required_timestamp(value: object) -> datetime:
    moment = parse_timestamp(value)
    if moment is None:
        raise ValueError("timestamp is required")
    return moment


UtcDatetime = Annotated[datetime, BeforeValidator(_required_timestamp)]
OptionalUtcDatetime = Annotated[datetime | None, BeforeValidator(parse_timestamp)]


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class _Request(BaseModel):
    # Built by our own code: a misspelt option should fail loudly, not be dropped.
    model_config = ConfigDict(frozen=True, extra="forbid")


class AutomaticWakeupConfig(_Request):
    http: bool | None = None
    websocket: bool | None = None


class StartOptions(_Request):
    """Body of ``POST /vm/{id}/start``, and ``start_options`` of a fork. Sent without ``None``s."""

    tier: str | None = None
    hibernation_timeout_seconds: int | None = Field(default=None, ge=1, le=86400)
    ipcountry: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    automatic_wakeup_config: AutomaticWakeupConfig | None = None

    def to_body(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class StartResult(_Result):
    id: str
    bootup_type: str
    pitcher_url: str
    pitcher_token: str = Field(repr=False)
    cluster: str | None = None
    # Typed a string by the spec but observed null (CONTRACT §2.2).
    reconnect_token: str | None = Field(default=None, repr=False)
    workspace_path: str | None = None
    user_workspace_path: str | None = None
    pitcher_version: str | None = None
    latest_pitcher_version: str | None = None
    pitcher_manager_version: str | None = None
    use_pint: bool = False
    pint_url: str | None = None
    pint_token: str | None = Field(default=None, repr=False)


class ForkResult(_Result):
    id: str
    alias: str | None = None
    title: str | None = None
    # Present only when the fork was sent start_options.
    start_response: StartResult | None = None


class SpecsResult(_Result):
    id: str
    tier: str


class HibernationTimeoutResult(_Result):
    id: str
    hibernation_timeout_seconds: int


class SandboxInfo(_Result):
    id: str
    title: str | None = None
    description: str | None = None
    privacy: int
    is_frozen: bool = False
    tags: list[str] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)
    created_at: UtcDatetime
    updated_at: UtcDatetime


class SandboxPage(_Result):
    """One page of ``GET /sandbox``, with the upstream's ``pagination`` object flattened in."""

    sandboxes: list[SandboxInfo]
    total_records: int
    current_page: int
    next_page: int | None = None


class VMSpecs(_Result):
    cpu: int | None = None
    memory: int | None = None
    storage: int | None = None


class RunningVM(_Result):
    """An entry of ``/vm/running``: the spec's ``required`` list is misplaced, so all optional."""

    id: str | None = None
    last_active_at: OptionalUtcDatetime = None
    session_started_at: OptionalUtcDatetime = None
    credit_basis: str | None = None
    specs: VMSpecs | None = None


class RunningVMs(_Result):
    concurrent_vm_count: int
    concurrent_vm_limit: int
    vms: list[RunningVM] = Field(default_factory=list)


class SessionResult(_Result):
    username: str
    pitcher_token: str = Field(repr=False)
    pitcher_url: str
    user_workspace_path: str | None = None
    capabilities: list[str] = Field(default_factory=list)
    permissions: dict[str, Any] = Field(default_factory=dict)


class MetaInfo(_Result):
    """``GET /meta/info``, kept as raw objects: only operators look at it."""

    api: dict[str, Any]
    auth: dict[str, Any] | None = None
    rate_limits: dict[str, Any] | None = None


class PreviewToken(_Result):
    token_id: str
    token_prefix: str | None = None
    expires_at: OptionalUtcDatetime = None
    last_used_at: OptionalUtcDatetime = None


class NewPreviewToken(PreviewToken):
    """A freshly created preview token: the only time the upstream returns the secret."""

    token: str = Field(repr=False)


class PreviewTokenCreated(_Result):
    sandbox_id: str
    token: NewPreviewToken


class PreviewTokenList(_Result):
    sandbox_id: str
    tokens: list[PreviewToken]


class PreviewTokenUpdated(_Result):
    sandbox_id: str
    token: PreviewToken
