"""The price book: admin reads and writes, validation, and how versions price intervals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.models import AuditEntry, UsageInterval
from app.runtime import Runtime
from app.tiers import TIERS
from tests.fixtures import factories
from tests.usage import rows
from tests.usage.reference import Interval, Version

ADMIN = factories.ADMIN


def version_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "credits_per_hour": {tier: str(5 * 2**n + 1) for n, tier in enumerate(TIERS)},
        "credit_usd": "0.02",
        "effective_from": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
    }
    body.update(overrides)
    return body


class TestReadAndWrite:
    async def test_admins_see_the_seeded_list_prices(self, client: httpx.AsyncClient) -> None:
        book = (await client.get("/v1/admin/prices", headers=ADMIN)).json()
        assert book["current"]["effective_from"] == "1970-01-01T00:00:00Z"
        assert {t: Decimal(r) for t, r in book["current"]["credits_per_hour"].items()} == {
            "Pico": 5,
            "Nano": 10,
            "Micro": 20,
            "Small": 40,
            "Medium": 80,
            "Large": 160,
            "XLarge": 320,
        }
        assert Decimal(book["current"]["credit_usd"]) == Decimal("0.01486")
        assert len(book["versions"]) == 1

    async def test_a_future_version_is_history_not_current_until_it_takes_effect(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await client.put("/v1/admin/prices", json=version_body(), headers=ADMIN)
        assert created.status_code == 201, created.text
        assert created.json()["credits_per_hour"]["Pico"] == "6"
        book = (await client.get("/v1/admin/prices", headers=ADMIN)).json()
        assert book["current"]["id"] == 1
        assert [v["id"] for v in book["versions"]] == [1, created.json()["id"]]
        async with runtime.sessions() as session:
            audit = (
                await session.scalars(
                    select(AuditEntry).where(AuditEntry.action == "price_book.create")
                )
            ).one()
        assert audit.target == str(created.json()["id"])

    async def test_a_version_without_effective_from_takes_effect_now(
        self, client: httpx.AsyncClient
    ) -> None:
        body = version_body()
        del body["effective_from"]
        created = await client.put("/v1/admin/prices", json=body, headers=ADMIN)
        assert created.status_code == 201, created.text
        book = (await client.get("/v1/admin/prices", headers=ADMIN)).json()
        assert book["current"]["id"] == created.json()["id"]

    async def test_the_same_effective_from_twice_is_a_conflict(
        self, client: httpx.AsyncClient
    ) -> None:
        body = version_body()
        assert (await client.put("/v1/admin/prices", json=body, headers=ADMIN)).status_code == 201
        again = await client.put("/v1/admin/prices", json=body, headers=ADMIN)
        assert again.status_code == 409
        assert again.json()["type"].endswith("price-version-exists")

    @pytest.mark.parametrize(
        "change",
        [
            {"credits_per_hour": {"Pico": "5"}},
            {"credits_per_hour": {**{t: "1" for t in TIERS}, "Huge": "9"}},
            {"credits_per_hour": {**{t: "1" for t in TIERS}, "Nano": "0"}},
            {"credits_per_hour": {**{t: "1" for t in TIERS}, "Nano": "-3"}},
            {"credits_per_hour": {**{t: "1" for t in TIERS}, "Nano": "1.00001"}},
            {"credits_per_hour": {**{t: "1" for t in TIERS}, "Nano": "NaN"}},
            {"credit_usd": "0"},
            {"credit_usd": "0.0000001"},
            {"effective_from": "2020-01-01T00:00:00Z"},
            {"effective_from": "2099-01-01T00:00:00"},
            {"effective_from": "tomorrow"},
            {"surprise": True},
        ],
    )
    async def test_bad_versions_are_refused_and_change_nothing(
        self, client: httpx.AsyncClient, change: dict[str, Any]
    ) -> None:
        response = await client.put("/v1/admin/prices", json=version_body(**change), headers=ADMIN)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        book = (await client.get("/v1/admin/prices", headers=ADMIN)).json()
        assert len(book["versions"]) == 1

    async def test_only_admins_read_or_change_prices(self, client: httpx.AsyncClient) -> None:
        team = await factories.team_with_key(client, "team-a")
        assert (await client.get("/v1/admin/prices", headers=team)).status_code == 403
        put = await client.put("/v1/admin/prices", json=version_body(), headers=team)
        assert put.status_code == 403
        assert (await client.get("/v1/admin/prices")).status_code == 401
        assert (await client.put("/v1/admin/prices", json=version_body())).status_code == 401


class TestPricing:
    async def test_a_new_interval_records_the_version_in_force(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        body = version_body()
        del body["effective_from"]
        version = (await client.put("/v1/admin/prices", json=body, headers=ADMIN)).json()
        team = await factories.team_with_key(client, "team-a")
        sandbox = await factories.sandbox(client, team, tier="Micro")
        async with runtime.sessions() as session:
            interval = (
                await session.scalars(
                    select(UsageInterval).where(UsageInterval.sandbox_id == sandbox["id"])
                )
            ).one()
        assert interval.price_book_id == version["id"]
        assert interval.credits_per_hour == Decimal(version["credits_per_hour"]["Micro"])

    async def test_an_interval_opened_after_a_new_version_records_it(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        # The first interval is priced from the book as it was, and a settle keeps that read
        # until the book changes: the version added next must price the next interval.
        team = await factories.team_with_key(client, "team-a")
        sandbox = await factories.sandbox(client, team, tier="Micro")
        body = version_body()
        del body["effective_from"]
        version = (await client.put("/v1/admin/prices", json=body, headers=ADMIN)).json()
        for verb in ("hibernate", "start"):
            response = await client.post(f"/v1/sandboxes/{sandbox['id']}/{verb}", headers=team)
            assert response.status_code == 200, response.text
        async with runtime.sessions() as session:
            first, second = (
                await session.scalars(
                    select(UsageInterval)
                    .where(UsageInterval.sandbox_id == sandbox["id"])
                    .order_by(UsageInterval.started_at)
                )
            ).all()
        assert first.price_book_id != version["id"]
        assert second.price_book_id == version["id"]
        assert second.credits_per_hour == Decimal(version["credits_per_hour"]["Micro"])

    async def test_an_interval_across_a_price_change_is_split_there(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        """Minute starts before the change are at the old rate, the rest at the new one, and
        the past is not repriced: the interval keeps its own rate and version."""
        team = await factories.team_with_key(client, "team-a")
        now = datetime.now(UTC).replace(microsecond=0)
        started = now - timedelta(hours=2)
        change = started + timedelta(minutes=60, seconds=30)
        new = Version(
            id=50,
            effective_from=change,
            rates={t: Decimal(r) * 2 for t, r in rows.LIST_VERSION.rates.items()},
            credit_usd=Decimal("0.02"),
        )
        async with runtime.engine.begin() as conn:
            await rows.sandboxes(conn, {"sbx_split0000001": ("team-a", None)})
            await rows.versions(conn, [new])
            await rows.intervals(
                conn,
                [
                    Interval(
                        id=1,
                        sandbox_id="sbx_split0000001",
                        team_id="team-a",
                        owner=None,
                        tier="Nano",
                        started_at=started,
                        ended_at=started + timedelta(minutes=90),
                        price_book_id=1,
                        credits_per_hour=Decimal(10),
                    )
                ],
            )
        statement = (await client.get("/v1/sandboxes/sbx_split0000001/cost", headers=team)).json()
        old_line, new_line = statement["lines"]
        assert (old_line["price_book_id"], new_line["price_book_id"]) == (1, 50)
        assert old_line["to"] == new_line["from"] == change.isoformat().replace("+00:00", "Z")
        # Minutes starting at 0..60 min (61 of them) precede the change at 60:30.
        assert (old_line["billed_minutes"], new_line["billed_minutes"]) == (61, 29)
        assert Decimal(old_line["seconds"]) == 3630
        assert Decimal(old_line["credits"]) == Decimal("10.166667")  # 61 * 10/60
        assert Decimal(new_line["credits"]) == Decimal("9.666667")  # 29 * 20/60
        assert Decimal(old_line["credits_per_hour"]) == 10
        assert Decimal(new_line["credits_per_hour"]) == 20
        total = statement["total"]
        assert total["billed_minutes"] == 90
        assert Decimal(total["credits"]) == Decimal("19.833333")  # (610 + 580) / 60
        # USD: 610/60 * 0.01486 + 580/60 * 0.02 = 0.151076… + 0.193333… = 0.344410
        assert Decimal(total["usd"]) == Decimal("0.344410")
        sandbox_view = (await client.get("/v1/sandboxes/sbx_split0000001", headers=team)).json()
        assert Decimal(sandbox_view["accrued"]["credits"]) == Decimal("19.833333")
