"""Request bodies and query strings, validated as the upstream spec describes them.

Upstream bodies ignore unknown fields (the spec does not forbid them and the real server accepts
them); control-API bodies refuse them. A JSON `null` for an optional upstream field means "not
given". Privacy is bounded to 0-2 on fork as well as on create, although the spec only bounds it on
create: no other value has a meaning.
"""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.upstream.simulator.tiers import Tier

MAX_HIBERNATION_TIMEOUT_SECONDS = 86_400


class _UpstreamBody(BaseModel):
    model_config = ConfigDict(extra="ignore")


class WakeupConfig(_UpstreamBody):
    http: bool = True
    websocket: bool = False


class StartOptions(_UpstreamBody):
    tier: Tier | None = None
    hibernation_timeout_seconds: int | None = Field(
        default=None, ge=1, le=MAX_HIBERNATION_TIMEOUT_SECONDS
    )
    ipcountry: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    automatic_wakeup_config: WakeupConfig | None = None


class ForkRequest(_UpstreamBody):
    title: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=255)
    privacy: int | None = Field(default=None, ge=0, le=2)
    private_preview: bool | None = None
    tags: list[str] | None = None
    path: str | None = None
    is_frozen: bool | None = None
    start_options: StartOptions | None = None


class FileEntry(_UpstreamBody):
    code: str | None = None
    binary_content: str | None = None
    is_binary: bool = False


class CreateRequest(_UpstreamBody):
    files: dict[str, FileEntry]
    template: str | None = None
    title: str | None = Field(default=None, max_length=255)
    description: str | None = None
    tags: list[str] | None = None
    path: str | None = None
    privacy: int | None = Field(default=None, ge=0, le=2)
    private_preview: bool | None = None
    is_frozen: bool | None = None
    npm_dependencies: dict[str, str] | None = None
    entry: str | None = None
    external_resources: list[str] | None = None
    runtime: Literal["browser", "vm"] | None = None


class SpecsRequest(_UpstreamBody):
    tier: Tier


class HibernationTimeoutRequest(_UpstreamBody):
    hibernation_timeout_seconds: int = Field(ge=1, le=MAX_HIBERNATION_TIMEOUT_SECONDS)


class SessionRequest(_UpstreamBody):
    session_id: str = Field(pattern=r"^[a-zA-Z0-9_-]+$")
    permission: Literal["read", "write"]
    git_access_token: str | None = None
    git_user_name: str | None = None
    git_user_email: str | None = None


class PreviewTokenRequest(_UpstreamBody):
    expires_at: datetime | None = None


MAX_PAGE_SIZE = 50


class ListQuery(_UpstreamBody):
    tags: str | None = None
    order_by: Literal["inserted_at", "updated_at"] = "updated_at"
    direction: Literal["asc", "desc"] = "desc"
    # Above the spec's maximum of 50 is clamped, not refused (the SDK sends its `limit` here).
    page_size: int = Field(default=20, ge=1)
    page: int = Field(default=1, ge=1)
    status: Literal["running"] | None = None

    @property
    def tag_filter(self) -> set[str]:
        return {t.strip() for t in (self.tags or "").split(",") if t.strip()}

    @property
    def effective_page_size(self) -> int:
        return min(self.page_size, MAX_PAGE_SIZE)


# --- control API bodies -------------------------------------------------------------------


class _ControlBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClockAdvance(_ControlBody):
    seconds: float = Field(ge=0)


class OutsideVmRequest(_ControlBody):
    tier: Tier | None = None
    tags: list[str] = Field(default_factory=list)
    title: str | None = Field(default=None, max_length=255)
    hibernation_timeout_seconds: int = Field(default=300, ge=1, le=MAX_HIBERNATION_TIMEOUT_SECONDS)


class WakeRequest(_ControlBody):
    via: Literal["http", "websocket"] = "http"
