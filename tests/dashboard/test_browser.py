"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against one real
`corral serve` (a standalone simulator upstream, a scratch database) seeded through the API.

What a person sees is checked against what the API answers for the same data: the overview's,
the teams' and a team's figures, the sandbox filters, a sandbox's events and cost, a team's
limits and keys after the forms changed them, the usage CSV. Also: a team key sees its own
team only and no form that posts; a POST without its CSRF token changes nothing; no page loads
anything from another origin; every page passes axe-core's serious and critical rules and is
captured at 1280 and 390 px under test-artifacts/dashboard/, none wider than a phone; the
overview reads without JavaScript and refreshes its figures in place with it; and one admin's
day, from the overview to the month's CSV.

One server, one seeded organisation and one browser serve the whole module. Each test reads
the API figures it compares at the moment it compares them, and the tests that change data
change teams or sandboxes that no other test reads.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests import processes
from tests.conftest import ADMIN_KEY
from tests.dashboard import browser as b
from tests.database import scratch
from tests.fixtures.factories import ALL_TEAM_SCOPES

SIM_KEY = "dashboard-browser-simulator-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
# Long enough that no seeded VM hibernates by itself while the clock moves.
IDLE_TIMEOUT = 86400
RUN_FOR = timedelta(hours=2)
# search-ui runs a Nano and a Small (50 credits/h) for RUN_FOR: 100 credits, over this budget.
OVER_BUDGET = Decimal(60)
# A closed loopback port: deliveries to it fail without leaving the machine.
HOOK_URL = "http://127.0.0.1:9/corral-hooks"


@dataclass
class Org:
    """The seeded organisation: the server, its API, and the names the tests look for."""

    url: str
    api: httpx.AsyncClient
    keys: dict[str, str]  # team → a key with every team scope
    sandboxes: dict[str, str]  # title → sandbox id
    webhook: str
    # Every request of the pages the tests open in their own contexts.
    requests: b.Requests = field(default_factory=b.Requests)

    def key_headers(self, team: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[team]}"}

    async def get(self, path: str, **params: Any) -> Any:
        """An admin's GET of the API, which must succeed."""
        answer = await self.api.get(path, headers=ADMIN, params=params)
        assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text}"
        return answer.json()


async def _advance(api: httpx.AsyncClient, seconds: float) -> datetime:
    moved = await api.post("/v1/admin/clock/advance", json={"seconds": seconds}, headers=ADMIN)
    assert moved.status_code == 200, moved.text
    return datetime.fromisoformat(moved.json()["now"])


async def _seed(api: httpx.AsyncClient, simulator: str) -> Org:
    """Four teams (search-ui and ads over their budgets), their keys and sandboxes, one VM
    adopted by a reconcile run, a refused create, a webhook endpoint; two hours of running on
    the ledger."""
    # The spend must land in one budget month: near a month's end, start in the next one.
    now = await _advance(api, 1)
    next_month = (now.replace(day=1) + timedelta(days=32)).replace(day=1, hour=0, minute=5)
    if next_month - now < RUN_FOR * 2:
        await _advance(api, (next_month - now).total_seconds())

    keys: dict[str, str] = {}
    for team in ("search-ui", "docs", "billing", "ads"):
        made = await api.post("/v1/admin/teams", json={"id": team, "name": team}, headers=ADMIN)
        assert made.status_code == 201, made.text
        issued = await api.post(
            f"/v1/admin/teams/{team}/keys",
            json={"name": "backend", "scopes": ALL_TEAM_SCOPES},
            headers=ADMIN,
        )
        assert issued.status_code == 201, issued.text
        keys[team] = issued.json()["key"]

    sandboxes: dict[str, str] = {}
    for team, title, tier, owner in (
        ("search-ui", "search-a", "Nano", "alice@search"),
        ("search-ui", "search-b", "Small", "bob@search"),
        ("search-ui", "search-idle", "Micro", "alice@search"),
        ("docs", "docs-a", "Nano", "dave@docs"),
        ("docs", "docs-idle", "Pico", "dave@docs"),
        ("billing", "billing-a", "Pico", "erin@billing"),
        ("ads", "ads-a", "Nano", "fay@ads"),
    ):
        made = await api.post(
            "/v1/sandboxes",
            json={
                "title": title,
                "tier": tier,
                "owner": owner,
                "tags": ["web"],
                "hibernation_timeout_seconds": IDLE_TIMEOUT,
            },
            headers={"Authorization": f"Bearer {keys[team]}"},
        )
        assert made.status_code == 201, made.text
        sandboxes[title] = made.json()["id"]
    for title in ("search-idle", "docs-idle"):
        team = {"search-idle": "search-ui", "docs-idle": "docs"}[title]
        stopped = await api.post(
            f"/v1/sandboxes/{sandboxes[title]}/hibernate",
            headers={"Authorization": f"Bearer {keys[team]}"},
        )
        assert stopped.status_code == 200, stopped.text

    # Subscribed before the reconcile run, so its drift is delivered (and fails: no listener).
    hook = await api.post(
        "/v1/admin/webhooks",
        json={
            "url": HOOK_URL,
            "events": [
                "budget.exhausted",
                "budget.threshold_crossed",
                "sandbox.unmanaged_found",
                "reconcile.drift_found",
            ],
            "description": "platform alerts",
        },
        headers=ADMIN,
    )
    assert hook.status_code == 201, hook.text

    # A VM someone started upstream behind Corral's back, found and adopted by a reconcile run.
    outside = await api.post(
        f"{simulator}/_simulator/vms",
        json={"tier": "Nano", "hibernation_timeout_seconds": IDLE_TIMEOUT},
        headers={"Authorization": f"Bearer {SIM_KEY}"},
    )
    assert outside.status_code == 201, outside.text
    ran = await api.post("/v1/admin/reconciliation/run", headers=ADMIN)
    assert ran.status_code == 200, ran.text

    await _advance(api, RUN_FOR.total_seconds())
    # Two teams over budget: the admin's day mends search-ui, ads stays over.
    for team, budget in (("search-ui", OVER_BUDGET), ("ads", Decimal(10))):
        limited = await api.patch(
            f"/v1/admin/teams/{team}",
            json={"monthly_budget_credits": str(budget), "budget_policy": "block"},
            headers=ADMIN,
        )
        assert limited.status_code == 200, limited.text
    refused = await api.post(
        "/v1/sandboxes",
        json={"title": "one more", "tier": "Nano"},
        headers={"Authorization": f"Bearer {keys['search-ui']}"},
    )
    assert refused.status_code == 402, refused.text
    return Org(
        url=str(api.base_url).rstrip("/"),
        api=api,
        keys=keys,
        sandboxes=sandboxes,
        webhook=hook.json()["id"],
    )


@pytest.fixture(scope="module")
async def org(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Org]:
    logs = tmp_path_factory.mktemp("dashboard-browser")
    async with scratch(f"corral_dashboard_browser_{os.getpid()}") as database:
        with ExitStack() as stack:
            sim = stack.enter_context(processes.simulator(SIM_KEY, logs))
            corral = stack.enter_context(
                processes.corral(
                    database_url=database,
                    upstream_url=sim.url,
                    upstream_key=SIM_KEY,
                    admin_key=ADMIN_KEY,
                    log_dir=logs,
                )
            )
            async with httpx.AsyncClient(base_url=corral.url, timeout=30) as api:
                yield await _seed(api, sim.url)


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=b.CHROMIUM, args=b.CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def admin(org: Org, chromium: Browser) -> AsyncIterator[Page]:
    """A page signed in with the admin key, on the overview; its requests are recorded."""
    async with b.context(chromium, org.requests, viewport=_viewport(b.WIDE)) as ctx:
        yield await b.sign_in(ctx, org.url, ADMIN_KEY)


def _viewport(width: int) -> dict[str, int]:
    return {"width": width, "height": b.VIEWPORT_HEIGHT}


def _pages(org: Org) -> dict[str, str]:
    """Every page of the dashboard by name, with seeded ids in its path."""
    sandbox = org.sandboxes["search-a"]
    return {
        "overview": "/dashboard",
        "overview-7d": "/dashboard?window=7d",
        "overview-30d": "/dashboard?window=30d",
        "teams": "/dashboard/teams",
        "team": "/dashboard/teams/search-ui",
        "sandboxes": "/dashboard/sandboxes",
        "sandbox": f"/dashboard/sandboxes/{sandbox}",
        "confirm": f"/dashboard/sandboxes/{sandbox}/confirm?action=hibernate",
        "usage": "/dashboard/usage",
        "usage-by-team": "/dashboard/usage?group_by=team",
        "reconciliation": "/dashboard/reconciliation",
        "audit": "/dashboard/audit",
        "prices": "/dashboard/prices",
        "webhooks": "/dashboard/webhooks",
        "webhook": f"/dashboard/webhooks/{org.webhook}",
    }


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value))


async def _month_spend(org: Org) -> Decimal:
    """This month's credits, all teams, as GET /v1/usage totals them now."""
    return _decimal((await org.get("/v1/usage"))["total"]["credits"])


async def _team_spend(org: Org) -> dict[str, Decimal]:
    """This month's credits per team, as GET /v1/usage reports them now."""
    report = await org.get("/v1/usage", group_by="team")
    return {row["team"]: Decimal(row["credits"]) for row in report["rows"]}


async def _audit(org: Org, **filters: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await org.get("/v1/admin/audit", **filters))["items"]
    return found


async def _events_shown(page: Page) -> list[dict[str, str | None]]:
    """The events table, oldest first, as {at (UTC, from the <time>), from, to, cause, actor}."""
    rows: list[dict[str, str | None]] = await page.evaluate(
        """() => [...document.querySelectorAll('#events-table tbody tr')].map(tr => {
            const cells = [...tr.children].map(td => td.innerText.trim());
            const none = text => (text === '—' ? null : text);
            const time = tr.querySelector('time');
            return {at: time && time.getAttribute('datetime'), from: none(cells[1]),
                    to: cells[2], cause: cells[3], actor: none(cells[4])};
        }).reverse()"""
    )
    return rows


def _utc(moment: str) -> str:
    """An API instant as the pages' <time datetime> writes it (UTC, Z)."""
    return datetime.fromisoformat(moment).astimezone(UTC).isoformat().replace("+00:00", "Z")


def _bracketed(before: Decimal, shown: Decimal, after: Decimal) -> bool:
    """A figure that only grows while VMs run: the page's, read between two API reads."""
    return before <= shown <= after


class TestSignIn:
    async def test_admin_signs_in_and_reaches_every_page(self, org: Org, admin: Page) -> None:
        for name, path in _pages(org).items():
            await b.open_page(admin, org.url + path)
            assert await admin.locator("h1").count() == 1, name
        # Signing out ends the session: the next page is the sign-in form again.
        await admin.click("form[action='/dashboard/logout'] [type=submit]")
        await admin.wait_for_url(org.url + "/dashboard/login")
        await admin.goto(org.url + "/dashboard/teams")
        assert admin.url == org.url + "/dashboard/login"

    async def test_a_refused_key_stays_on_the_sign_in_form(
        self, org: Org, chromium: Browser
    ) -> None:
        async with b.context(chromium, org.requests) as ctx:
            page = await ctx.new_page()
            await page.goto(org.url + "/dashboard/login")
            await page.fill("#api-key", "crl_nosuchkey_" + "x" * 40)
            async with page.expect_navigation():
                await page.click("#login-form [type=submit]")
            assert page.url == org.url + "/dashboard/login"
            assert "not accepted" in (await page.text_content("#login-error") or "")
            assert not [c for c in await ctx.cookies() if c["name"] == "corral_dashboard"]

    async def test_the_session_cookie_is_http_only_strict_and_holds_no_key(
        self, org: Org, admin: Page
    ) -> None:
        (cookie,) = [c for c in await admin.context.cookies() if c["name"] == "corral_dashboard"]
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert ADMIN_KEY not in cookie["value"]
        assert await admin.evaluate("document.cookie") == ""

    async def test_a_team_key_sees_its_own_team_read_only(
        self, org: Org, chromium: Browser
    ) -> None:
        async with b.context(chromium, org.requests, viewport=_viewport(b.WIDE)) as ctx:
            page = await b.sign_in(ctx, org.url, org.keys["docs"])
            own = f"/dashboard/sandboxes/{org.sandboxes['docs-a']}"
            for path in (
                "/dashboard",
                "/dashboard/teams",
                "/dashboard/teams/docs",
                "/dashboard/sandboxes",
                own,
                "/dashboard/usage",
            ):
                await b.open_page(page, org.url + path)
                # Reading only: the one form that posts is signing out.
                assert await b.post_forms(page) == ["/dashboard/logout"], path
            # Asking for another team's rows shows its own (the filter is the API's, scoped).
            await b.open_page(page, org.url + "/dashboard/sandboxes?team=billing")
            rows = await b.table(page, "sandboxes-table")
            assert {row["Team"] for row in rows} == {"docs"}
            await b.open_page(page, org.url + "/dashboard/teams")
            assert [row["Team"] for row in await b.table(page, "teams-table")] == ["docs"]
            await b.open_page(page, org.url + "/dashboard/usage?group_by=team")
            assert [row["team"] for row in await b.table(page, "usage-table")] == ["docs"]

            # Another team's pages are answered as if they did not exist.
            others = (
                "/dashboard/teams/billing",
                "/dashboard/teams/search-ui",
                f"/dashboard/sandboxes/{org.sandboxes['billing-a']}",
            )
            for path in others:
                await b.open_page(page, org.url + path, status=404)
            admin_only = (
                "/dashboard/reconciliation",
                "/dashboard/audit",
                "/dashboard/prices",
                "/dashboard/webhooks",
                f"/dashboard/webhooks/{org.webhook}",
                f"/dashboard/sandboxes/{org.sandboxes['docs-a']}/confirm?action=hibernate",
            )
            for path in admin_only:
                await b.open_page(page, org.url + path, status=403)

            # The live figures are its team's, as /v1/quota gives them to its key.
            live = await page.evaluate(
                "async () => (await (await fetch('/dashboard/live/overview')).json()).figures"
            )
            answer = await org.api.get("/v1/quota", headers=org.key_headers("docs"))
            assert live["live"]["value"] == str(answer.json()["usage"]["live"])
            csv_status = await page.evaluate(
                "async () => (await fetch('/dashboard/usage.csv?team=billing')).status"
            )
            assert csv_status == 403

            # A POST with the session's own CSRF token is still refused: the key is read-only.
            before = await org.get("/v1/admin/teams/docs")
            status = await _post_from_page(
                page, "/dashboard/teams/docs/limits", {"max_concurrent": "1"}, with_token=True
            )
            assert status == 403
            assert await org.get("/v1/admin/teams/docs") == before
            status = await _post_from_page(
                page,
                f"/dashboard/sandboxes/{org.sandboxes['docs-a']}/hibernate",
                {},
                with_token=True,
            )
            assert status == 403
            shown = await org.get(f"/v1/sandboxes/{org.sandboxes['docs-a']}")
            assert shown["state"] == "running"


async def _post_from_page(
    page: Page, path: str, fields: dict[str, str], *, with_token: bool
) -> int:
    """POST a url-encoded form from inside the page (same origin, its cookies), with the CSRF
    token the page's sign-out form carries or without any; the answer's status."""
    status: int = await page.evaluate(
        """async ([path, fields, withToken]) => {
            const body = new URLSearchParams(fields);
            if (withToken) {
                body.set('csrf_token',
                         document.querySelector('input[name=csrf_token]').value);
            }
            const answer = await fetch(path, {method: 'POST', body, redirect: 'manual'});
            return answer.status;
        }""",
        [path, fields, with_token],
    )
    return status


class TestFigures:
    async def test_overview_shows_the_plan_and_quota_figures(self, org: Org, admin: Page) -> None:
        plan = await org.get("/v1/admin/plan")
        quota = await org.get("/v1/quota", team="docs")
        sandboxes = (await org.get("/v1/sandboxes", limit=200))["items"]
        spend_before = await _month_spend(org)
        await b.open_page(admin, org.url + "/dashboard")
        spend_after = await _month_spend(org)

        assert await b.figure(admin, "effective-limit") == plan["effective_limit"]
        assert await b.figure(admin, "effective-limit") == quota["org"]["effective_limit"]
        assert await b.figure(admin, "live") == quota["org"]["live"]
        assert await b.figure(admin, "headroom") == quota["org"]["headroom"]
        states = [s["state"] for s in sandboxes]
        assert await b.figure(admin, "running") == states.count("running")
        assert await b.figure(admin, "starting") == states.count("starting")
        unmanaged = [s for s in sandboxes if not s["managed"] and s["state"] == "running"]
        assert await b.figure(admin, "unmanaged") == len(unmanaged) == 1

        teams = [t["id"] for t in await org.get("/v1/admin/teams")]
        burn = Decimal(0)
        for team in teams:
            burn += _decimal(
                (await org.get("/v1/quota", team=team))["usage"]["burn_credits_per_hour"]
            )
        assert await b.figure(admin, "burn-rate") == burn
        spent = await b.figure(admin, "month-spend")
        assert _bracketed(spend_before, spent, spend_after), (spend_before, spent, spend_after)
        # The forecast: the month so far plus the burn rate over the hours left in it.
        at = datetime.fromisoformat(
            await admin.get_attribute("[data-live-at] time", "datetime") or ""
        )
        month_end = (at.replace(day=1) + timedelta(days=32)).replace(
            day=1, hour=0, minute=0, second=0, microsecond=0
        )
        hours_left = Decimal(str((month_end - at).total_seconds())) / 3600
        forecast = await b.figure(admin, "month-forecast")
        assert abs(forecast - (spent + burn * hours_left)) < Decimal("0.00001"), forecast

        # The teams over budget by the API's figures are flagged (ads stays over all along).
        over = set()
        for team in await org.get("/v1/admin/teams"):
            budget = team["monthly_budget_credits"]
            spent = (await org.get("/v1/quota", team=team["id"]))["usage"]["month_to_date_credits"]
            if budget is not None and _decimal(spent) >= _decimal(budget):
                over.add(team["id"])
        flagged = await b.table(admin, "near-budget-table")
        assert {r["Team"] for r in flagged if r["Status"] == "over"} == over
        assert "ads" in over
        # The refused create is counted by the replica that refused it.
        counted = {
            r["Limit"]: r["Refusals"] for r in await b.table(admin, "replica-refusals-table")
        }
        assert counted.get("monthly_budget") == "1", counted
        drift = await b.table(admin, "recent-drift-table")
        assert drift, "the adopted VM's drift is on the overview"

    async def test_teams_page_spend_and_burn_equal_the_api(self, org: Org, admin: Page) -> None:
        before = await _team_spend(org)
        await b.open_page(admin, org.url + "/dashboard/teams")
        after = await _team_spend(org)
        listed = [t["id"] for t in await org.get("/v1/admin/teams")]
        rows = await b.table(admin, "teams-table")
        assert sorted(r["Team"].split()[0] for r in rows) == sorted(listed)
        for team in listed:
            row = f"#teams-table tr[data-team='{team}']"
            spent = Decimal(await admin.get_attribute(f"{row} [data-spent]", "data-spent") or "")
            low, high = before.get(team, Decimal(0)), after.get(team, Decimal(0))
            assert _bracketed(low, spent, high), (team, low, spent, high)
            quota = await org.get("/v1/quota", team=team)
            burn = Decimal(await admin.get_attribute(f"{row} [data-burn]", "data-burn") or "")
            assert burn == _decimal(quota["usage"]["burn_credits_per_hour"]), team
            running = await admin.get_attribute(f"{row} [data-running]", "data-running")
            assert int(running or -1) == quota["usage"]["running"], team

    async def test_team_page_shows_its_quota_and_month(self, org: Org, admin: Page) -> None:
        quota = await org.get("/v1/quota", team="docs")
        before = (await _team_spend(org))["docs"]
        await b.open_page(admin, org.url + "/dashboard/teams/docs")
        after = (await _team_spend(org))["docs"]
        assert await b.figure(admin, "team-live") == quota["usage"]["live"]
        assert await b.figure(admin, "team-running") == quota["usage"]["running"]
        assert await b.figure(admin, "team-burn-rate") == _decimal(
            quota["usage"]["burn_credits_per_hour"]
        )
        assert _bracketed(before, await b.figure(admin, "team-month-spend"), after)
        keys = await org.get("/v1/admin/teams/docs/keys")
        shown = await admin.locator("#keys-table tbody tr[data-key]").evaluate_all(
            "rows => rows.map(r => r.dataset.key)"
        )
        assert sorted(shown) == sorted(k["id"] for k in keys)
        for key in keys:
            row = f"#keys-table tr[data-key='{key['id']}']"
            assert await admin.locator(f"{row} form[action$='/rotate']").count() == 1
            assert await admin.locator(f"{row} form[action$='/revoke']").count() == 1
        assert await admin.locator("#issue-key-form").count() == 1

    async def test_sandbox_page_shows_its_events_and_cost(self, org: Org, admin: Page) -> None:
        sandbox = org.sandboxes["search-idle"]
        events = await org.get(f"/v1/sandboxes/{sandbox}/events")
        cost = await org.get(f"/v1/sandboxes/{sandbox}/cost")
        await b.open_page(admin, f"{org.url}/dashboard/sandboxes/{sandbox}")
        assert await _events_shown(admin) == [
            {
                "at": _utc(e["at"]),
                "from": e["from_state"],
                "to": e["to_state"],
                "cause": e["cause"],
                "actor": e["actor"],
            }
            for e in events
        ]
        assert [e["to_state"] for e in events][-1] == "hibernated"
        lines = await b.table(admin, "cost-table")
        assert [r["Interval"] for r in lines] == [
            str(line["interval_id"]) for line in cost["lines"]
        ]
        assert await b.figure(admin, "sandbox-cost") == _decimal(cost["total"]["credits"])

    async def test_the_sandbox_filters_show_what_the_api_lists(self, org: Org, admin: Page) -> None:
        await b.open_page(admin, org.url + "/dashboard/sandboxes")
        for filters in (
            {"team": "search-ui"},
            {"team": "search-ui", "owner": "alice@search"},
            {"state": "hibernated"},
            {"tier": "Pico"},
            {"tag": "web", "team": "docs"},
        ):
            form = "#sandbox-filters"
            await admin.fill(f"{form} [name=team]", filters.get("team", ""))
            await admin.fill(f"{form} [name=owner]", filters.get("owner", ""))
            await admin.select_option(f"{form} [name=state]", filters.get("state", ""))
            await admin.select_option(f"{form} [name=tier]", filters.get("tier", ""))
            await admin.fill(f"{form} [name=tag]", filters.get("tag", ""))
            async with admin.expect_navigation():
                await admin.click(f"{form} [type=submit]")
            listed = (await org.get("/v1/sandboxes", limit=200, **filters))["items"]
            shown = await admin.locator("#sandboxes-table tbody tr[data-sandbox]").evaluate_all(
                "rows => rows.map(r => r.dataset.sandbox)"
            )
            assert shown == [s["id"] for s in listed], filters
            assert listed, filters

    async def test_the_admin_pages_show_what_the_admin_api_reads(
        self, org: Org, admin: Page
    ) -> None:
        recent = await org.get("/v1/admin/reconciliation")
        await b.open_page(admin, org.url + "/dashboard/reconciliation")
        assert [r["Run"] for r in await b.table(admin, "runs-table")] == [
            str(run["id"]) for run in recent["runs"]
        ]
        drift = await b.table(admin, "drift-table")
        assert [(r["Kind"], r["Action"]) for r in drift] == [
            (d["kind"], d["action"]) for d in recent["drifts"]
        ]

        audit = await _audit(org, limit="50")
        await b.open_page(admin, org.url + "/dashboard/audit")
        rows = await b.table(admin, "audit-table")
        # The page was read after the API: rows written in between are on top of it.
        shown = [r["Id"] for r in rows]
        newest = shown.index(str(audit[0]["id"]))
        assert shown[newest:] == [str(a["id"]) for a in audit][: len(shown) - newest]
        await b.open_page(admin, org.url + "/dashboard/audit?action=team.update&team=search-ui")
        filtered = await b.table(admin, "audit-table")
        api = await _audit(org, action="team.update", team="search-ui")
        assert [r["Id"] for r in filtered] == [str(a["id"]) for a in api]

        book = await org.get("/v1/admin/prices")
        plan = await org.get("/v1/admin/plan")
        await b.open_page(admin, org.url + "/dashboard/prices")
        assert await b.figure(admin, "plan-limit") == plan["plan_limit"]
        assert await b.figure(admin, "effective-limit") == plan["effective_limit"]
        versions = await b.table(admin, "prices-table")
        assert [r["Version"].split()[0] for r in versions] == [
            str(v["id"]) for v in reversed(book["versions"])
        ]

        hooks = await org.get("/v1/admin/webhooks")
        await b.open_page(admin, org.url + "/dashboard/webhooks")
        assert [r["Endpoint"] for r in await b.table(admin, "webhooks-table")] == [
            h["id"] for h in hooks
        ]
        deliveries = (await org.get(f"/v1/admin/webhooks/{org.webhook}/deliveries"))["items"]
        await b.open_page(admin, f"{org.url}/dashboard/webhooks/{org.webhook}")
        listed = await b.table(admin, "deliveries-table")
        assert [(r["Delivery"], r["Type"]) for r in listed] == [
            (str(d["id"]), d["event_type"]) for d in deliveries
        ]
        assert {d["event_type"] for d in deliveries} >= {"sandbox.unmanaged_found"}


class TestEditing:
    async def test_the_limits_form_changes_the_team_and_writes_an_audit_row(
        self, org: Org, admin: Page
    ) -> None:
        audited = len(await _audit(org, action="team.update", target="billing"))
        await b.open_page(admin, org.url + "/dashboard/teams/billing")
        form = "#team-limits-form"
        await admin.fill(f"{form} [name=max_concurrent]", "7")
        await admin.fill(f"{form} [name=max_concurrent_per_owner]", "2")
        await admin.select_option(f"{form} [name=max_tier]", "Small")
        await admin.fill(f"{form} [name=max_credits_per_hour]", "120.5")
        await admin.fill(f"{form} [name=guaranteed]", "1")
        await admin.fill(f"{form} [name=monthly_budget_credits]", "900")
        await admin.select_option(f"{form} [name=budget_policy]", "hibernate")
        await admin.fill(f"{form} [name=budget_soft_threshold]", "0.75")
        await admin.fill(f"{form} [name=budget_thresholds]", "0.5, 0.9")
        async with admin.expect_navigation():
            await admin.click(f"{form} [type=submit]")
        assert admin.url == org.url + "/dashboard/teams/billing?done=limits"
        assert "saved" in (await admin.text_content(".flash") or "")

        team = await org.get("/v1/admin/teams/billing")
        assert team["max_concurrent"] == 7
        assert team["max_concurrent_per_owner"] == 2
        assert team["max_tier"] == "Small"
        assert _decimal(team["max_credits_per_hour"]) == Decimal("120.5")
        assert team["guaranteed"] == 1
        assert _decimal(team["monthly_budget_credits"]) == 900
        assert team["budget_policy"] == "hibernate"
        assert _decimal(team["budget_soft_threshold"]) == Decimal("0.75")
        assert [_decimal(t) for t in team["budget_thresholds"]] == [Decimal("0.5"), Decimal("0.9")]
        # The form shows the saved values back.
        assert await admin.input_value(f"{form} [name=max_concurrent]") == "7"

        rows = await _audit(org, action="team.update", target="billing")
        assert len(rows) == audited + 1
        newest = rows[0]
        assert newest["actor"] == "env-admin" and newest["outcome"] == "ok"
        assert set(newest["detail"]) == {
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

    async def test_a_refused_value_changes_nothing_and_says_why(
        self, org: Org, admin: Page
    ) -> None:
        before = await org.get("/v1/admin/teams/billing")
        audited = len(await _audit(org, target="billing"))
        await b.open_page(admin, org.url + "/dashboard/teams/billing")
        await admin.fill("#team-limits-form [name=max_concurrent]", "-3")
        async with admin.expect_navigation():
            await admin.click("#team-limits-form [type=submit]")
        assert await admin.locator("#max_concurrent-error").count() == 1
        assert await admin.get_attribute("#max_concurrent", "aria-invalid") == "true"
        assert await org.get("/v1/admin/teams/billing") == before
        assert len(await _audit(org, target="billing")) == audited

    async def test_a_key_is_issued_rotated_and_revoked_from_the_team_page(
        self, org: Org, admin: Page
    ) -> None:
        await b.open_page(admin, org.url + "/dashboard/teams/ads")
        await admin.fill("#issue-key-form [name=name]", "reporting")
        boxes = admin.locator("#issue-key-form input[name=scopes]")
        for n in range(await boxes.count()):
            await boxes.nth(n).uncheck()
        await admin.check("#issue-key-form input[name=scopes][value='usage:read']")
        async with admin.expect_navigation():
            await admin.click("#issue-key-form [type=submit]")
        issued = await admin.input_value("#issued-key")
        # The key shown once works against the API, with the scopes ticked.
        mine = {"Authorization": f"Bearer {issued}"}
        assert (await org.api.get("/v1/usage", headers=mine)).status_code == 200
        assert (await org.api.get("/v1/sandboxes", headers=mine)).status_code == 403
        (made,) = [k for k in await org.get("/v1/admin/teams/ads/keys") if k["name"] == "reporting"]
        assert made["scopes"] == ["usage:read"]
        assert issued.startswith(f"crl_{made['id']}_")

        await b.open_page(admin, org.url + "/dashboard/teams/ads")
        row = f"#keys-table tr[data-key='{made['id']}']"
        await admin.select_option(f"{row} select[name=overlap_seconds]", "0")
        async with admin.expect_navigation():
            await admin.click(f"{row} form[action$='/rotate'] [type=submit]")
        rotated = await admin.input_value("#issued-key")
        assert rotated != issued
        keys = await org.get("/v1/admin/teams/ads/keys")
        (successor,) = [k for k in keys if k["rotated_from"] == made["id"]]
        assert (await org.api.get("/v1/usage", headers=mine)).status_code == 401

        await b.open_page(admin, org.url + "/dashboard/teams/ads")
        row = f"#keys-table tr[data-key='{successor['id']}']"
        async with admin.expect_navigation():
            await admin.click(f"{row} form[action$='/revoke'] [type=submit]")
        assert admin.url.endswith("/dashboard/teams/ads?done=revoked")
        revoked = await org.get(f"/v1/admin/keys/{successor['id']}")
        assert revoked["revoked_at"] is not None
        actions = [r["action"] for r in await _audit(org, team="ads")][:3]
        assert actions == ["key.revoke", "key.rotate", "key.create"]
        # A revoked key's row keeps no forms.
        assert await admin.locator(f"{row} form").count() == 0


class TestCsrf:
    async def test_a_post_without_its_token_is_refused_and_changes_nothing(
        self, org: Org, admin: Page, chromium: Browser
    ) -> None:
        before = await org.get("/v1/admin/teams/docs")
        audited = len(await _audit(org, team="docs"))
        await b.open_page(admin, org.url + "/dashboard/teams/docs")

        # A script on the page posting without the token.
        path = "/dashboard/teams/docs/limits"
        assert await _post_from_page(admin, path, {"max_concurrent": "1"}, with_token=False) == 403
        sandbox = org.sandboxes["docs-a"]
        hibernate = f"/dashboard/sandboxes/{sandbox}/hibernate"
        assert await _post_from_page(admin, hibernate, {}, with_token=False) == 403
        keys = "/dashboard/teams/docs/keys"
        assert (
            await _post_from_page(
                admin, keys, {"name": "x", "scopes": "usage:read"}, with_token=False
            )
            == 403
        )

        # The real form, its hidden token removed, submitted by a person.
        await admin.fill("#team-limits-form [name=max_concurrent]", "1")
        await admin.evaluate(
            "document.querySelector('#team-limits-form input[name=csrf_token]').remove()"
        )
        async with admin.expect_navigation() as navigation:
            await admin.click("#team-limits-form [type=submit]")
        refused = await navigation.value
        assert refused is not None and refused.status == 403
        assert "token" in (await admin.text_content("main") or "")

        # And the token of another session (another admin's browser) is no better than none.
        async with b.context(chromium) as other:
            elsewhere = await b.sign_in(other, org.url, ADMIN_KEY)
            foreign = await elsewhere.get_attribute("input[name=csrf_token]", "value")
        await b.open_page(admin, org.url + "/dashboard/teams/docs")
        ours = await admin.get_attribute("#team-limits-form input[name=csrf_token]", "value")
        assert foreign and foreign != ours
        await admin.evaluate(
            "token => document.querySelector('#team-limits-form input[name=csrf_token]')"
            ".value = token",
            foreign,
        )
        await admin.fill("#team-limits-form [name=max_concurrent]", "1")
        async with admin.expect_navigation() as navigation:
            await admin.click("#team-limits-form [type=submit]")
        refused = await navigation.value
        assert refused is not None and refused.status == 403

        assert await org.get("/v1/admin/teams/docs") == before
        assert len(await _audit(org, team="docs")) == audited
        assert (await org.get(f"/v1/sandboxes/{sandbox}"))["state"] == "running"


@dataclass
class Tour:
    """Every page, opened by a person at both widths: its screenshot, how far it overflows the
    viewport, and every request the browser made on the way."""

    shots: dict[tuple[str, int], Path] = field(default_factory=dict)
    overflow: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    requests: b.Requests = field(default_factory=b.Requests)


def _team_key_pages() -> dict[str, str]:
    return {
        "team-key-overview": "/dashboard",
        "team-key-team": "/dashboard/teams/docs",
        "team-key-usage": "/dashboard/usage",
    }


@pytest.fixture(scope="module")
async def tour(org: Org, chromium: Browser) -> Tour:
    done = Tour()

    async def at(width: int) -> None:
        async with b.context(chromium, done.requests, viewport=_viewport(width)) as ctx:
            page = await ctx.new_page()
            await b.open_page(page, org.url + "/dashboard/login")
            done.shots["login", width] = await b.screenshot(page, "login")
            page = await b.sign_in(ctx, org.url, ADMIN_KEY)
            for name, path in _pages(org).items():
                await b.open_page(page, org.url + path)
                done.shots[name, width] = await b.screenshot(page, name)
                done.overflow[name, width] = await b.too_wide(page)
        async with b.context(chromium, done.requests, viewport=_viewport(width)) as ctx:
            page = await b.sign_in(ctx, org.url, org.keys["docs"])
            for name, path in _team_key_pages().items():
                await b.open_page(page, org.url + path)
                done.shots[name, width] = await b.screenshot(page, name)
                done.overflow[name, width] = await b.too_wide(page)

    # Both widths at once: the browser renders them side by side.
    await asyncio.gather(at(b.WIDE), at(b.NARROW))
    return done


class TestEveryPage:
    async def test_no_request_leaves_corrals_origin(self, org: Org, tour: Tour) -> None:
        # Scripts, styles and pages were all fetched, from Corral itself.
        assert any("/dashboard/static/dashboard.js" in url for url in tour.requests.urls)
        assert any("/dashboard/static/vendor/" in url for url in tour.requests.urls)
        assert tour.requests.outside(org.url) == []
        # So did every page any other test of the module has opened so far.
        assert org.requests.outside(org.url) == []

    async def test_every_page_is_captured_wide_and_narrow(self, org: Org, tour: Tour) -> None:
        names = ["login", *_pages(org), *_team_key_pages()]
        for name in names:
            for width in (b.WIDE, b.NARROW):
                shot = tour.shots[name, width]
                assert shot == b.ARTIFACTS / f"{name}-{width}.png"
                # A PNG's width is in its header: the page was laid out at least that wide
                # (wider only when it overflows, which the next test reports).
                header = shot.read_bytes()[:24]
                assert header[:8] == b"\x89PNG\r\n\x1a\n", shot
                assert int.from_bytes(header[16:20], "big") >= width, (name, width)

    async def test_no_page_is_wider_than_a_phone(self, tour: Tour) -> None:
        # A phone scrolls a page down, never sideways: wide tables scroll inside their own
        # wrappers.
        wide = {
            f"{name} at {width}px": found for (name, width), found in tour.overflow.items() if found
        }
        assert wide == {}, wide

    async def test_every_page_passes_axe_serious_and_critical_rules(
        self, org: Org, chromium: Browser
    ) -> None:
        # axe is injected as an inline script, which the pages' CSP (script-src 'self') refuses;
        # this context alone ignores the CSP.
        found: dict[str, list[dict[str, Any]]] = {}
        async with b.context(
            chromium, org.requests, viewport=_viewport(b.WIDE), bypass_csp=True
        ) as ctx:
            page = await ctx.new_page()
            await b.open_page(page, org.url + "/dashboard/login")
            found["/dashboard/login"] = await b.axe_findings(page)
            page = await b.sign_in(ctx, org.url, ADMIN_KEY)
            for path in _pages(org).values():
                await b.open_page(page, org.url + path)
                found[path] = await b.axe_findings(page)
        async with b.context(
            chromium, org.requests, viewport=_viewport(b.NARROW), bypass_csp=True
        ) as ctx:
            page = await b.sign_in(ctx, org.url, org.keys["docs"])
            for path in ("/dashboard", "/dashboard/teams/docs", "/dashboard/usage"):
                await b.open_page(page, org.url + path)
                found[f"{path} (team key, {b.NARROW}px)"] = await b.axe_findings(page)
        report = "\n".join(b.describe(url, v) for url, v in found.items() if v)
        if report:
            print("axe findings:\n" + report)
        failing = {url: b.blocking(v) for url, v in found.items() if b.blocking(v)}
        assert not failing, "\n" + "\n".join(b.describe(u, v) for u, v in failing.items())

    async def test_the_overview_reads_without_javascript(self, org: Org, chromium: Browser) -> None:
        async with b.context(chromium, org.requests, java_script_enabled=False) as ctx:
            page = await b.sign_in(ctx, org.url, ADMIN_KEY)
            plan = await org.get("/v1/admin/plan")
            quota = await org.get("/v1/quota", team="docs")
            assert await b.figure(page, "effective-limit") == plan["effective_limit"]
            assert await b.figure(page, "live") == quota["org"]["live"]
            for name in (
                "running",
                "starting",
                "unmanaged",
                "headroom",
                "burn-rate",
                "month-spend",
                "month-forecast",
            ):
                assert await page.locator(f"[data-figure='{name}'] .figure-text").inner_text()
            # The chart's numbers are a table in the page, drawn by no script.
            assert await b.table(page, "concurrency-table")
            assert await b.table(page, "near-budget-table")
            await b.open_page(page, org.url + "/dashboard/teams")
            assert len(await b.table(page, "teams-table")) == len(await org.get("/v1/admin/teams"))
            await b.open_page(page, org.url + "/dashboard/sandboxes")
            assert await b.table(page, "sandboxes-table")

    async def test_the_overview_refreshes_its_figures_in_place(self, org: Org, admin: Page) -> None:
        running = await b.figure(admin, "running")
        loads = []
        admin.on("load", lambda _: loads.append(1))
        sandbox = org.sandboxes["billing-a"]
        stopped = await org.api.post(
            f"/v1/sandboxes/{sandbox}/hibernate", headers=org.key_headers("billing")
        )
        assert stopped.status_code == 200, stopped.text
        # A person coming back to the tab: the page refreshes at once rather than at its next
        # 10-second tick.
        await admin.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
        await admin.wait_for_function(
            "n => document.querySelector(\"[data-figure='running']\").dataset.value == n",
            arg=str(running - 1),
            timeout=15_000,
        )
        assert loads == []
        text = await admin.locator("[data-figure='running'] .figure-text").inner_text()
        assert text == str(running - 1)
        quota = await org.get("/v1/quota", team="billing")
        assert await b.figure(admin, "live") == quota["org"]["live"]
        assert await b.figure(admin, "headroom") == quota["org"]["headroom"]


def _csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


class TestAdminsDay:
    async def test_an_admin_runs_the_platform_for_a_day(
        self, org: Org, admin: Page, tmp_path: Path
    ) -> None:
        # Morning: the organisation at a glance, as the API sees it.
        plan = await org.get("/v1/admin/plan")
        quota = await org.get("/v1/quota", team="search-ui")
        assert await b.figure(admin, "effective-limit") == plan["effective_limit"]
        assert await b.figure(admin, "live") == quota["org"]["live"]

        # One team is over its budget: its row on the overview leads to its page.
        over = admin.locator("#near-budget-table tbody tr", has_text="search-ui")
        assert "over" in await over.inner_text()
        async with admin.expect_navigation():
            await over.get_by_role("link", name="search-ui").click()
        assert admin.url == org.url + "/dashboard/teams/search-ui"
        spent = await b.figure(admin, "team-month-spend")
        assert spent > OVER_BUDGET

        # It gets a budget it can live with.
        await admin.fill("#team-limits-form [name=monthly_budget_credits]", "5000")
        async with admin.expect_navigation():
            await admin.click("#team-limits-form [type=submit]")
        assert admin.url.endswith("/dashboard/teams/search-ui?done=limits")
        team = await org.get("/v1/admin/teams/search-ui")
        assert _decimal(team["monthly_budget_credits"]) == 5000
        (raised, *_) = await _audit(org, action="team.update", target="search-ui")
        assert raised["detail"] == {"monthly_budget_credits": "5000"}, raised

        # Its sandboxes that are running, idle all night, are hibernated one by one, each
        # through its confirmation page.
        running = [
            row["Sandbox"]
            for row in await b.table(admin, "team-sandboxes-table")
            if row["State"] == "running"
        ]
        assert sorted(running) == sorted([org.sandboxes["search-a"], org.sandboxes["search-b"]])
        for sandbox in running:
            async with admin.expect_navigation():
                await admin.get_by_role("link", name=sandbox).click()
            async with admin.expect_navigation():
                await admin.get_by_role("link", name="Hibernate…").click()
            assert admin.url.endswith(f"/dashboard/sandboxes/{sandbox}/confirm?action=hibernate")
            assert sandbox in (await admin.text_content("h1") or "")
            # Confirming is a POST of the confirmation form; until then nothing happened.
            assert (await org.get(f"/v1/sandboxes/{sandbox}"))["state"] == "running"
            async with admin.expect_navigation():
                await admin.click("#confirm-form [type=submit]")
            assert admin.url.endswith(f"/dashboard/sandboxes/{sandbox}?done=hibernate")
            assert "hibernated" in (await admin.text_content(".flash") or "")
            shown = await org.get(f"/v1/sandboxes/{sandbox}")
            assert shown["state"] == "hibernated"
            events = await org.get(f"/v1/sandboxes/{sandbox}/events")
            assert (events[-1]["to_state"], events[-1]["cause"], events[-1]["actor"]) == (
                "hibernated",
                "api",
                "env-admin",
            )
            assert (await _events_shown(admin))[-1]["to"] == "hibernated"
            async with admin.expect_navigation():
                await admin.click(".details a[href='/dashboard/teams/search-ui']")
        assert await b.figure(admin, "team-running") == 0

        # Back on the overview the team is no longer flagged.
        await admin.get_by_role("link", name="Overview").click()
        await admin.wait_for_url(org.url + "/dashboard")
        assert await admin.locator("#near-budget-table tr", has_text="search-ui").count() == 0

        # Evening: the month's usage by team, downloaded as CSV; it is the API's report for the
        # same parameters (read just before and just after, for the VMs still running).
        await admin.get_by_role("link", name="Usage").click()
        await admin.wait_for_url(org.url + "/dashboard/usage")
        await admin.check("#usage-form input[name=group_by][value=team]")
        await admin.uncheck("#usage-form input[name=group_by][value=day]")
        async with admin.expect_navigation():
            await admin.click("#usage-form [type=submit]")
        link = await admin.get_attribute("#usage-csv", "href")
        assert link is not None and link.startswith("/dashboard/usage.csv?")
        query = link.split("?", 1)[1]
        api_csv = f"/v1/usage?format=csv&{query}"
        before = (await org.api.get(api_csv, headers=ADMIN)).text
        async with admin.expect_download() as waiting:
            await admin.click("#usage-csv")
        download = await waiting.value
        saved = tmp_path / download.suggested_filename
        await download.save_as(saved)
        after = (await org.api.get(api_csv, headers=ADMIN)).text
        assert download.suggested_filename.startswith("usage-")

        got, low, high = (_csv_rows(t) for t in (saved.read_text(), before, after))
        assert (
            got[0] == low[0] == high[0] == ["team", "seconds", "billed_minutes", "credits", "usd"]
        )
        assert [r[0] for r in got] == [r[0] for r in low] == [r[0] for r in high]
        idle = {"search-ui"}
        for row, first, last in zip(got[1:], low[1:], high[1:], strict=True):
            if row[0] in idle:
                assert row == first == last, row
            for shown, lo, hi in zip(row[1:], first[1:], last[1:], strict=True):
                assert Decimal(lo) <= Decimal(shown) <= Decimal(hi), (row, first, last)
        # The page's table is the same report.
        table = {r["team"]: r["Credits"] for r in await b.table(admin, "usage-table")}
        assert set(table) == {r[0] for r in got[1:]}
