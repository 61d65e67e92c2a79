"""The one writer of sandbox transitions, on a real Postgres: what one statement writes (row,
ledger at the price in force, event, audit), the guard that leaves a moved-on row alone, a
batch written exactly as its moves one by one, and that nothing else in app/ writes the ledger
or the events."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, text

from app.db import transaction
from app.models import AuditEntry, PriceBook, Sandbox, SandboxEvent
from app.runtime import Runtime
from app.sandboxes import transitions
from app.sandboxes.states import FINAL, LIVE, STOPPED, SandboxState
from app.sandboxes.transitions import Audit, Move
from tests.fixtures import factories
from tests.reconcile.helpers import intervals as _intervals
from tests.reconcile.helpers import sandbox as _row

APP = Path(__file__).resolve().parents[2] / "app"
TIERS = ("Pico", "Nano", "Micro", "Small", "Medium", "Large", "XLarge")


async def _written(runtime: Runtime, sandbox_id: str) -> tuple[list[Any], list[Any]]:
    async with transaction(runtime.sessions) as session:
        events = await session.scalars(
            select(SandboxEvent)
            .where(SandboxEvent.sandbox_id == sandbox_id)
            .order_by(SandboxEvent.id)
        )
        audits = await session.scalars(
            select(AuditEntry).where(AuditEntry.target == sandbox_id).order_by(AuditEntry.id)
        )
        return (
            [(e.from_state, e.to_state, e.cause, e.actor) for e in events],
            [(a.action, a.actor, a.cause, a.outcome) for a in audits],
        )


def _move(row: Sandbox, to_state: SandboxState, at: datetime, **fields: Any) -> Move:
    values: dict[str, Any] = {
        "sandbox_id": row.id,
        "from_state": SandboxState(row.state),
        "to_state": to_state,
        "tier": row.tier,
        "at": at,
        "cause": "reconciler",
        "actor": "tester",
    }
    values.update(fields)
    return Move(**values)


async def _apply(runtime: Runtime, moves: list[Move]) -> list[str]:
    async with transaction(runtime.sessions) as session:
        return [row["id"] for row in await transitions.apply(session, moves)]


class TestStates:
    def test_the_named_sets_partition_the_states(self) -> None:
        assert set(SandboxState) == LIVE | STOPPED | FINAL
        assert not (LIVE & STOPPED) and not (LIVE & FINAL) and not (STOPPED & FINAL)
        assert SandboxState.UNKNOWN in LIVE  # an uncertain sandbox keeps its slot


class TestMove:
    async def test_a_stop_closes_the_interval_and_writes_event_and_audit(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        row = await _row(runtime, created["id"])
        at = datetime.now(UTC) + timedelta(seconds=30)
        moved = await _apply(
            runtime,
            [_move(row, SandboxState.HIBERNATED, at, audit=Audit("sandbox.hibernate"))],
        )
        assert moved == [row.id]
        after = await _row(runtime, row.id)
        assert (after.state, after.last_cause, after.state_changed_at) == (
            "hibernated",
            "reconciler",
            at,
        )
        [interval] = await _intervals(runtime, row.id)
        assert (interval.ended_at, interval.end_cause) == (at, "reconciler")
        events, audits = await _written(runtime, row.id)
        assert events[-1] == ("running", "hibernated", "reconciler", "tester")
        assert audits[-1] == ("sandbox.hibernate", "tester", "reconciler", "ok")

    async def test_a_row_that_moved_on_is_left_alone(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        row = await _row(runtime, created["id"])
        before = await _written(runtime, row.id)
        at = datetime.now(UTC)
        # Expecting `hibernated` of a running row, and a stale state_changed_at.
        stale = [
            _move(row, SandboxState.RUNNING, at, from_state=SandboxState.HIBERNATED),
            _move(
                row,
                SandboxState.SHUTDOWN,
                at,
                if_changed_at=row.state_changed_at - timedelta(seconds=1),
                audit=Audit("sandbox.shutdown"),
            ),
        ]
        for change in stale:
            assert await _apply(runtime, [change]) == []
        assert (await _row(runtime, row.id)).state == "running"
        assert [i.ended_at for i in await _intervals(runtime, row.id)] == [None]
        assert await _written(runtime, row.id) == before

    async def test_a_split_prices_the_new_interval_by_the_version_in_force(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers, tier="Nano")
        row = await _row(runtime, created["id"])
        now = datetime.now(UTC)
        async with transaction(runtime.sessions) as session:
            session.add(
                PriceBook(
                    effective_from=now + timedelta(seconds=10),
                    credits_per_hour=dict(zip(TIERS, (1, 2, 3, 7, 9, 11, 13), strict=True)),
                    credit_usd=Decimal("0.01"),
                    created_by="test",
                )
            )
        at = now + timedelta(seconds=20)
        await _apply(runtime, [_move(row, SandboxState.RUNNING, at, tier="Small", split=True)])
        first, second = await _intervals(runtime, row.id)
        assert (first.tier, first.ended_at, first.end_cause) == ("Nano", at, "resize")
        assert (second.tier, second.started_at, second.ended_at) == ("Small", at, None)
        assert second.credits_per_hour == Decimal("7")
        after = await _row(runtime, row.id)
        # A split changes the tier, not the state: its time and cause stay.
        assert (after.tier, after.state_changed_at) == ("Small", row.state_changed_at)

    async def test_a_batch_writes_what_its_moves_write_one_by_one(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        headers = await factories.team_with_key(client)
        rows = [
            await _row(runtime, (await factories.sandbox(client, headers))["id"]) for _ in range(4)
        ]
        at = datetime.now(UTC) + timedelta(seconds=5)

        def moves(pair: list[Sandbox]) -> list[Move]:
            stop, resize = pair
            return [
                _move(stop, SandboxState.SHUTDOWN, at, audit=Audit("sandbox.shutdown")),
                _move(resize, SandboxState.RUNNING, at, tier="Micro", split=True),
            ]

        await _apply(runtime, moves(rows[:2]))  # as one batch
        for change in moves(rows[2:]):
            await _apply(runtime, [change])  # one by one

        async def shape(sandbox_id: str) -> tuple[Any, ...]:
            row = await _row(runtime, sandbox_id)
            ledger = [
                (i.tier, i.credits_per_hour, i.started_at == row.created_at, i.ended_at)
                for i in await _intervals(runtime, sandbox_id)
            ]
            return (row.state, row.tier, ledger, await _written(runtime, sandbox_id))

        assert await shape(rows[0].id) == await shape(rows[2].id)
        assert await shape(rows[1].id) == await shape(rows[3].id)


class TestOneWriter:
    """No code but the transitions module writes the ledger or a sandbox's events."""

    WRITES = re.compile(
        r"INSERT INTO (usage_intervals|sandbox_events)|UPDATE usage_intervals"
        r"|insert\((UsageInterval|SandboxEvent)|update\(UsageInterval"
        r"|table_of\((UsageInterval|SandboxEvent)\)|(?<!class )(UsageInterval|SandboxEvent)\("
    )

    def test_only_transitions_writes_intervals_and_events(self) -> None:
        writers = sorted(
            str(path.relative_to(APP))
            for path in APP.rglob("*.py")
            if self.WRITES.search(path.read_text())
        )
        assert writers == ["sandboxes/transitions.py"]

    async def test_the_database_agrees_after_every_verb(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        """An interval is open exactly while a sandbox is running (no sandbox here is `unknown`),
        whichever verb moved it."""
        headers = await factories.team_with_key(client)
        created = await factories.sandbox(client, headers)
        sandbox_id = created["id"]
        for verb in ("hibernate", "start", "restart", "shutdown", "start"):
            response = await client.post(f"/v1/sandboxes/{sandbox_id}/{verb}", headers=headers)
            assert response.status_code == 200, (verb, response.text)
        response = await client.patch(
            f"/v1/sandboxes/{sandbox_id}", json={"tier": "Micro"}, headers=headers
        )
        assert response.status_code == 200
        response = await client.delete(f"/v1/sandboxes/{sandbox_id}", headers=headers)
        assert response.status_code == 200
        async with transaction(runtime.sessions) as session:
            broken = (
                await session.execute(
                    text(
                        "SELECT s.id FROM sandboxes s WHERE s.state <> 'unknown'"
                        " AND (s.state = 'running') <>"
                        " EXISTS (SELECT 1 FROM usage_intervals i"
                        "         WHERE i.sandbox_id = s.id AND i.ended_at IS NULL)"
                    )
                )
            ).all()
        assert broken == []
        events, audits = await _written(runtime, sandbox_id)
        assert [a[0] for a in audits] == [
            "sandbox.create",
            "sandbox.hibernate",
            "sandbox.start",
            "sandbox.shutdown",
            "sandbox.restart",
            "sandbox.shutdown",
            "sandbox.start",
            "sandbox.update",
            "sandbox.shutdown",
            "sandbox.delete",
        ]
        # One interval per stretch running (four starts), and one more for the resize.
        assert len(await _intervals(runtime, sandbox_id)) == 5
        assert events[-1][:2] == ("shutdown", "deleted")


async def test_a_settle_waiting_for_a_move_sees_the_interval_that_move_opened(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Read Committed: a single statement that waits for a row lock updates the row as left,
    but reads the ledger as of before the wait. `settle` locks first, so the interval a racing
    start opened is the one it closes."""
    import asyncio

    headers = await factories.team_with_key(client)
    created = await factories.sandbox(client, headers, start=False)
    async with runtime.sessions() as session, session.begin():
        row = await session.get(Sandbox, created["id"], with_for_update=True)
        assert row is not None
        await transitions.move(session, row, SandboxState.RUNNING, cause="api", actor="a")
        stop = asyncio.create_task(
            transitions.settle(
                runtime.engine,
                _move(row, SandboxState.SHUTDOWN, datetime.now(UTC) + timedelta(seconds=1)),
            )
        )
        await asyncio.sleep(0.2)  # the settle is waiting for the row
        assert not stop.done()
    settled = await stop
    assert settled is not None and settled.state == "shutdown"
    assert [i.ended_at is None for i in await _intervals(runtime, created["id"])] == [False]
