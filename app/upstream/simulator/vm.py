"""One simulated sandbox and its VM (the upstream has one VM per sandbox, same short id).

States: `created` (forked or created, never run), `running`, `hibernated`, `shutdown`, `deleted`.
Templates are sandboxes of another workspace: they can be read and forked, nothing else.
Deleted VMs are kept (invisible to the upstream paths) so that their ledger stays inspectable.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from app.upstream.simulator.ledger import Ledger
from app.upstream.simulator.tiers import Tier

Origin = Literal["template", "fork", "create", "outside"]


class VmState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    HIBERNATED = "hibernated"
    SHUTDOWN = "shutdown"
    DELETED = "deleted"


class BootupType(StrEnum):
    FORK = "FORK"
    RUNNING = "RUNNING"
    RESUME = "RESUME"
    CLEAN = "CLEAN"


@dataclass(slots=True)
class PreviewToken:
    token_id: str
    token: str
    expires_at: datetime | None
    last_used_at: datetime | None = None

    @property
    def token_prefix(self) -> str:
        return self.token[:11]


@dataclass(eq=False, slots=True)
class Vm:
    id: str
    seq: int
    origin: Origin
    created_at: datetime
    title: str | None = None
    description: str | None = None
    privacy: int = 0
    private_preview: bool = False
    is_frozen: bool = False
    tags: list[str] = field(default_factory=list)
    path: str = "/"
    updated_at: datetime | None = None
    state: VmState = VmState.CREATED
    state_changed_at: datetime | None = None
    # Why the VM is in its state: "api", "auto_hibernate", "wake", "outside", "created".
    state_cause: str = "created"
    tier: Tier = Tier.NANO
    hibernation_timeout_seconds: int = 300
    wakeup_http: bool = True
    wakeup_websocket: bool = False
    last_active_at: datetime | None = None
    session_started_at: datetime | None = None
    ledger: Ledger = field(default_factory=Ledger)
    tokens: dict[str, PreviewToken] = field(default_factory=dict)
    # The idle-deadline heap entry that is current for this VM; older entries are stale.
    idle_entry: int = -1
    # The /vm/running row, cached with the values it was rendered from.
    running_row: tuple[tuple[object, ...], bytes] | None = None

    @property
    def is_template(self) -> bool:
        return self.origin == "template"

    @property
    def idle_deadline(self) -> datetime | None:
        if self.state is not VmState.RUNNING or self.last_active_at is None:
            return None
        return self.last_active_at + timedelta(seconds=self.hibernation_timeout_seconds)
