"""Request bodies of the upstream API as the facade accepts them (CONTRACT §2), and the
upstream-shaped views of Corral's sandboxes.

Bodies declare every field the upstream spec has that Corral can honour and refuse the rest
(`extra="forbid"`), so a client never believes an option took effect when it was dropped."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import Field

from app.inputs import Instant, RequestBody
from app.tiers import Tier

# Upstream sandbox ids as they may appear in a /csb URL; a fork source may also be
# `namespace@alias` (the SDK percent-encodes the `@`, Starlette decodes it).
VM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,20}$"
TOKEN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
PRIVACY_NAMES = {0: "public", 1: "unlisted", 2: "private"}


class _Body(RequestBody):
    """Refuses unknown fields and NUL in any text, as every request body does."""


class WakeupConfig(_Body):
    http: bool | None = None
    websocket: bool | None = None


class StartRequest(_Body):
    """`VMStartRequest`. `ipcountry` is accepted and ignored: it is only a cluster hint."""

    tier: Tier | None = None
    hibernation_timeout_seconds: int | None = Field(default=None, ge=1, le=86400)
    ipcountry: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    automatic_wakeup_config: WakeupConfig | None = None


class ForkRequest(_Body):
    """`SandboxForkRequest`. `description`, `path` and `is_frozen` are accepted for the SDK's
    sake and not kept: Corral records no description or folder, and never freezes."""

    title: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=255)
    privacy: Literal[0, 1, 2] | None = None
    private_preview: bool | None = None
    tags: list[str] = Field(default_factory=list, max_length=10)
    path: str | None = Field(default=None, max_length=255)
    is_frozen: bool | None = None
    start_options: StartRequest | None = None


class SpecsRequest(_Body):
    tier: Tier


class HibernationTimeoutRequest(_Body):
    hibernation_timeout_seconds: int = Field(ge=1, le=86400)


class SessionRequest(_Body):
    session_id: str = Field(pattern=SESSION_ID_PATTERN)
    permission: Literal["read", "write"]


class PreviewTokenCreate(_Body):
    expires_at: Instant | None = None


class PreviewTokenUpdate(_Body):
    expires_at: Instant | None


# The SDK's `VMTier` columns (CPU cores, memory GiB, storage GB) that `/vm/running` reports.
TIER_SPECS: dict[str, tuple[int, int, int]] = {
    "Pico": (1, 2, 20),
    "Nano": (2, 4, 20),
    "Micro": (4, 8, 20),
    "Small": (8, 16, 30),
    "Medium": (16, 32, 40),
    "Large": (32, 64, 50),
    "XLarge": (64, 128, 50),
}


def specs_of(tier: str) -> dict[str, int] | None:
    found = TIER_SPECS.get(tier)
    if found is None:
        return None
    cpu, memory, storage = found
    return {"cpu": cpu, "memory": memory, "storage": storage}


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class Viewed(Protocol):
    """What `sandbox_view` shows of a sandbox: a `Sandbox`, or a row of just these."""

    @property
    def upstream_id(self) -> str | None: ...
    @property
    def title(self) -> str | None: ...
    @property
    def privacy(self) -> int: ...
    @property
    def tags(self) -> list[str]: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...


def sandbox_view(sandbox: Viewed) -> dict[str, Any]:
    """A Corral sandbox as the upstream's `Sandbox` object, named by its upstream id."""
    return {
        "id": sandbox.upstream_id,
        "title": sandbox.title,
        "description": None,
        "privacy": sandbox.privacy,
        "is_frozen": False,
        "tags": list(sandbox.tags),
        "settings": {},
        "created_at": _iso(sandbox.created_at),
        "updated_at": _iso(sandbox.updated_at),
    }
