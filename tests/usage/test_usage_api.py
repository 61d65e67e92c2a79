"""GET /v1/usage and GET /v1/sandboxes/{id}/cost over HTTP: scope, bad input, CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.runtime import Runtime
from tests.fixtures import factories
from tests.usage import rows
from tests.usage.reference import Interval

ADMIN = factories.ADMIN
NOW = datetime.now(UTC).replace(microsecond=0)
WINDOW = {
    "from": (NOW - timedelta(days=3)).isoformat(),
    "to": (NOW + timedelta(days=1)).isoformat(),
}
SANDBOXES = {
    "sbx_alice0000001": ("team-a", "alice"),
    "sbx_bob000000001": ("team-a", "bob"),
    "sbx_carol0000001": ("team-b", "carol"),
}


def interval(n: int, sandbox_id: str, tier: str, start: timedelta, minutes: float) -> Interval:
    team_id, owner = SANDBOXES[sandbox_id]
    started = NOW - start
    rate = rows.LIST_VERSION.rates[tier]
    return Interval(
        id=n,
        sandbox_id=sandbox_id,
        team_id=team_id,
        owner=owner,
        tier=tier,
        started_at=started,
        ended_at=started + timedelta(minutes=minutes),
        price_book_id=1,
        credits_per_hour=rate,
    )


@pytest.fixture
async def ledger(client: httpx.AsyncClient, runtime: Runtime) -> dict[str, dict[str, str]]:
    """Two teams with keys and a few closed intervals over the last two days."""
    keys = {
        "team-a": await factories.team_with_key(client, "team-a"),
        "team-b": await factories.team_with_key(client, "team-b"),
    }
    async with runtime.engine.begin() as conn:
        await rows.sandboxes(conn, SANDBOXES, state="hibernated")
        await rows.intervals(
            conn,
            [
                interval(1, "sbx_alice0000001", "Nano", timedelta(hours=30), 90.5),
                interval(2, "sbx_alice0000001", "Small", timedelta(hours=5), 12),
                interval(3, "sbx_bob000000001", "Pico", timedelta(hours=26), 1500),
                interval(4, "sbx_carol0000001", "XLarge", timedelta(hours=3), 0.25),
            ],
        )
    return keys


async def usage(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> Any:
    response = await client.get("/v1/usage", params={**WINDOW, **params}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


class TestScope:
    async def test_a_team_key_sees_its_own_team_only(
        self, client: httpx.AsyncClient, ledger: dict[str, dict[str, str]]
    ) -> None:
        report = await usage(client, ledger["team-b"], group_by="sandbox")
        assert report["team"] == "team-b"
        assert [r["sandbox"] for r in report["rows"]] == ["sbx_carol0000001"]
        # 15 s of XLarge is one started minute: 320/60 credits.
        assert report["rows"][0]["billed_minutes"] == 1
        assert Decimal(report["total"]["credits"]) == Decimal("5.333333")

    async def test_admins_see_every_team_or_one(
        self, client: httpx.AsyncClient, ledger: dict[str, dict[str, str]]
    ) -> None:
        everyone = await usage(client, ADMIN, group_by="team")
        assert [r["team"] for r in everyone["rows"]] == ["team-a", "team-b"]
        one = await usage(client, ADMIN, group_by="team", team="team-a")
        assert [r["team"] for r in one["rows"]] == ["team-a"]
        assert one["rows"][0] == everyone["rows"][0]

    async def test_a_team_key_cannot_name_another_team(
        self, client: httpx.AsyncClient, ledger: dict[str, dict[str, str]]
    ) -> None:
        response = await client.get(
            "/v1/usage", params={**WINDOW, "team": "team-a"}, headers=ledger["team-b"]
        )
        assert response.status_code == 403
        assert "team-a" not in response.json().get("rows", "")

    async def test_an_owner_bound_key_sees_its_owner_only(
        self, client: httpx.AsyncClient, ledger: dict[str, dict[str, str]]
    ) -> None:
        alice = await factories.key(client, "team-a", owner="alice")
        report = await usage(client, alice, group_by="owner")
        assert [r["owner"] for r in report["rows"]] == ["alice"]

    async def test_usage_read_scope_is_required(
        self, client: httpx.AsyncClient, ledger: dict[str, dict[str, str]]
    ) -> None:
        reader = await factories.key(client, "team-a", scopes=["sandboxes:read"])
        assert (await client.get("/v1/usage", headers=reader)).status_code == 403
        assert (await client.get("/v1/usage")).status_code == 401


class TestFigures:
    async def test_groups_carry_exact_seconds_minutes_credits_and_usd(
        self, client: httpx.AsyncClient, ledger: dict[str, dict[str, str]]
    ) -> None:
        report = await usage(client, ledger["team-a"], group_by=["owner", "tier"])
        by_key = {(r["owner"], r["tier"]): r for r in report["rows"]}
        nano = by_key[("alice", "Nano")]
        # 90.5 minutes → 91 started minutes at 10 credits/h.
        assert (Decimal(nano["seconds"]), nano["billed_minutes"]) == (Decimal(5430), 91)
        assert Decimal(nano["credits"]) == Decimal("15.166667")
        assert Decimal(nano["usd"]) == Decimal("0.225377")  # 910/60 * 0.01486 = 0.2253766…
        pico = by_key[("bob", "Pico")]
        assert (pico["billed_minutes"], Decimal(pico["credits"])) == (1500, Decimal(125))
        assert report["total"]["billed_minutes"] == 91 + 12 + 1500

    async def test_the_window_clips_intervals_and_their_minutes(
        self, client: httpx.AsyncClient, ledger: dict[str, dict[str, str]]
    ) -> None:
        """Bob's Pico ran 1500 minutes from 26 h ago; a window starting 25 h ago keeps the
        minutes that start inside it (1440 of them) and exactly those seconds."""
        params = {"from": (NOW - timedelta(hours=25)).isoformat(), "to": NOW.isoformat()}
        response = await client.get(
            "/v1/usage",
            params={**params, "group_by": "sandbox"},
            headers=ledger["team-a"],
        )
        rows_by_sandbox = {r["sandbox"]: r for r in response.json()["rows"]}
        bob = rows_by_sandbox["sbx_bob000000001"]
        assert (bob["billed_minutes"], Decimal(bob["seconds"])) == (1440, Decimal(1440 * 60))


class TestBadInput:
    @pytest.mark.parametrize(
        "params",
        [
            {"from": "2026-03-02", "to": "2026-03-01"},
            {"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
            {"from": "2025-01-01", "to": "2026-03-01"},
            {"from": "yesterday", "to": "2026-03-01"},
            {"from": "2026-02-30", "to": "2026-03-01"},
            {"group_by": "colour"},
            {"group_by": "team,colour"},
            {"format": "xml"},
            {"team": "Not A Team"},
        ],
    )
    async def test_is_a_422_problem(
        self, client: httpx.AsyncClient, params: dict[str, str]
    ) -> None:
        response = await client.get("/v1/usage", params=params, headers=ADMIN)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")


class TestCsv:
    @pytest.mark.parametrize("how", ["accept", "format"])
    async def test_csv_parsed_back_equals_the_json_rows(
        self, client: httpx.AsyncClient, ledger: dict[str, dict[str, str]], how: str
    ) -> None:
        params: dict[str, Any] = {**WINDOW, "group_by": ["team", "owner", "day", "tier"]}
        headers = dict(ADMIN)
        if how == "accept":
            headers["Accept"] = "text/csv"
        else:
            params["format"] = "csv"
        exported = await client.get("/v1/usage", params=params, headers=headers)
        assert exported.status_code == 200, exported.text
        assert exported.headers["content-type"].startswith("text/csv")
        assert "attachment" in exported.headers["content-disposition"]
        parsed = list(csv.DictReader(io.StringIO(exported.text)))
        report = await usage(client, ADMIN, group_by=["team", "owner", "day", "tier"])
        assert parsed and len(parsed) == len(report["rows"])
        as_json = [{k: "" if v is None else str(v) for k, v in r.items()} for r in report["rows"]]
        assert parsed == as_json
        assert list(parsed[0]) == [
            "team",
            "owner",
            "day",
            "tier",
            "seconds",
            "billed_minutes",
            "credits",
            "usd",
        ]

    async def test_a_team_key_exports_its_own_team_only(
        self, client: httpx.AsyncClient, ledger: dict[str, dict[str, str]]
    ) -> None:
        exported = await client.get(
            "/v1/usage",
            params={**WINDOW, "group_by": "team", "format": "csv"},
            headers=ledger["team-b"],
        )
        assert [r["team"] for r in csv.DictReader(io.StringIO(exported.text))] == ["team-b"]
        refused = await client.get(
            "/v1/usage",
            params={**WINDOW, "team": "team-a", "format": "csv"},
            headers=ledger["team-b"],
        )
        assert refused.status_code == 403


class TestCostStatement:
    async def test_lists_each_interval_with_its_rate_and_price_version(
        self, client: httpx.AsyncClient, ledger: dict[str, dict[str, str]]
    ) -> None:
        statement = (
            await client.get("/v1/sandboxes/sbx_alice0000001/cost", headers=ledger["team-a"])
        ).json()
        assert [line["interval_id"] for line in statement["lines"]] == [1, 2]
        assert [line["tier"] for line in statement["lines"]] == ["Nano", "Small"]
        assert [Decimal(line["credits_per_hour"]) for line in statement["lines"]] == [10, 40]
        assert {line["price_book_id"] for line in statement["lines"]} == {1}
        assert [line["billed_minutes"] for line in statement["lines"]] == [91, 12]
        assert statement["total"]["billed_minutes"] == 103
        assert Decimal(statement["total"]["credits"]) == Decimal("23.166667")  # (910+480)/60

    async def test_another_teams_sandbox_is_not_found(
        self, client: httpx.AsyncClient, ledger: dict[str, dict[str, str]]
    ) -> None:
        response = await client.get("/v1/sandboxes/sbx_alice0000001/cost", headers=ledger["team-b"])
        assert response.status_code == 404
        bob_only = await factories.key(client, "team-a", owner="bob")
        response = await client.get("/v1/sandboxes/sbx_alice0000001/cost", headers=bob_only)
        assert response.status_code == 404
        ok = await client.get("/v1/sandboxes/sbx_alice0000001/cost", headers=ADMIN)
        assert ok.status_code == 200
