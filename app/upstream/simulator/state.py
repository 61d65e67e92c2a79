"""The simulator's state: every sandbox/VM, the lifecycle state machine, limits and the ledger.

State machine (CONTRACT §5):

    created    --start-->  running  (bootup FORK for a fork, CLEAN for a files-created sandbox)
    running    --start-->  running  (RUNNING: a no-op apart from activity and a new token)
    hibernated --start-->  running  (RESUME)          shutdown --start--> running (CLEAN)
    running    --hibernate / idle >= timeout-->  hibernated
    running    --shutdown-->  shutdown
    any        --delete-->    deleted (404 for every upstream path afterwards)
    hibernated --wake (control, if automatic_wakeup_config allows)--> running (RESUME)

Hibernate, shutdown, specs, hibernation timeout and sessions need a running VM (404 otherwise).
Start options given to an already running VM are ignored; given to a stopped one they apply, and
an option left out keeps the VM's previous value (300 s timeout, the workspace tier, HTTP wake-up
on, when never set).

Invariants:
- A start that would make the running VMs exceed `concurrent_vm_limit` is refused (429); starting
  a VM that is already running is always allowed. A fork with `start_options` is refused whole, so
  no sandbox is left behind by a refused fork.
- Every method here is synchronous, so one call is atomic under the event loop: no other request
  can interleave between the limit check and the start it guards, which is why no lock is needed.
- Idleness is evaluated lazily at the top of every call: a running VM whose
  `last_active_at + hibernation_timeout` has passed is hibernated *at that deadline*, so the
  ledger stretch ends exactly there. Activity = a start, a session, a hibernation-timeout update
  (an API interaction with the running VM) and the control API's touch.
- Idle deadlines live in a heap (`idleness.py`) and running VMs in their own dict, so the hot
  paths cost O(log n) or O(running), never O(all sandboxes).
"""

import itertools
import json
import random
import secrets
import string
import uuid
from collections import Counter
from datetime import datetime

from app.upstream.simulator import views
from app.upstream.simulator.clock import SimulatedClock
from app.upstream.simulator.config import (
    OPERATIONS,
    ConfigUpdate,
    Operation,
    SimulatorConfig,
)
from app.upstream.simulator.errors import Conflict, NotFound, NotRunning
from app.upstream.simulator.faults import FaultInjector, FaultPlan
from app.upstream.simulator.idleness import IdleDeadlines
from app.upstream.simulator.limits import Limits
from app.upstream.simulator.schemas import (
    CreateRequest,
    ForkRequest,
    ListQuery,
    OutsideVmRequest,
    StartOptions,
)
from app.upstream.simulator.tiers import Tier
from app.upstream.simulator.vm import BootupType, Origin, PreviewToken, Vm, VmState

_ID_ALPHABET = string.ascii_lowercase + string.digits
_TEMPLATE_TITLES = {"pcz35m": "Universal", "7ngcrf": "Universal (staging)"}


class Simulator:
    """All the state of one simulated upstream workspace (exposed as `app.state.simulator`)."""

    def __init__(self, config: SimulatorConfig, *, api_key: str) -> None:
        self.api_key = api_key
        self._initial_config = config
        # One clock for the simulator's whole life, so references to it stay valid over a reset.
        self.clock = SimulatedClock()
        self._init_state(config)

    def _init_state(self, config: SimulatorConfig) -> None:
        self.config = config
        self.clock.reset()
        self.team_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"corral-simulator:{self.api_key}"))
        self._faults = FaultInjector(config.seed)
        self._ids = random.Random(config.seed)
        self._seq = itertools.count()
        self._vms: dict[str, Vm] = {}
        self._running: dict[str, Vm] = {}
        self._idle = IdleDeadlines()
        self._limits = Limits()
        self.request_counts: Counter[Operation] = Counter({op: 0 for op in OPERATIONS})
        self._running_snapshot: tuple[datetime, bytes] | None = None
        self._sync_templates()

    # --- configuration and bookkeeping ------------------------------------------------------

    def reset(self) -> None:
        """Forget every VM, counter and fault, and go back to the configuration at creation."""
        self._init_state(self._initial_config)

    def update_config(self, update: ConfigUpdate) -> SimulatorConfig:
        new = update.apply_to(self.config)
        if "seed" in update.model_fields_set:
            self._faults.reseed(new.seed)
            self._ids = random.Random(new.seed)
        self.config = new
        self._sync_templates()
        return new

    def _sync_templates(self) -> None:
        wanted = set(self.config.template_ids)
        for vm_id in [v.id for v in self._vms.values() if v.is_template and v.id not in wanted]:
            del self._vms[vm_id]
        now = self.clock.now()
        for template_id in self.config.template_ids:
            if template_id not in self._vms:
                self._vms[template_id] = Vm(
                    id=template_id,
                    seq=next(self._seq),
                    origin="template",
                    created_at=now,
                    updated_at=now,
                    title=_TEMPLATE_TITLES.get(template_id, f"Template {template_id}"),
                    privacy=0,
                )

    def count_request(self, operation: Operation) -> None:
        self.request_counts[operation] += 1

    def plan_faults(self, operation: Operation) -> FaultPlan:
        return self._faults.plan(self.config.faults.get(operation))

    def authorizes(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(
            token.strip().encode(), self.api_key.encode()
        )

    def admit_request(self) -> None:
        """Count one upstream request against the hourly request limit, or refuse it."""
        self._limits.admit_request(self.clock.now(), self.config)

    def rate_limit_headers(self) -> list[tuple[bytes, bytes]]:
        return self._limits.headers(self.clock.now(), self.config, len(self._running))

    def meta_info(self) -> dict[str, object]:
        return {
            "api": {"name": "CodeSandbox API", "latest_version": views.API_VERSION},
            "auth": {
                "scopes": ["sandbox:read", "sandbox:create", "vm:manage", "preview_token:manage"],
                "team": self.team_id,
                "version": views.API_VERSION,
            },
            "rate_limits": self._limits.report(self.clock.now(), self.config, len(self._running)),
        }

    # --- idleness ---------------------------------------------------------------------------

    def expire_idle(self) -> list[str]:
        """Hibernate every running VM whose idle deadline has passed; return their ids."""
        hibernated = []
        for deadline, vm in self._idle.expired(self.clock.now()):
            self._stop(vm, VmState.HIBERNATED, deadline, "auto_hibernate")
            hibernated.append(vm.id)
        return hibernated

    def _touch(self, vm: Vm, now: datetime) -> None:
        vm.last_active_at = now
        self._idle.schedule(vm, self._running.values())

    # --- lookups ----------------------------------------------------------------------------

    def _sandbox(self, sandbox_id: str) -> Vm:
        """A sandbox that can be read or forked: ours (not deleted) or a template."""
        vm = self._vms.get(sandbox_id)
        if vm is None or vm.state is VmState.DELETED:
            raise NotFound(f"Sandbox {sandbox_id} not found")
        return vm

    def _vm(self, vm_id: str) -> Vm:
        """A VM of this workspace that lifecycle calls may act on."""
        vm = self._sandbox(vm_id)
        if vm.is_template:
            raise NotFound(f"VM {vm_id} not found in this workspace")
        return vm

    def _running_vm(self, vm_id: str) -> Vm:
        vm = self._vm(vm_id)
        if vm.state is not VmState.RUNNING:
            raise NotRunning(f"VM {vm_id} is not running")
        return vm

    def get_sandbox(self, sandbox_id: str) -> Vm:
        self.expire_idle()
        return self._sandbox(sandbox_id)

    # --- creation ---------------------------------------------------------------------------

    def _new_id(self) -> str:
        while True:
            candidate = "".join(self._ids.choice(_ID_ALPHABET) for _ in range(6))
            if candidate not in self._vms:
                return candidate

    def _check_room_for_start(self) -> None:
        self._limits.check_vm_room(len(self._running), self.config)

    def _add(
        self,
        origin: Origin,
        now: datetime,
        *,
        title: str | None,
        description: str | None = None,
        privacy: int = 0,
        private_preview: bool = False,
        is_frozen: bool = False,
        tags: list[str],
        path: str = "/",
    ) -> Vm:
        vm = Vm(
            id=self._new_id(),
            seq=next(self._seq),
            origin=origin,
            created_at=now,
            updated_at=now,
            state_changed_at=now,
            tier=self.config.default_tier,
            title=title,
            description=description,
            privacy=privacy,
            private_preview=private_preview,
            is_frozen=is_frozen,
            tags=tags,
            path=path,
        )
        self._vms[vm.id] = vm
        return vm

    def fork(self, source_id: str, request: ForkRequest) -> tuple[Vm, BootupType | None]:
        self.expire_idle()
        now = self.clock.now()
        source = self._sandbox(source_id)
        self._limits.check_sandbox_room(now, self.config)
        if request.start_options is not None:
            self._check_room_for_start()
        self._limits.sandboxes.take(now)
        default_title = f"{source.title} (forked)" if source.title else None
        vm = self._add(
            "fork",
            now,
            title=request.title if request.title is not None else default_title,
            description=(
                request.description if request.description is not None else source.description
            ),
            privacy=request.privacy if request.privacy is not None else source.privacy,
            private_preview=bool(request.private_preview),
            is_frozen=request.is_frozen if request.is_frozen is not None else source.is_frozen,
            tags=list(request.tags or []),
            path=request.path or "/",
        )
        if request.start_options is None:
            return vm, None
        return vm, self._start(vm, request.start_options, now, "api")

    def create(self, request: CreateRequest) -> Vm:
        self.expire_idle()
        now = self.clock.now()
        self._limits.check_sandbox_room(now, self.config)
        self._limits.sandboxes.take(now)
        return self._add(
            "create",
            now,
            title=request.title or None,
            description=request.description,
            privacy=request.privacy or 0,
            private_preview=bool(request.private_preview),
            is_frozen=bool(request.is_frozen),
            tags=list(request.tags or [])[:10],
            path=request.path or "/",
        )

    def start_outside(self, request: OutsideVmRequest) -> Vm:
        """A VM forked and started by someone else in the workspace, not through this API."""
        self.expire_idle()
        now = self.clock.now()
        self._check_room_for_start()
        vm = self._add("outside", now, title=request.title, tags=list(request.tags))
        options = StartOptions(
            tier=request.tier, hibernation_timeout_seconds=request.hibernation_timeout_seconds
        )
        self._start(vm, options, now, "outside")
        return vm

    # --- lifecycle --------------------------------------------------------------------------

    def start(self, vm_id: str, options: StartOptions) -> tuple[Vm, BootupType]:
        self.expire_idle()
        vm = self._vm(vm_id)
        return vm, self._start(vm, options, self.clock.now(), "api")

    def _start(self, vm: Vm, options: StartOptions, now: datetime, cause: str) -> BootupType:
        if vm.state is VmState.RUNNING:
            self._touch(vm, now)
            return BootupType.RUNNING
        self._check_room_for_start()
        if vm.state is VmState.CREATED:
            bootup = BootupType.FORK if vm.origin in ("fork", "outside") else BootupType.CLEAN
        elif vm.state is VmState.HIBERNATED:
            bootup = BootupType.RESUME
        else:
            bootup = BootupType.CLEAN
        if options.tier is not None:
            vm.tier = options.tier
        if options.hibernation_timeout_seconds is not None:
            vm.hibernation_timeout_seconds = options.hibernation_timeout_seconds
        if options.automatic_wakeup_config is not None:
            vm.wakeup_http = options.automatic_wakeup_config.http
            vm.wakeup_websocket = options.automatic_wakeup_config.websocket
        self._run(vm, now, cause)
        return bootup

    def _run(self, vm: Vm, now: datetime, cause: str) -> None:
        vm.state = VmState.RUNNING
        vm.state_changed_at = vm.updated_at = now
        vm.state_cause = cause
        vm.session_started_at = now
        vm.ledger.open(vm.tier, now)
        self._running[vm.id] = vm
        self._touch(vm, now)

    def _stop(self, vm: Vm, state: VmState, at: datetime, cause: str) -> None:
        vm.ledger.close(at)
        self._running.pop(vm.id, None)
        vm.idle_entry = -1
        vm.state = state
        vm.state_changed_at = vm.updated_at = at
        vm.state_cause = cause

    def hibernate(self, vm_id: str) -> None:
        self.expire_idle()
        self._stop(self._running_vm(vm_id), VmState.HIBERNATED, self.clock.now(), "api")

    def shutdown(self, vm_id: str) -> None:
        self.expire_idle()
        self._stop(self._running_vm(vm_id), VmState.SHUTDOWN, self.clock.now(), "api")

    def delete(self, vm_id: str) -> None:
        self.expire_idle()
        vm = self._vm(vm_id)
        self._stop(vm, VmState.DELETED, self.clock.now(), "api")
        vm.tokens.clear()

    def update_specs(self, vm_id: str, tier: Tier) -> Vm:
        self.expire_idle()
        vm = self._running_vm(vm_id)
        if tier is not vm.tier:
            vm.tier = tier
            vm.ledger.open(tier, self.clock.now())
        return vm

    def update_hibernation_timeout(self, vm_id: str, seconds: int) -> Vm:
        self.expire_idle()
        vm = self._running_vm(vm_id)
        vm.hibernation_timeout_seconds = seconds
        self._touch(vm, self.clock.now())
        return vm

    def create_session(self, vm_id: str) -> Vm:
        self.expire_idle()
        vm = self._running_vm(vm_id)
        self._touch(vm, self.clock.now())
        return vm

    # --- control-API lifecycle --------------------------------------------------------------

    def touch(self, vm_id: str) -> Vm:
        self.expire_idle()
        vm = self._vm(vm_id)
        if vm.state is not VmState.RUNNING:
            raise Conflict(f"VM {vm_id} is {vm.state}, not running: nothing is connected to it")
        self._touch(vm, self.clock.now())
        return vm

    def wake(self, vm_id: str, *, via: str = "http") -> Vm:
        self.expire_idle()
        vm = self._vm(vm_id)
        if vm.state is not VmState.HIBERNATED:
            raise Conflict(f"VM {vm_id} is {vm.state}; only a hibernated VM wakes up on traffic")
        allowed = vm.wakeup_http if via == "http" else vm.wakeup_websocket
        if not allowed:
            raise Conflict(f"VM {vm_id} does not wake up on {via} traffic")
        self._check_room_for_start()
        self._run(vm, self.clock.now(), "wake")
        return vm

    def all_vms(self) -> list[Vm]:
        self.expire_idle()
        return [vm for vm in self._vms.values() if not vm.is_template]

    def find_vm(self, vm_id: str) -> Vm:
        """Any VM of this workspace, deleted ones included (the control API's view)."""
        self.expire_idle()
        vm = self._vms.get(vm_id)
        if vm is None or vm.is_template:
            raise NotFound(f"VM {vm_id} not found")
        return vm

    # --- reads ------------------------------------------------------------------------------

    @property
    def running_count(self) -> int:
        return len(self._running)

    def list_sandboxes(self, query: ListQuery) -> tuple[list[Vm], int]:
        self.expire_idle()
        wanted = query.tag_filter
        source = self._running.values() if query.status == "running" else self._vms.values()
        matches = [
            vm
            for vm in source
            if not vm.is_template and vm.state is not VmState.DELETED and wanted.issubset(vm.tags)
        ]
        if query.order_by == "inserted_at":
            matches.sort(key=lambda vm: (vm.created_at, vm.seq), reverse=query.direction == "desc")
        else:
            matches.sort(
                key=lambda vm: (vm.updated_at or vm.created_at, vm.seq),
                reverse=query.direction == "desc",
            )
        size = query.effective_page_size
        first = (query.page - 1) * size
        return matches[first : first + size], len(matches)

    def running_body(self) -> bytes:
        """The whole `/vm/running` answer, possibly a snapshot up to the configured staleness."""
        self.expire_idle()
        now = self.clock.now()
        staleness = self.config.running_staleness_seconds
        snapshot = self._running_snapshot
        if (
            staleness > 0
            and snapshot is not None
            and (now - snapshot[0]).total_seconds() < staleness
        ):
            return snapshot[1]
        rows = b",".join(views.running_row(vm) for vm in self._running.values())
        head = json.dumps(
            {
                "concurrent_vm_count": len(self._running),
                "concurrent_vm_limit": self.config.concurrent_vm_limit,
            }
        )
        body = (
            b'{"success":true,"errors":[],"data":'
            + head[:-1].encode()
            + b',"vms":['
            + rows
            + b"]}}"
        )
        self._running_snapshot = (now, body)
        return body

    # --- preview tokens ---------------------------------------------------------------------

    def create_token(self, sandbox_id: str, expires_at: datetime | None) -> PreviewToken:
        self.expire_idle()
        vm = self._vm(sandbox_id)
        token = PreviewToken(
            token_id=f"prv_{secrets.token_hex(8)}",
            token=f"prv_v1_{secrets.token_urlsafe(24)}",
            expires_at=expires_at,
        )
        vm.tokens[token.token_id] = token
        return token

    def list_tokens(self, sandbox_id: str) -> list[PreviewToken]:
        self.expire_idle()
        return list(self._vm(sandbox_id).tokens.values())

    def update_token(
        self, sandbox_id: str, token_id: str, expires_at: datetime | None
    ) -> PreviewToken:
        self.expire_idle()
        token = self._vm(sandbox_id).tokens.get(token_id)
        if token is None:
            raise NotFound(f"Preview token {token_id} not found")
        token.expires_at = expires_at
        return token

    def revoke_tokens(self, sandbox_id: str) -> None:
        """Revoke every token by expiring it now, as the SDK's single revoke does."""
        self.expire_idle()
        now = self.clock.now()
        for token in self._vm(sandbox_id).tokens.values():
            if token.expires_at is None or token.expires_at > now:
                token.expires_at = now
