"""Reading what the reconciler wrote, for the reconcile tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select

from app.db import transaction
from app.models import AuditEntry, Drift, ReconcileRun, Sandbox, SandboxEvent, UsageInterval
from app.reconcile.service import RunSummary, reconcile_once
from app.runtime import Runtime
from app.upstream.schemas import parse_timestamp


async def reconcile(runtime: Runtime) -> RunSummary:
    return await reconcile_once(runtime, replica="test")


async def sandbox(runtime: Runtime, sandbox_id: str) -> Sandbox:
    async with transaction(runtime.sessions) as session:
        row = await session.get(Sandbox, sandbox_id)
        assert row is not None
        return row


async def by_upstream_id(runtime: Runtime, upstream_id: str) -> list[Sandbox]:
    async with transaction(runtime.sessions) as session:
        return list(
            await session.scalars(select(Sandbox).where(Sandbox.upstream_id == upstream_id))
        )


async def intervals(runtime: Runtime, sandbox_id: str) -> list[UsageInterval]:
    async with transaction(runtime.sessions) as session:
        rows = await session.scalars(
            select(UsageInterval)
            .where(UsageInterval.sandbox_id == sandbox_id)
            .order_by(UsageInterval.started_at, UsageInterval.id)
        )
        return list(rows)


async def events(runtime: Runtime, sandbox_id: str) -> list[SandboxEvent]:
    async with transaction(runtime.sessions) as session:
        rows = await session.scalars(
            select(SandboxEvent)
            .where(SandboxEvent.sandbox_id == sandbox_id)
            .order_by(SandboxEvent.id)
        )
        return list(rows)


async def drifts(runtime: Runtime, kind: str | None = None) -> list[Drift]:
    async with transaction(runtime.sessions) as session:
        query = select(Drift).order_by(Drift.id)
        if kind is not None:
            query = query.where(Drift.kind == kind)
        return list(await session.scalars(query))


async def audits(runtime: Runtime, target: str) -> list[AuditEntry]:
    async with transaction(runtime.sessions) as session:
        rows = await session.scalars(
            select(AuditEntry).where(AuditEntry.target == target).order_by(AuditEntry.id)
        )
        return list(rows)


async def runs(runtime: Runtime) -> list[ReconcileRun]:
    async with transaction(runtime.sessions) as session:
        return list(await session.scalars(select(ReconcileRun).order_by(ReconcileRun.id)))


async def vm(sim: httpx.AsyncClient, vm_id: str) -> dict[str, Any]:
    response = await sim.get(f"/_simulator/vms/{vm_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def vms(sim: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await sim.get("/_simulator/vms")
    assert response.status_code == 200
    return [v for v in response.json()["vms"] if v["state"] != "deleted"]


def at(value: str) -> datetime:
    moment = parse_timestamp(value)
    assert moment is not None
    return moment


async def configure(sim: httpx.AsyncClient, **config: Any) -> None:
    response = await sim.put("/_simulator/config", json=config)
    assert response.status_code == 200, response.text
