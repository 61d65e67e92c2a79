"""The dashboard's pages show what the API gives for the same data, and change things only
through the API's own services (with the same audit rows)."""

from __future__ import annotations

import fnmatch
import itertools
import tomllib
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import insert, select

from app import clock
from app.dashboard import concurrency, formatting
from app.models import AuditEntry
from app.runtime import Runtime
from app.usage import periods
from tests.conftest import ADMIN_KEY
from tests.dashboard import Node, bearer, figures, parse, post_forms, signed_in, table
from tests.fixtures import factories
from tests.fixtures.budget import spend
from tests.usage import rows
from tests.usage.reference import Interval

ROOT = Path(__file__).resolve().parents[2]


async def freeze(sim: httpx.AsyncClient) -> datetime:
    """Stop Corral's clock (it follows the simulator's), so a page and an API call that come
    one after the other see the same instant."""
    assert (await sim.post("/_simulator/clock/freeze")).status_code == 200
    return clock.now()


async def page_of(client: httpx.AsyncClient, path: str, status: int = 200) -> Node:
    response = await client.get(path)
    assert response.status_code == status, (path, response.text[:2000])
    return parse(response.text)


async def audits(runtime: Runtime, action: str) -> list[AuditEntry]:
    async with runtime.sessions() as session:
        found = await session.scalars(
            select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        )
        return list(found)


class TestFormatting:
    def test_credits_keep_two_to_four_decimals_with_separators(self) -> None:
        assert formatting.credits(Decimal("1234.5")) == "1,234.50"
        assert formatting.credits(Decimal("0.083333")) == "0.0833"
        assert formatting.credits(Decimal("0.00005")) == "0.0001"
        assert formatting.credits(12) == "12.00"
        assert formatting.credits(Decimal("-3.125")) == "-3.125"
        assert formatting.credits(None) == "—"

    def test_dollars_are_cents(self) -> None:
        assert formatting.usd(Decimal("1234.565")) == "$1,234.57"
        assert formatting.usd(Decimal("0.004")) == "$0.00"
        assert formatting.usd(Decimal("-1.5")) == "-$1.50"

    def test_durations_are_hours_and_minutes(self) -> None:
        assert formatting.duration(Decimal("12.9")) == "12 s"
        assert formatting.duration(59 * 60 + 59) == "59 min"
        assert formatting.duration(3 * 3600 + 5 * 60 + 30) == "3 h 05 min"
        assert formatting.duration(50 * 3600) == "50 h 00 min"

    def test_an_instant_is_local_with_utc_in_the_title(self) -> None:
        moment = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        shown = str(formatting.when(moment, ZoneInfo("Europe/Paris")))
        assert shown == (
            '<time datetime="2026-03-01T12:00:00Z" title="2026-03-01 12:00:00 UTC">'
            "2026-03-01 13:00:00 CET</time>"
        )


class TestConcurrencySweep:
    """The peak concurrency per bucket, swept from hand-made intervals: what ran at once, at
    every moment, and nothing that did not."""

    def test_peaks_carry_a_level_into_buckets_without_instants(self) -> None:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        row = lambda bucket, peak, net, offset: SimpleNamespace(  # noqa: E731
            bucket=start + timedelta(seconds=10 * bucket),
            peak=peak,
            net=net,
            first_at=start + timedelta(seconds=offset),
        )
        found = concurrency.peaks(
            # bucket 0: up to 3 (net 3); bucket 2: at its very start 3 end and 1 begins
            [row(0, 3, 3, 5), row(2, 1, -2, 20)],
            start=start,
            width_seconds=10,
            buckets=4,
        )
        assert [p.peak for p in found] == [3, 3, 1, 1]
        assert [p.start for p in found][1] == start + timedelta(seconds=10)

    async def test_the_sweep_counts_every_moment_and_only_real_overlaps(
        self, runtime: Runtime
    ) -> None:
        window = concurrency.WINDOWS["24h"]
        at = datetime.now(UTC)
        start, end = concurrency.span(window, at)
        s = lambda seconds: start + timedelta(seconds=seconds)  # noqa: E731
        spans = {
            "a": ("t1", start - timedelta(hours=1), s(150)),  # began before the window
            "b": ("t1", s(100), s(200)),
            "c": ("t1", s(150), s(400)),  # starts as `a` ends: never both at once
            "d": ("t1", s(500), s(500)),  # zero length: never ran
            "e": ("t1", s(600), s(601)),  # one second inside a five-minute bucket
            "g1": ("t1", s(700), s(1200)),
            "g2": ("t1", s(700), s(1200)),
            "g3": ("t1", s(700), s(1200)),
            "h": ("t1", s(1200), s(1260)),  # starts as the three end, at a bucket's start
            "i": ("t1", s(3000), None),  # still running
            "j": ("t2", s(3000), s(3300)),
            "k": ("t1", start - timedelta(hours=2), start - timedelta(hours=1)),
        }
        sandbox_ids = {name: f"sbx_{uuid.uuid4().hex[:12]}" for name in spans}
        async with runtime.engine.begin() as conn:
            await rows.teams(conn, ["t1", "t2"])
            await rows.sandboxes(
                conn, {sandbox_ids[n]: (team, None) for n, (team, _, _) in spans.items()}
            )
            await rows.intervals(
                conn,
                [
                    Interval(
                        id=n + 1,
                        sandbox_id=sandbox_ids[name],
                        team_id=team,
                        owner=None,
                        tier="Nano",
                        started_at=began,
                        ended_at=ended,
                        price_book_id=1,
                        credits_per_hour=Decimal(10),
                    )
                    for n, (name, (team, began, ended)) in enumerate(spans.items())
                ],
            )
        expected = [2, 1, 3, 3, 1, 0, 0, 0, 0, 0, 2, 1] + [1] * (window.buckets - 12)
        async with runtime.sessions() as session:
            org = await concurrency.series(session, window, at)
            team = await concurrency.series(session, window, at, team_id="t1")
        assert [p.peak for p in org] == expected
        assert [p.peak for p in team] == [*expected[:10], 1, 1, *expected[12:]]
        assert org[0].start == start and org[-1].start == end - timedelta(seconds=300)
        # The same, by brute force: the level during every stretch between two instants.
        instants = sorted(
            {start, end}
            | {t for _, b, e in spans.values() for t in (b, e) if t is not None and start < t < end}
        )
        brute = [0] * window.buckets
        for lo, hi in itertools.pairwise(instants):
            level = sum(1 for _, b, e in spans.values() if b <= lo and (e is None or e >= hi))
            first = int((lo - start).total_seconds()) // window.width_seconds
            last = (int((hi - start).total_seconds()) - 1) // window.width_seconds
            for bucket in range(first, last + 1):
                brute[bucket] = max(brute[bucket], level)
        assert [p.peak for p in org] == brute

    async def test_the_overview_chart_is_the_sweep(
        self, client: httpx.AsyncClient, runtime: Runtime, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client, "search-ui")
        for _ in range(3):
            await factories.sandbox(client, headers)
        at = await freeze(sim)
        await signed_in(client, ADMIN_KEY)
        page = await page_of(client, "/dashboard?window=7d")
        shown = page.by_id("concurrency-table").find("tbody").find_all("tr")
        async with runtime.sessions() as session:
            series = await concurrency.series(session, concurrency.WINDOWS["7d"], at)
        assert len(shown) == 336
        assert [int(r.attrs["data-x"]) for r in shown] == [int(p.start.timestamp()) for p in series]
        assert [r.attrs["data-y"] for r in shown] == [f"{p.peak},250" for p in series]
        assert series[-1].peak == 3

    async def test_an_unknown_window_is_refused(self, client: httpx.AsyncClient) -> None:
        await signed_in(client, ADMIN_KEY)
        await page_of(client, "/dashboard?window=1y", 422)


class TestOverview:
    async def test_the_figures_are_the_apis(
        self,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        sim: httpx.AsyncClient,
        runtime: Runtime,
    ) -> None:
        search = await factories.team_with_key(client, "search-ui", max_concurrent=5)
        billing = await factories.team_with_key(client, "billing")
        await factories.sandbox(client, search, tier="Small")
        stopped = await factories.sandbox(client, search)
        await factories.sandbox(client, billing, tier="Micro")
        await client.post(f"/v1/sandboxes/{stopped['id']}/hibernate", headers=search)
        await sim.post("/_simulator/vms", json={"tier": "Pico"})
        assert (await client.post("/v1/admin/reconciliation/run", headers=admin)).status_code == 200
        at = await freeze(sim)
        await signed_in(client, ADMIN_KEY)
        shown = figures(await page_of(client, "/dashboard"))

        plan = (await client.get("/v1/admin/plan", headers=admin)).json()
        org = (await client.get("/v1/quota?team=search-ui", headers=admin)).json()["org"]
        # The reconciler saw the simulator's own limit, 10: the effective limit is the smaller.
        assert shown["effective-limit"] == str(plan["effective_limit"]) == "10"
        assert shown["live"] == str(org["live"]) == "3"
        assert shown["headroom"] == str(org["headroom"]) == "7"
        running = (await client.get("/v1/sandboxes?state=running", headers=admin)).json()
        assert shown["running"] == str(len(running["items"])) == "3"
        assert shown["starting"] == "0"
        scrape = (await client.get("/metrics", headers=admin)).text
        assert f"corral_unmanaged_sandboxes {float(shown['unmanaged'])}" in scrape
        assert shown["unmanaged"] == "1"
        burns = [
            Decimal(
                (await client.get(f"/v1/quota?team={t}", headers=admin)).json()["usage"][
                    "burn_credits_per_hour"
                ]
            )
            for t in ("search-ui", "billing", "unassigned")
        ]
        assert Decimal(shown["burn-rate"]) == sum(burns) == Decimal(40 + 20 + 5)
        usage = (await client.get("/v1/usage", headers=admin)).json()
        assert Decimal(shown["month-spend"]) == Decimal(usage["total"]["credits"])
        tz = runtime.settings.budget_timezone
        hours_left = Decimal(
            str((periods.next_month_start(at, tz) - at).total_seconds())
        ) / Decimal(3600)
        forecast = Decimal(usage["total"]["credits"]) + sum(burns) * hours_left
        assert Decimal(shown["month-forecast"]) == forecast.quantize(Decimal("0.000001"))

        live = (await client.get("/dashboard/live/overview")).json()
        assert {name: f["value"] for name, f in live["figures"].items()} == {
            name: shown[name] for name in live["figures"]
        }
        assert live["figures"]["burn-rate"]["text"] == "65.00 credits /h"

    async def test_teams_near_and_over_budget_are_listed(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await factories.team(client, "over", monthly_budget_credits="10")
        await factories.team(
            client, "near", monthly_budget_credits="100", budget_soft_threshold="0.5"
        )
        await factories.team(client, "eighty", monthly_budget_credits="60")
        await factories.team(client, "fine", monthly_budget_credits="1000")
        for team, seconds in (("over", 600), ("near", 900), ("eighty", 600), ("fine", 600)):
            sandbox_id = f"sbx_{uuid.uuid4().hex[:12]}"
            async with runtime.engine.begin() as conn:
                await rows.sandboxes(conn, {sandbox_id: (team, None)}, state="hibernated")
            # An XLarge costs 320 credits an hour: 10 minutes are 53.33 credits, 15 are 80.
            await spend(runtime, sandbox_id, team, seconds=seconds)
        await signed_in(client, ADMIN_KEY)
        listed = table(await page_of(client, "/dashboard"), "near-budget-table")
        assert [(row[0], row[-1]) for row in listed] == [
            ("over", "over"),
            ("eighty", "near"),
            ("near", "near"),
        ]

    async def test_refusals_show_the_audit_log_and_this_replicas_counters(
        self, client: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        full = await factories.team_with_key(client, "billing", max_concurrent=1)
        await factories.sandbox(client, full)
        refused = await client.post("/v1/sandboxes", json={}, headers=full)
        assert refused.status_code == 429 and refused.json()["limit"] == "max_concurrent"
        # Refused by the hourly meter: the one refusal the audit log records.
        headers = await factories.team_with_key(client, "search-ui", hourly_starts=1)
        sandbox = await factories.sandbox(client, headers)
        await client.post(f"/v1/sandboxes/{sandbox['id']}/hibernate", headers=headers)
        limited = await client.post(f"/v1/sandboxes/{sandbox['id']}/start", headers=headers)
        assert limited.status_code == 429
        assert limited.json()["type"].endswith("/upstream-work-limited")
        await signed_in(client, ADMIN_KEY)
        page = await page_of(client, "/dashboard")
        [row] = table(page, "refusals-table")
        assert row[1:] == ["search-ui", "sandbox.start", sandbox["id"], "hourly_starts"]
        counters = {r[0]: int(r[1]) for r in table(page, "replica-refusals-table")}
        assert counters["max_concurrent"] >= 1

    async def test_a_team_keys_chart_is_its_own(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        mine = await factories.team_with_key(client, "search-ui", max_concurrent=4)
        theirs = await factories.team_with_key(client, "billing")
        await factories.sandbox(client, mine)
        await factories.sandbox(client, theirs)
        await factories.sandbox(client, theirs)
        await freeze(sim)
        await signed_in(client, bearer(mine))
        shown = (await page_of(client, "/dashboard")).by_id("concurrency-table").find("tbody")
        assert shown.find_all("tr")[-1].attrs["data-y"] == "1,4"


class TestTeams:
    async def test_the_table_shows_every_teams_figures(
        self, client: httpx.AsyncClient, admin: dict[str, str], sim: httpx.AsyncClient
    ) -> None:
        search = await factories.team_with_key(
            client, "search-ui", max_concurrent=5, monthly_budget_credits="1000"
        )
        billing = await factories.team_with_key(client, "billing", max_tier="Small")
        await factories.sandbox(client, search, tier="Medium")
        await factories.sandbox(client, search)
        await factories.sandbox(client, billing)
        await freeze(sim)
        await signed_in(client, ADMIN_KEY)
        page = await page_of(client, "/dashboard/teams")
        by_team = {
            tr.attrs["data-team"]: tr
            for tr in page.by_id("teams-table").find("tbody").find_all("tr")
        }
        assert set(by_team) == {"search-ui", "billing", "unassigned"}
        usage = (await client.get("/v1/usage?group_by=team", headers=admin)).json()["rows"]
        spent = {row["team"]: Decimal(row["credits"]) for row in usage}
        for team_id in ("search-ui", "billing"):
            quota = (await client.get(f"/v1/quota?team={team_id}", headers=admin)).json()
            row = by_team[team_id]
            assert row.find("td", data_running=str(quota["usage"]["running"]))
            burn = next(td for td in row.find_all("td") if "data-burn" in td.attrs)
            assert Decimal(burn.attrs["data-burn"]) == Decimal(
                quota["usage"]["burn_credits_per_hour"]
            )
            cell = next(td for td in row.find_all("td") if "data-spent" in td.attrs)
            assert Decimal(cell.attrs["data-spent"]) == spent[team_id]
        meter = by_team["search-ui"].find("meter")
        assert meter.attrs["max"] == "1000"
        assert Decimal(meter.attrs["value"]) == spent["search-ui"]
        assert "of 1,000.00 credits" in by_team["search-ui"].text
        assert "no budget" in by_team["billing"].text
        assert by_team["billing"].find_all("td")[2].text == "Small"

    async def test_a_teams_page_shows_its_spend_owners_sandboxes_and_keys(
        self, client: httpx.AsyncClient, admin: dict[str, str], sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client, "search-ui")
        made = [
            await factories.sandbox(client, headers, owner=owner, tier=tier)
            for owner, tier in (("alice@corp", "Large"), ("bob@corp", "Nano"), ("bob@corp", "Nano"))
        ]
        await freeze(sim)
        await signed_in(client, ADMIN_KEY)
        page = await page_of(client, "/dashboard/teams/search-ui")
        by_day = (await client.get("/v1/usage?group_by=day&team=search-ui", headers=admin)).json()[
            "rows"
        ]
        spend_rows = table(page, "spend-table")
        assert [r[0] for r in spend_rows] == [row["day"] for row in by_day]
        assert [r[3] for r in spend_rows] == [
            formatting.credits(Decimal(row["credits"])) for row in by_day
        ]
        owners = [r[0] for r in table(page, "owners-table")]
        assert owners == ["alice@corp", "bob@corp"]
        listed = [r[0] for r in table(page, "team-sandboxes-table")]
        assert sorted(listed) == sorted(s["id"] for s in made)
        keys = (await client.get("/v1/admin/teams/search-ui/keys", headers=admin)).json()
        assert [r[0] for r in table(page, "keys-table")] == [k["id"] for k in keys]
        form = page.by_id("team-limits-form")
        names = {i.attrs["name"] for i in form.find_all("input") + form.find_all("select")}
        assert names == {
            "csrf_token",
            "max_concurrent",
            "max_concurrent_per_owner",
            "max_tier",
            "max_credits_per_hour",
            "guaranteed",
            "monthly_budget_credits",
            "budget_policy",
            "budget_soft_threshold",
            "budget_thresholds",
        }

    async def test_editing_limits_is_the_apis_patch_with_its_audit_row(
        self, client: httpx.AsyncClient, admin: dict[str, str], runtime: Runtime
    ) -> None:
        await factories.team(client, "search-ui", max_concurrent=3, max_tier="Large")
        await factories.team(client, "billing", max_concurrent=3, max_tier="Large")
        csrf = await signed_in(client, ADMIN_KEY)
        form = {
            "csrf_token": csrf,
            "max_concurrent": "7",
            "max_concurrent_per_owner": "2",
            "max_tier": "",
            "max_credits_per_hour": "120.5",
            "guaranteed": "1",
            "monthly_budget_credits": "5000",
            "budget_policy": "hibernate",
            "budget_soft_threshold": "0.75",
            "budget_thresholds": "0.9, 0.5",
        }
        response = await client.post("/dashboard/teams/search-ui/limits", data=form)
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard/teams/search-ui?done=limits"
        flash = (await page_of(client, response.headers["location"])).find("p", class_="flash")
        assert flash.text == "Limits and budget saved."
        team = (await client.get("/v1/admin/teams/search-ui", headers=admin)).json()
        assert team["max_concurrent"] == 7 and team["max_concurrent_per_owner"] == 2
        assert team["max_tier"] is None and team["guaranteed"] == 1
        assert Decimal(team["max_credits_per_hour"]) == Decimal("120.5")
        assert Decimal(team["monthly_budget_credits"]) == 5000
        assert team["budget_policy"] == "hibernate"
        assert Decimal(team["budget_soft_threshold"]) == Decimal("0.75")
        assert team["budget_thresholds"] == ["0.5", "0.9"]
        # The same change through the API writes the same audit row.
        patched = await client.patch(
            "/v1/admin/teams/billing",
            json={
                "max_concurrent": 7,
                "max_concurrent_per_owner": 2,
                "max_tier": None,
                "max_credits_per_hour": "120.5",
                "guaranteed": 1,
                "monthly_budget_credits": "5000",
                "budget_policy": "hibernate",
                "budget_soft_threshold": "0.75",
                "budget_thresholds": ["0.9", "0.5"],
            },
            headers=admin,
        )
        assert patched.status_code == 200
        dashboard_row, api_row = (await audits(runtime, "team.update"))[-2:]
        assert dashboard_row.target == "search-ui" and api_row.target == "billing"
        assert dashboard_row.detail == api_row.detail
        assert dashboard_row.actor == api_row.actor == "env-admin"
        assert (dashboard_row.cause, dashboard_row.outcome) == ("api", "ok")

    async def test_an_edit_names_only_what_changed_and_empty_means_unlimited(
        self, client: httpx.AsyncClient, admin: dict[str, str], runtime: Runtime
    ) -> None:
        await factories.team(client, "search-ui", max_concurrent=3, monthly_budget_credits="50")
        csrf = await signed_in(client, ADMIN_KEY)
        page = await page_of(client, "/dashboard/teams/search-ui")
        current = {
            field.attrs["name"]: field.attrs.get("value", "")
            for field in page.by_id("team-limits-form").find_all("input")
        }
        current |= {"max_tier": "", "budget_policy": "block", "csrf_token": csrf}
        before = len(await audits(runtime, "team.update"))
        unchanged = await client.post("/dashboard/teams/search-ui/limits", data=current)
        assert unchanged.headers["location"].endswith("?done=unchanged")
        assert len(await audits(runtime, "team.update")) == before
        cleared = await client.post(
            "/dashboard/teams/search-ui/limits", data={**current, "max_concurrent": ""}
        )
        assert cleared.status_code == 303
        team = (await client.get("/v1/admin/teams/search-ui", headers=admin)).json()
        assert team["max_concurrent"] is None and Decimal(team["monthly_budget_credits"]) == 50
        *_, row = await audits(runtime, "team.update")
        assert row.detail == {"max_concurrent": None}
        assert len(await audits(runtime, "team.update")) == before + 1

    @pytest.mark.parametrize(
        ("field", "value", "says"),
        [
            ("max_concurrent", "-1", "greater than or equal to 0"),
            ("max_concurrent", "lots", "valid integer"),
            ("budget_soft_threshold", "1.5", "less than or equal to 1"),
            ("budget_thresholds", "0.5, 0.5", "each threshold may appear once"),
            ("max_tier", "Huge", "Input should be"),
        ],
    )
    async def test_a_refused_edit_is_shown_on_the_form_and_changes_nothing(
        self,
        client: httpx.AsyncClient,
        admin: dict[str, str],
        runtime: Runtime,
        field: str,
        value: str,
        says: str,
    ) -> None:
        await factories.team(client, "search-ui", max_concurrent=3)
        before = len(await audits(runtime, "team.update"))
        csrf = await signed_in(client, ADMIN_KEY)
        data = {"csrf_token": csrf, "guaranteed": "0", "budget_policy": "block", field: value}
        response = await client.post("/dashboard/teams/search-ui/limits", data=data)
        assert response.status_code == 422
        page = parse(response.text)
        assert says in page.by_id(f"{field}-error").text
        assert page.by_id(field).attrs.get("aria-invalid") == "true"
        if page.by_id(field).tag == "input":
            assert page.by_id(field).attrs["value"] == value  # what was typed, shown again
        assert (await client.get("/v1/admin/teams/search-ui", headers=admin)).json()[
            "max_concurrent"
        ] == 3
        assert len(await audits(runtime, "team.update")) == before

    async def test_a_null_the_service_refuses_is_shown_too(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        await factories.team(client, "search-ui")
        csrf = await signed_in(client, ADMIN_KEY)
        data = {"csrf_token": csrf, "guaranteed": "", "budget_policy": "block"}
        response = await client.post("/dashboard/teams/search-ui/limits", data=data)
        assert response.status_code == 422
        assert "guaranteed cannot be null" in parse(response.text).by_id("team-limits-form").text
        assert await audits(runtime, "team.update") == []

    async def test_keys_are_issued_shown_once_rotated_and_revoked(
        self, client: httpx.AsyncClient, admin: dict[str, str], runtime: Runtime
    ) -> None:
        await factories.team(client, "search-ui")
        csrf = await signed_in(client, ADMIN_KEY)
        issued = await client.post(
            "/dashboard/teams/search-ui/keys",
            data={
                "csrf_token": csrf,
                "name": "backend",
                "scopes": ["sandboxes:read", "usage:read"],
                "owner": "",
                "expires_at": "",
            },
        )
        assert issued.status_code == 200
        key = parse(issued.text).by_id("issued-key").attrs["value"]
        assert (
            await client.get("/v1/sandboxes", headers={"Authorization": f"Bearer {key}"})
        ).status_code == 200
        key_id = key.split("_")[1]
        [created] = await audits(runtime, "key.create")
        assert (created.target, created.team_id, created.actor) == (
            key_id,
            "search-ui",
            "env-admin",
        )
        # Shown once: the team's page lists the key by id only.
        page = await page_of(client, "/dashboard/teams/search-ui")
        assert key not in page.text and key_id in [r[0] for r in table(page, "keys-table")]

        rotated = await client.post(
            f"/dashboard/teams/search-ui/keys/{key_id}/rotate",
            data={"csrf_token": csrf, "overlap_seconds": "0"},
        )
        assert rotated.status_code == 200
        successor = parse(rotated.text).by_id("issued-key").attrs["value"]
        assert successor != key
        old = (await client.get(f"/v1/admin/keys/{key_id}", headers=admin)).json()
        assert old["expires_at"] is not None
        assert (await audits(runtime, "key.rotate"))[0].detail == {
            "successor": successor.split("_")[1]
        }

        revoked = await client.post(
            f"/dashboard/teams/search-ui/keys/{successor.split('_')[1]}/revoke",
            data={"csrf_token": csrf},
        )
        assert revoked.status_code == 303 and revoked.headers["location"].endswith("?done=revoked")
        after = (
            await client.get(f"/v1/admin/keys/{successor.split('_')[1]}", headers=admin)
        ).json()
        assert after["revoked_at"] is not None
        denied = await client.get("/v1/sandboxes", headers={"Authorization": f"Bearer {successor}"})
        assert denied.status_code == 401

    async def test_a_refused_key_form_is_shown_again(self, client: httpx.AsyncClient) -> None:
        await factories.team(client, "search-ui")
        csrf = await signed_in(client, ADMIN_KEY)
        response = await client.post(
            "/dashboard/teams/search-ui/keys", data={"csrf_token": csrf, "name": "no scopes"}
        )
        assert response.status_code == 422
        page = parse(response.text)
        assert page.by_id("scopes-error").text
        assert page.by_id("key-name").attrs["value"] == "no scopes"

    async def test_another_teams_key_cannot_be_reached_through_a_team(
        self, client: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        await factories.team(client, "search-ui")
        other = bearer(await factories.team_with_key(client, "billing")).split("_")[1]
        csrf = await signed_in(client, ADMIN_KEY)
        response = await client.post(
            f"/dashboard/teams/search-ui/keys/{other}/revoke", data={"csrf_token": csrf}
        )
        assert response.status_code == 404
        assert (await client.get(f"/v1/admin/keys/{other}", headers=admin)).json()[
            "revoked_at"
        ] is None


class TestSandboxes:
    async def test_the_table_filters_and_pages_as_the_api(
        self, client: httpx.AsyncClient, runtime: Runtime, admin: dict[str, str]
    ) -> None:
        await factories.team(client, "search-ui")
        await factories.team(client, "billing")
        async with runtime.engine.begin() as conn:
            await rows.sandboxes(
                conn, {f"sbx_{n:012d}": ("search-ui", f"user-{n % 3}") for n in range(60)}
            )
            await rows.sandboxes(conn, {"sbx_b00000000000": ("billing", None)}, state="shutdown")
        await signed_in(client, ADMIN_KEY)
        first = await page_of(client, "/dashboard/sandboxes?team=search-ui&owner=user-1")
        api = (
            await client.get("/v1/sandboxes?team=search-ui&owner=user-1&limit=50", headers=admin)
        ).json()
        assert [r[0] for r in table(first, "sandboxes-table")] == [s["id"] for s in api["items"]]
        everything = await page_of(client, "/dashboard/sandboxes?team=search-ui")
        assert len(table(everything, "sandboxes-table")) == 50
        next_url = everything.find("a", rel="next").attrs["href"]
        rest = await page_of(client, next_url)
        assert len(table(rest, "sandboxes-table")) == 10
        assert rest.find("nav", class_="pager").find("a").text == "First page"
        stopped = await page_of(client, "/dashboard/sandboxes?state=shutdown&tier=Nano")
        assert [r[0] for r in table(stopped, "sandboxes-table")] == ["sbx_b00000000000"]
        await page_of(client, "/dashboard/sandboxes?tier=Huge", 422)
        await page_of(client, "/dashboard/sandboxes?cursor=bogus", 400)

    async def test_a_sandboxs_page_is_its_record_events_and_cost(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client, "search-ui")
        sandbox = await factories.sandbox(client, headers, owner="alice@corp", tier="Micro")
        await client.post(f"/v1/sandboxes/{sandbox['id']}/hibernate", headers=headers)
        await freeze(sim)
        await signed_in(client, ADMIN_KEY)
        page = await page_of(client, f"/dashboard/sandboxes/{sandbox['id']}")
        events = (await client.get(f"/v1/sandboxes/{sandbox['id']}/events", headers=headers)).json()
        shown = table(page, "events-table")
        assert [(r[1], r[2], r[3]) for r in shown] == [
            (e["from_state"] or "—", e["to_state"], e["cause"]) for e in reversed(events)
        ]
        cost = (await client.get(f"/v1/sandboxes/{sandbox['id']}/cost", headers=headers)).json()
        lines = table(page, "cost-table")
        assert [r[0] for r in lines] == [str(line["interval_id"]) for line in cost["lines"]]
        assert figures(page)["sandbox-cost"] == formatting.plain(Decimal(cost["total"]["credits"]))

    @pytest.mark.parametrize(
        ("action", "state"),
        [("hibernate", "hibernated"), ("shutdown", "shutdown"), ("delete", "deleted")],
    )
    async def test_an_action_is_confirmed_then_done_by_the_service(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        action: str,
        state: str,
    ) -> None:
        headers = await factories.team_with_key(client, "search-ui")
        sandbox = await factories.sandbox(client, headers)
        csrf = await signed_in(client, ADMIN_KEY)
        page = await page_of(client, f"/dashboard/sandboxes/{sandbox['id']}")
        link = page.find("a", href=f"/dashboard/sandboxes/{sandbox['id']}/confirm?action={action}")
        confirm = await page_of(client, link.attrs["href"])
        [form] = [f for f in post_forms(confirm) if f.attrs["action"] != "/dashboard/logout"]
        assert form.attrs["action"] == f"/dashboard/sandboxes/{sandbox['id']}/{action}"
        # Looking at the confirmation changed nothing.
        assert (await client.get(f"/v1/sandboxes/{sandbox['id']}", headers=headers)).json()[
            "state"
        ] == "running"
        done = await client.post(form.attrs["action"], data={"csrf_token": csrf})
        assert done.status_code == 303
        assert done.headers["location"] == f"/dashboard/sandboxes/{sandbox['id']}?done={action}"
        assert (await client.get(f"/v1/sandboxes/{sandbox['id']}", headers=headers)).json()[
            "state"
        ] == state
        [row] = await audits(runtime, f"sandbox.{action}")
        assert (row.actor, row.target, row.team_id, row.outcome) == (
            "env-admin",
            sandbox["id"],
            "search-ui",
            "ok",
        )

    async def test_unknown_sandboxes_and_actions_are_refused(
        self, client: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client, "search-ui")
        sandbox = await factories.sandbox(client, headers)
        csrf = await signed_in(client, ADMIN_KEY)
        await page_of(client, "/dashboard/sandboxes/sbx_000000000000", 404)
        await page_of(client, "/dashboard/sandboxes/not-an-id", 404)
        await page_of(client, f"/dashboard/sandboxes/{sandbox['id']}/confirm?action=explode", 422)
        response = await client.post(
            f"/dashboard/sandboxes/{sandbox['id']}/explode", data={"csrf_token": csrf}
        )
        assert response.status_code == 422


class TestUsage:
    @pytest.mark.parametrize(
        "query",
        [
            "",
            "group_by=team",
            "group_by=team&group_by=owner&group_by=day",
            "group_by=sandbox,tier&from=2020-01-01&to=2020-02-01",
            "group_by=owner&team=search-ui",
        ],
    )
    async def test_the_csv_is_the_apis(
        self, client: httpx.AsyncClient, admin: dict[str, str], sim: httpx.AsyncClient, query: str
    ) -> None:
        headers = await factories.team_with_key(client, "search-ui")
        await factories.sandbox(client, headers, owner="=cmd()")
        await factories.sandbox(client, headers, owner="bob@corp", tier="Small")
        await freeze(sim)
        await signed_in(client, ADMIN_KEY)
        ours = await client.get(f"/dashboard/usage.csv?{query}")
        theirs = await client.get(f"/v1/usage?format=csv&{query}", headers=admin)
        assert ours.status_code == theirs.status_code == 200
        assert ours.content == theirs.content
        assert ours.headers["content-type"] == theirs.headers["content-type"]
        assert ours.headers["content-disposition"] == theirs.headers["content-disposition"]

    async def test_the_page_is_the_report_and_links_its_own_csv(
        self, client: httpx.AsyncClient, admin: dict[str, str], sim: httpx.AsyncClient
    ) -> None:
        search = await factories.team_with_key(client, "search-ui")
        billing = await factories.team_with_key(client, "billing")
        await factories.sandbox(client, search, owner="alice@corp")
        await factories.sandbox(client, billing, owner="bob@corp", tier="Large")
        await freeze(sim)
        await signed_in(client, ADMIN_KEY)
        page = await page_of(client, "/dashboard/usage?group_by=team&group_by=owner")
        report = (await client.get("/v1/usage?group_by=team&group_by=owner", headers=admin)).json()
        shown = table(page, "usage-table")
        assert [(r[0], r[1], r[5]) for r in shown] == [
            (row["team"], row["owner"], formatting.credits(Decimal(row["credits"])))
            for row in report["rows"]
        ]
        assert Decimal(figures(page)["usage-total"]) == Decimal(report["total"]["credits"])
        csv_url = page.by_id("usage-csv").attrs["href"]
        ours = await client.get(csv_url)
        api = await client.get("/v1/usage?format=csv&group_by=team&group_by=owner", headers=admin)
        assert ours.content == api.content
        # No grouping named: an admin's page groups by team, a team's by day (a time chart).
        default = await page_of(client, "/dashboard/usage")
        assert default.by_id("usage-table").find("thead").find("th").text == "team"
        assert default.find("figure", data_chart="usage").attrs["data-x-kind"] == "category"
        token = default.find("form", action="/dashboard/logout").find("input", name="csrf_token")
        await client.post("/dashboard/logout", data={"csrf_token": token.attrs["value"]})
        await signed_in(client, bearer(search))
        own = await page_of(client, "/dashboard/usage")
        assert own.by_id("usage-table").find("thead").find("th").text == "day"
        assert own.find("figure", data_chart="usage").attrs["data-x-kind"] == "time"
        assert [r[0] for r in table(own, "usage-table")] == [
            row["day"]
            for row in (await client.get("/v1/usage?group_by=day", headers=search)).json()["rows"]
        ]

    async def test_bad_parameters_are_refused_as_the_api_refuses_them(
        self, client: httpx.AsyncClient
    ) -> None:
        await signed_in(client, ADMIN_KEY)
        await page_of(client, "/dashboard/usage?group_by=colour", 422)
        await page_of(client, "/dashboard/usage?from=2020-02-01&to=2020-01-01", 422)
        await page_of(client, "/dashboard/usage?from=yesterday", 422)


class TestAdminPages:
    async def test_reconciliation_lists_runs_and_drift(
        self, client: httpx.AsyncClient, admin: dict[str, str], sim: httpx.AsyncClient
    ) -> None:
        await sim.post("/_simulator/vms", json={"tier": "Micro"})
        run = (await client.post("/v1/admin/reconciliation/run", headers=admin)).json()
        await signed_in(client, ADMIN_KEY)
        page = await page_of(client, "/dashboard/reconciliation")
        [shown] = table(page, "runs-table")
        assert shown[0] == str(run["id"]) and "unmanaged: 1" in shown[-1]
        drift = table(page, "drift-table")
        assert [r[2] for r in drift] == ["unmanaged"]
        overview = table(await page_of(client, "/dashboard"), "recent-drift-table")
        assert [r[1] for r in overview] == ["unmanaged"]

    async def test_the_audit_log_filters_and_pages(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        async with runtime.engine.begin() as conn:
            await conn.execute(
                insert(AuditEntry),
                [
                    {
                        "actor": "k1",
                        "team_id": "search-ui" if n % 2 else "billing",
                        "action": "sandbox.start",
                        "target": f"sbx_{n:012d}",
                        "cause": "api",
                        "outcome": "ok",
                        "at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n),
                    }
                    for n in range(120)
                ],
            )
        await signed_in(client, ADMIN_KEY)
        page = await page_of(client, "/dashboard/audit?team=search-ui&action=sandbox.start")
        first = table(page, "audit-table")
        assert len(first) == 50 and {r[3] for r in first} == {"search-ui"}
        rest = await page_of(client, page.find("a", rel="next").attrs["href"])
        assert len(table(rest, "audit-table")) == 10
        window = await page_of(
            client, "/dashboard/audit?team=billing&from=2026-01-01T00:10:00Z&to=2026-01-01T00:20"
        )
        targets = [r[5] for r in table(window, "audit-table")]
        assert targets == [f"sbx_{n:012d}" for n in (18, 16, 14, 12, 10)]
        await page_of(client, "/dashboard/audit?from=2026-02-01&to=2026-01-01", 422)

    async def test_the_plan_and_prices_change_through_the_api_services(
        self, client: httpx.AsyncClient, admin: dict[str, str], runtime: Runtime
    ) -> None:
        csrf = await signed_in(client, ADMIN_KEY)
        page = await page_of(client, "/dashboard/prices")
        assert figures(page)["effective-limit"] == "250"
        plan = await client.post(
            "/dashboard/prices/plan",
            data={"csrf_token": csrf, "plan": "enterprise", "limit": "400"},
        )
        assert plan.status_code == 303
        assert (await client.get("/v1/admin/plan", headers=admin)).json()["plan_limit"] == 400
        [row] = await audits(runtime, "plan.update")
        assert row.detail == {"plan": "enterprise", "limit": 400}
        refused = await client.post(
            "/dashboard/prices/plan", data={"csrf_token": csrf, "plan": "enterprise", "limit": ""}
        )
        assert refused.status_code == 422

        rates = {f"rate_{tier}": str(n) for tier, n in rows.LIST_VERSION.rates.items()}
        effective = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S")
        added = await client.post(
            "/dashboard/prices/versions",
            data={
                "csrf_token": csrf,
                **rates,
                "rate_Pico": "6",
                "credit_usd": "0.02",
                "effective_from": effective,
            },
        )
        assert added.status_code == 303
        book = (await client.get("/v1/admin/prices", headers=admin)).json()
        newest = book["versions"][-1]
        assert (
            Decimal(newest["credits_per_hour"]["Pico"]) == 6 and newest["created_by"] == "env-admin"
        )
        assert (await audits(runtime, "price_book.create"))[0].target == str(newest["id"])
        listed = table(await page_of(client, "/dashboard/prices"), "prices-table")
        assert listed[0][0] == str(newest["id"])
        past = await client.post(
            "/dashboard/prices/versions",
            data={
                "csrf_token": csrf,
                **rates,
                "credit_usd": "0.02",
                "effective_from": "2020-01-01T00:00",
            },
        )
        assert past.status_code == 422
        assert "in the past" in parse(past.text).by_id("price-form").text
        negative = await client.post(
            "/dashboard/prices/versions",
            data={"csrf_token": csrf, **rates, "rate_Nano": "-1", "credit_usd": "1"},
        )
        assert negative.status_code == 422
        assert len((await client.get("/v1/admin/prices", headers=admin)).json()["versions"]) == 2

    async def test_webhooks_list_their_endpoints_and_deliveries(
        self, client: httpx.AsyncClient, admin: dict[str, str]
    ) -> None:
        made = await client.post(
            "/v1/admin/webhooks",
            json={"url": "https://hooks.example.com/corral", "events": ["org.plan_full"]},
            headers=admin,
        )
        assert made.status_code == 201, made.text
        endpoint = made.json()
        await signed_in(client, ADMIN_KEY)
        page = await page_of(client, "/dashboard/webhooks")
        [row] = table(page, "webhooks-table")
        assert row[0] == endpoint["id"] and row[1] == "https://hooks.example.com/corral"
        assert endpoint["secret"] not in page.text
        detail = await page_of(client, f"/dashboard/webhooks/{endpoint['id']}")
        assert table(detail, "deliveries-table") == [["No delivery."]]
        assert endpoint["secret"] not in detail.text
        await page_of(client, "/dashboard/webhooks/whep_000000000000000000000000", 404)
        await page_of(client, "/dashboard/webhooks/nonsense", 404)


class TestMarkup:
    async def test_pages_are_labelled_landmarked_and_captioned(
        self, client: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client, "search-ui")
        sandbox = await factories.sandbox(client, headers)
        await signed_in(client, ADMIN_KEY)
        paths = [
            "/dashboard",
            "/dashboard/teams",
            "/dashboard/teams/search-ui",
            "/dashboard/sandboxes",
            f"/dashboard/sandboxes/{sandbox['id']}",
            f"/dashboard/sandboxes/{sandbox['id']}/confirm?action=delete",
            "/dashboard/usage",
            "/dashboard/reconciliation",
            "/dashboard/audit",
            "/dashboard/prices",
            "/dashboard/webhooks",
        ]
        for path in paths:
            page = await page_of(client, path)
            assert page.find("html").attrs["lang"] == "en"
            assert page.find("a", class_="skip-link").attrs["href"] == "#main"
            assert page.find("main").attrs["id"] == "main"
            assert page.find_all("header") and page.find_all("h1")
            nav = page.find("nav", aria_label="Main")
            assert [a.text for a in nav.find_all("a")] == [
                "Overview",
                "Teams",
                "Sandboxes",
                "Usage",
                "Reconciliation",
                "Audit log",
                "Prices and plan",
                "Webhooks",
            ]
            labels = {label.attrs.get("for") for label in page.find_all("label")}
            wrapped = {
                id(field)
                for label in page.find_all("label")
                for field in label.find_all("input") + label.find_all("select")
            }
            for field in page.find_all("input") + page.find_all("select"):
                if field.attrs.get("type") == "hidden":
                    continue
                assert field.attrs.get("id") in labels or id(field) in wrapped, (path, field.attrs)
            for grid in page.find_all("table"):
                assert grid.find_all("caption"), (path, grid.attrs)
                for th in grid.find("thead").find_all("th"):
                    assert th.attrs.get("scope") == "col", (path, grid.attrs)
                for th in grid.find_all("th"):
                    assert th.attrs.get("scope") in ("col", "row"), (path, grid.attrs)
            ids = [n.attrs["id"] for n in page.walk() if "id" in n.attrs]
            assert len(ids) == len(set(ids)), path


class TestPackaging:
    def test_the_templates_and_static_files_ship_in_the_wheel(self) -> None:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())
        patterns = project["tool"]["setuptools"]["package-data"]["app.dashboard"]
        package = ROOT / "app" / "dashboard"
        shipped = [
            path.relative_to(package).as_posix()
            for path in package.rglob("*")
            if path.is_file() and path.suffix not in (".py", ".pyc")
        ]
        assert "templates/base.html" in shipped and "static/vendor/LICENSE" in shipped
        for name in shipped:
            assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name

    def test_the_vendored_upLot_is_the_version_noted(self) -> None:
        vendor = ROOT / "app" / "dashboard" / "static" / "vendor"
        assert (vendor / "VERSIONS").read_text().startswith("uPlot 1.6.32 (MIT")
        assert "MIT License" in (vendor / "LICENSE").read_text()
