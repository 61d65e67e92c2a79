"""Corral's settings: one typed object, read from `CORRAL_*` environment variables.

Where a setting is absent Corral runs on embedded defaults (an embedded Postgres under
`data_dir`, the in-process upstream simulator), so one command starts it on a fresh machine.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

UpstreamMode = Literal["simulator", "codesandbox"]


class Settings(BaseSettings):
    # An empty variable means unset, so deployments can template optional settings as "".
    model_config = SettingsConfigDict(
        env_prefix="CORRAL_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    database_url: SecretStr | None = Field(
        default=None,
        description="Postgres URL; absent means an embedded Postgres under data_dir.",
    )
    data_dir: Path = Field(default=Path(".data"), description="Embedded Postgres lives here.")

    upstream: UpstreamMode | None = Field(
        default=None,
        description="simulator or codesandbox; absent means codesandbox when a key is set.",
    )
    upstream_url: str | None = Field(
        default=None, description="Upstream base URL (the real API or a standalone simulator)."
    )
    upstream_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CORRAL_UPSTREAM_KEY", "CSB_API_KEY")
    )
    upstream_timeout_seconds: float = Field(default=30.0, gt=0)
    upstream_deadline_seconds: float = Field(default=60.0, gt=0)

    admin_key: SecretStr | None = Field(
        default=None, description="A secret of at least 32 characters accepted as an admin key."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    default_template: str = Field(default="pcz35m", pattern=r"^[A-Za-z0-9_@.-]{1,64}$")
    default_tier: str = "Nano"
    default_hibernation_timeout_seconds: int = Field(default=300, ge=1, le=86400)
    # How long a `starting` reservation may stay unsettled before the reconciler resolves it;
    # unset, just longer than the calls it covers can take (see `reservation_ttl`).
    reservation_ttl_seconds: int | None = Field(default=None, ge=5)

    reconcile_interval: float = Field(default=15.0, gt=0)
    reconcile_enabled: bool = True
    # `/vm/running` is refreshed only about every 30 s: a sandbox started less than this long
    # ago and not yet seen there is not counted missing.
    reconcile_sighting_grace_seconds: float = Field(default=90.0, ge=0)
    # A VM found running upstream that Corral did not start: keep it (recorded under team
    # `unassigned`) or shut it down.
    unmanaged_policy: Literal["adopt", "shutdown"] = "adopt"
    # This process's name in reconcile runs; default host:pid.
    replica: str | None = Field(default=None, max_length=128)

    # Budgets run per calendar month, and usage reports group by calendar day, in this IANA
    # timezone; an unknown name fails at start, not on the first report.
    budget_timezone: ZoneInfo = ZoneInfo("UTC")
    # How long a team's budget status is reused for the Corral-Budget-Warning header.
    budget_warning_cache_seconds: float = Field(default=5.0, ge=0, le=300)

    # The one bearer /metrics accepts; unset, only an admin key may scrape (a real deployment
    # must set it: see `missing_production_secrets`).
    metrics_token: SecretStr | None = Field(
        default=None, description="The bearer /metrics requires (at least 16 characters)."
    )
    metrics_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    # An upstream outage is shared by every replica, so by default it shows in /readyz without
    # failing it (failing would empty the Service and take the database-only routes down too).
    ready_requires_upstream: bool = False

    # Browser sessions (DESIGN §6). The root the browser-token signing keys are derived from,
    # the same in every replica and never stored; absent (embedded and simulated set-ups
    # only), the admin key or a root kept in data_dir stands in (app/sessions/signing_keys.py).
    browser_token_secret: SecretStr | None = Field(default=None)
    # Origins whose pages may fetch `/v1/browser/session` (CORS), comma-separated or JSON; exact
    # origins only, never `*`.
    browser_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # At most this many sessions per (team, user) per window, counted across replicas.
    session_rate_limit: int = Field(default=30, ge=1)
    session_rate_window_seconds: int = Field(default=60, ge=1, le=3600)

    # Upstream work per hour (app/metering.py): each team's (a team's own `hourly_*` overrides
    # these) and each key's, so that no team, and no one key, spends the organisation's hourly
    # upstream limits for the others. Well under the upstream's own hourly limits by default.
    team_hourly_forks: int = Field(default=500, ge=1, le=1_000_000)
    team_hourly_starts: int = Field(default=1000, ge=1, le=1_000_000)
    team_hourly_sessions: int = Field(default=2000, ge=1, le=1_000_000)
    key_hourly_forks: int = Field(default=250, ge=1, le=1_000_000)
    key_hourly_starts: int = Field(default=500, ge=1, le=1_000_000)
    key_hourly_sessions: int = Field(default=1000, ge=1, le=1_000_000)

    # Webhooks (DESIGN §13). The SSRF guard: when set, endpoints may only point at these hosts
    # (exact names, or `*.example.com` for its subdomains), checked when an endpoint is saved
    # and again before every delivery; unset, any host is allowed.
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # How long one delivery attempt may take before it counts as failed and is retried.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # Attempts in flight at once to one endpoint, per replica: a slow endpoint holds at most
    # this many of the worker's slots.
    webhook_concurrency_per_endpoint: int = Field(default=4, ge=1, le=64)
    # How often a worker looks for due retries when no new event has woken it.
    webhook_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    webhook_worker_enabled: bool = True

    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    log_level: str = "INFO"

    @field_validator("budget_timezone", mode="before")
    @classmethod
    def _known_timezone(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"CORRAL_BUDGET_TIMEZONE: unknown timezone {value!r}") from exc

    @field_validator("browser_token_secret")
    @classmethod
    def _browser_secret_is_long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("CORRAL_BROWSER_TOKEN_SECRET must be at least 32 characters")
        return value

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token_is_long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("CORRAL_METRICS_TOKEN must be at least 16 characters")
        return value

    def missing_production_secrets(self) -> list[str]:
        """The secrets a deployment on the real upstream must configure and does not: without
        them browser tokens would be signed from a stand-in root and /metrics would answer
        admin keys only, neither fit for several replicas behind a scraper."""
        if self.upstream_mode != "codesandbox":
            return []
        wanted = {
            "CORRAL_BROWSER_TOKEN_SECRET": self.browser_token_secret,
            "CORRAL_METRICS_TOKEN": self.metrics_token,
        }
        return [name for name, value in wanted.items() if value is None]

    @field_validator("browser_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("browser_origins")
    @classmethod
    def _exact_origins(cls, value: list[str]) -> list[str]:
        from urllib.parse import urlsplit

        for origin in value:
            parts = urlsplit(origin)
            exact = parts.scheme in ("http", "https") and parts.netloc and "*" not in origin
            if not exact or parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(
                    f"CORRAL_BROWSER_ORIGINS: {origin!r} is not an exact origin like "
                    "https://app.example.com (no wildcard, no path)"
                )
        return [origin.rstrip("/") for origin in value]

    @field_validator("admin_key")
    @classmethod
    def _admin_key_is_long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("CORRAL_ADMIN_KEY must be at least 32 characters")
        return value

    @property
    def reservation_ttl(self) -> timedelta:
        """A reservation covers a fork and a start, each bounded by the upstream deadline: past
        both (and a margin for the database), its process has died or given up."""
        if self.reservation_ttl_seconds is not None:
            return timedelta(seconds=self.reservation_ttl_seconds)
        return timedelta(seconds=2 * self.upstream_deadline_seconds + 5)

    @property
    def upstream_mode(self) -> UpstreamMode:
        if self.upstream is not None:
            return self.upstream
        return "codesandbox" if self.upstream_key is not None else "simulator"

    @property
    def upstream_base_url(self) -> str:
        """The base URL rule of the upstream SDK: explicit URL, else by key prefix."""
        if self.upstream_url:
            return self.upstream_url.rstrip("/")
        key = self.upstream_key.get_secret_value() if self.upstream_key else ""
        if key.startswith("csb_"):
            return "https://api.codesandbox.io"
        return "https://api.together.ai/csb/sdk"
