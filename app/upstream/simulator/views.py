"""JSON renderings of simulator objects: the upstream's wire shapes and the control API's views.

Timestamps are ISO-8601 UTC with microseconds and a `Z` (CONTRACT §2.11 leaves the format of
`/vm/running` open; the spec says `date-time`). `reconnect_token` is a string, as the spec
requires, although the real upstream was observed sending `null`.
"""

import json
import secrets
from datetime import UTC, datetime
from typing import Any

from app.upstream.simulator.ledger import credits_from_credit_minutes
from app.upstream.simulator.tiers import TIER_SPECS
from app.upstream.simulator.vm import BootupType, PreviewToken, Vm

API_VERSION = "2023-07-01"
PITCHER_VERSION = "0.310.2"
LATEST_PITCHER_VERSION = "1.350.3"
PITCHER_MANAGER_VERSION = "1.47.0"
WORKSPACE_PATH = "/project/sandbox"
USER_WORKSPACE_PATH = "/project/workspace"
SESSION_CAPABILITIES = ["fs", "git", "port", "shell", "setup", "system", "task"]

Json = dict[str, Any]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)


def pitcher_url(vm: Vm, cluster: str) -> str:
    return f"wss://{vm.id}.{cluster}.pitcher.simulator.invalid"


def sandbox_json(vm: Vm) -> Json:
    return {
        "id": vm.id,
        "title": vm.title,
        "description": vm.description,
        "privacy": vm.privacy,
        "is_frozen": vm.is_frozen,
        "tags": list(vm.tags),
        "settings": {"use_pint": False},
        "created_at": iso(vm.created_at),
        "updated_at": iso(vm.updated_at or vm.created_at),
    }


def start_json(vm: Vm, bootup: BootupType, cluster: str) -> Json:
    # A CLEAN or FORK boot runs the latest agent; a resumed VM keeps the one it had.
    fresh = bootup in (BootupType.CLEAN, BootupType.FORK)
    return {
        "id": vm.id,
        "bootup_type": bootup.value,
        "cluster": cluster,
        "pitcher_url": pitcher_url(vm, cluster),
        "pitcher_token": secrets.token_urlsafe(32),
        "reconnect_token": secrets.token_urlsafe(16),
        "workspace_path": WORKSPACE_PATH,
        "user_workspace_path": USER_WORKSPACE_PATH,
        "pitcher_version": LATEST_PITCHER_VERSION if fresh else PITCHER_VERSION,
        "latest_pitcher_version": LATEST_PITCHER_VERSION,
        "pitcher_manager_version": PITCHER_MANAGER_VERSION,
        "use_pint": False,
    }


def session_json(vm: Vm, session_id: str, permission: str, cluster: str) -> Json:
    return {
        "username": session_id,
        "pitcher_token": secrets.token_urlsafe(32),
        "pitcher_url": pitcher_url(vm, cluster),
        "user_workspace_path": USER_WORKSPACE_PATH,
        "capabilities": list(SESSION_CAPABILITIES),
        "permissions": {"read": True, "write": permission == "write"},
    }


def running_row(vm: Vm) -> bytes:
    """One `/vm/running` item, cached on the VM until a value it shows changes."""
    key: tuple[object, ...] = (vm.tier, vm.last_active_at, vm.session_started_at)
    cached = vm.running_row
    if cached is not None and cached[0] == key:
        return cached[1]
    spec = TIER_SPECS[vm.tier]
    row = json.dumps(
        {
            "id": vm.id,
            "last_active_at": iso_or_none(vm.last_active_at),
            "session_started_at": iso_or_none(vm.session_started_at),
            "credit_basis": str(spec.credits_per_hour),
            "specs": {"cpu": spec.cpu, "memory": spec.memory_gib, "storage": spec.storage_gb},
        },
        separators=(",", ":"),
    ).encode()
    vm.running_row = (key, row)
    return row


def token_json(token: PreviewToken, *, with_secret: bool = False) -> Json:
    body: Json = {
        "token_id": token.token_id,
        "token_prefix": token.token_prefix,
        "expires_at": iso_or_none(token.expires_at),
        "last_used_at": iso_or_none(token.last_used_at),
    }
    if with_secret:
        body["token"] = token.token
    return body


def ledger_json(vm: Vm, now: datetime) -> Json:
    stretches = []
    total_seconds = 0.0
    total_minutes = 0
    total_credit_minutes = 0
    for stretch in vm.ledger.stretches:
        seconds = stretch.duration(now).total_seconds()
        minutes = stretch.billed_minutes(now)
        credit_minutes = stretch.credit_minutes(now)
        total_seconds += seconds
        total_minutes += minutes
        total_credit_minutes += credit_minutes
        stretches.append(
            {
                "tier": stretch.tier.value,
                "credits_per_hour": TIER_SPECS[stretch.tier].credits_per_hour,
                "started_at": iso(stretch.started_at),
                "ended_at": iso_or_none(stretch.ended_at),
                "seconds": seconds,
                "billed_minutes": minutes,
                "credit_minutes": credit_minutes,
                "credits": credits_from_credit_minutes(credit_minutes),
            }
        )
    return {
        "stretches": stretches,
        "seconds": total_seconds,
        "billed_minutes": total_minutes,
        "credit_minutes": total_credit_minutes,
        "credits": credits_from_credit_minutes(total_credit_minutes),
    }


def vm_control_json(vm: Vm, now: datetime) -> Json:
    ledger = ledger_json(vm, now)
    return {
        "id": vm.id,
        "origin": vm.origin,
        "state": vm.state.value,
        "state_cause": vm.state_cause,
        "tier": vm.tier.value,
        "title": vm.title,
        "tags": list(vm.tags),
        "hibernation_timeout_seconds": vm.hibernation_timeout_seconds,
        "automatic_wakeup": {"http": vm.wakeup_http, "websocket": vm.wakeup_websocket},
        "created_at": iso(vm.created_at),
        "updated_at": iso_or_none(vm.updated_at),
        "state_changed_at": iso_or_none(vm.state_changed_at),
        "session_started_at": iso_or_none(vm.session_started_at),
        "last_active_at": iso_or_none(vm.last_active_at),
        "idle_deadline": iso_or_none(vm.idle_deadline),
        "ledger": ledger,
        "billed_minutes": ledger["billed_minutes"],
        "credits": ledger["credits"],
    }
