"""The simulator's configuration: limits, latency, staleness and faults per operation.

`SimulatorConfig` is immutable; `PUT /_simulator/config` sends a `ConfigUpdate` whose set fields
replace the current ones (a `faults` map replaces the whole map, so what was PUT is what is in
force). Unknown fields are refused so that a typo in a test cannot silently configure nothing.
"""

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from app.upstream.simulator.tiers import Tier

Operation = Literal[
    "fork",
    "create",
    "start",
    "hibernate",
    "shutdown",
    "delete",
    "specs",
    "hibernation_timeout",
    "list",
    "get",
    "running",
    "sessions",
    "meta",
    "tokens",
    "clusters",
]
OPERATIONS: tuple[Operation, ...] = get_args(Operation)

DEFAULT_TEMPLATE_IDS: tuple[str, ...] = ("pcz35m", "7ngcrf")


class FaultConfig(BaseModel):
    """How one operation misbehaves. The rates are drawn independently per call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    status: int = Field(default=503, ge=400, le=599)
    timeout_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    lose_response_rate: float = Field(default=0.0, ge=0.0, le=1.0)


class SimulatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrent_vm_limit: int = Field(default=10, ge=0)
    latency_ms: float = Field(default=0.0, ge=0.0)
    running_staleness_seconds: float = Field(default=0.0, ge=0.0)
    timeout_seconds: float = Field(default=30.0, ge=0.0)
    requests_hourly_limit: int = Field(default=100_000, ge=0)
    sandboxes_hourly_limit: int = Field(default=10_000, ge=0)
    seed: int | None = None
    faults: dict[Operation, FaultConfig] = Field(default_factory=dict)
    template_ids: tuple[str, ...] = DEFAULT_TEMPLATE_IDS
    default_tier: Tier = Tier.NANO
    cluster: str = "sim-eu-1"


class ConfigUpdate(BaseModel):
    """A partial `SimulatorConfig`: only the fields that were sent are applied."""

    model_config = ConfigDict(extra="forbid")

    concurrent_vm_limit: int | None = Field(default=None, ge=0)
    latency_ms: float | None = Field(default=None, ge=0.0)
    running_staleness_seconds: float | None = Field(default=None, ge=0.0)
    timeout_seconds: float | None = Field(default=None, ge=0.0)
    requests_hourly_limit: int | None = Field(default=None, ge=0)
    sandboxes_hourly_limit: int | None = Field(default=None, ge=0)
    seed: int | None = None
    faults: dict[Operation, FaultConfig] | None = None
    template_ids: tuple[str, ...] | None = None
    default_tier: Tier | None = None
    cluster: str | None = None

    def apply_to(self, config: SimulatorConfig) -> SimulatorConfig:
        changes = self.model_dump(exclude_unset=True)
        # A null for a field that has no null meaning (everything but `seed`) is "leave it".
        changes = {k: v for k, v in changes.items() if v is not None or k == "seed"}
        return SimulatorConfig.model_validate({**config.model_dump(), **changes})
