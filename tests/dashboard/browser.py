"""Helpers for driving the dashboard in a real browser: Debian's Chromium under Playwright,
signed in through the login form like a person, and what the tests read off its pages (the
`data-figure` hooks, tables by id, forms), screenshots and axe-core's findings."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, Request

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE = ROOT / "tests" / "node" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
WIDE, NARROW = 1280, 390
VIEWPORT_HEIGHT = 800
TIMEOUT_MS = 15_000
# Findings at these impacts fail a page; minor and moderate ones are printed, not failed.
BLOCKING_IMPACTS = ("serious", "critical")


@dataclass
class Requests:
    """Every request any page of the recorded contexts made, in order."""

    urls: list[str] = field(default_factory=list)

    def record(self, request: Request) -> None:
        self.urls.append(request.url)

    def outside(self, origin: str) -> list[str]:
        """The URLs that did not go to `origin` (its own paths, not a look-alike host)."""
        return [url for url in self.urls if not (url == origin or url.startswith(origin + "/"))]


@asynccontextmanager
async def context(
    browser: Browser, requests: Requests | None = None, **options: Any
) -> AsyncIterator[BrowserContext]:
    """A fresh browser context (its own cookies), every request of its pages recorded."""
    made = await browser.new_context(**options)
    made.set_default_timeout(TIMEOUT_MS)
    if requests is not None:
        made.on("request", requests.record)
    try:
        yield made
    finally:
        await made.close()


async def sign_in(ctx: BrowserContext, origin: str, key: str) -> Page:
    """Sign in through the login form as a person would; the page lands on the overview."""
    page = await ctx.new_page()
    await page.goto(f"{origin}/dashboard/login")
    await page.fill("#api-key", key)
    async with page.expect_navigation():
        await page.click("form:has(#api-key) [type=submit]")
    assert page.url == f"{origin}/dashboard", f"sign-in landed on {page.url}"
    return page


async def open_page(page: Page, url: str, *, status: int = 200) -> None:
    response = await page.goto(url)
    assert response is not None, url
    assert response.status == status, f"{url}: {response.status}\n{await page.content()}"


async def figure(page: Page, name: str, within: str = "body") -> Decimal:
    """The plain number of a key figure (`data-figure=name`, its `data-value`)."""
    hooks = page.locator(f"{within} [data-figure='{name}']")
    count = await hooks.count()
    assert count >= 1, f"no data-figure={name!r} in {within} on {page.url}"
    value = await hooks.first.get_attribute("data-value")
    assert value is not None, f"data-figure={name!r} has no data-value on {page.url}"
    return Decimal(value)


async def figures(page: Page, name: str, within: str = "body") -> list[Decimal]:
    """Every `data-figure=name` under `within`, in page order."""
    values = await page.locator(f"{within} [data-figure='{name}']").evaluate_all(
        "els => els.map(e => e.getAttribute('data-value'))"
    )
    return [Decimal(v) for v in values]


async def table(page: Page, table_id: str) -> list[dict[str, str]]:
    """A table's body rows as {header text: cell text}, whitespace collapsed."""
    rows: list[dict[str, str]] = await page.evaluate(
        """id => {
            const table = document.getElementById(id);
            if (!table) return null;
            const clean = s => s.replace(/\\s+/g, ' ').trim();
            const heads = [...table.querySelectorAll('thead th')].map(th => clean(th.innerText));
            return [...table.querySelectorAll('tbody tr')].map(tr => {
                const row = {};
                [...tr.children].forEach((cell, i) => {
                    row[heads[i] ?? String(i)] = clean(cell.innerText);
                });
                return row;
            });
        }""",
        table_id,
    )
    assert rows is not None, f"no table #{table_id} on {page.url}"
    return rows


async def post_forms(page: Page) -> list[str]:
    """The path every POST form of the page sends to (GET forms, filters, change nothing)."""
    actions: list[str] = await page.locator("form[method=post i]").evaluate_all(
        "els => els.map(f => new URL(f.getAttribute('action') || '', location.href).pathname)"
    )
    return actions


async def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG of what the page shows now, named by page and width."""
    width = page.viewport_size["width"] if page.viewport_size else 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}-{width}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def too_wide(page: Page) -> list[str]:
    """Why the page scrolls sideways, if it does: the elements (by tag, id and class) that
    stick out past the viewport's right edge or whose own text overflows them, leaving out
    those inside a box that scrolls or clips horizontally (a wide table's wrapper)."""
    found: list[str] = await page.evaluate(
        """() => {
            const root = document.documentElement;
            if (root.scrollWidth <= root.clientWidth + 1) return [];
            const clipped = el => {
                for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
                    if (getComputedStyle(p).overflowX !== 'visible') return true;
                }
                return false;
            };
            const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
                + (typeof el.className === 'string' && el.className.trim()
                   ? '.' + el.className.trim().split(/\\s+/).join('.') : '');
            const out = [];
            for (const el of document.body.querySelectorAll('*')) {
                if (clipped(el)) continue;
                const past = el.getBoundingClientRect().right - root.clientWidth;
                const spill = getComputedStyle(el).overflowX === 'visible'
                    ? el.scrollWidth - el.clientWidth : 0;
                if (past > 1) out.push(`${name(el)}: ${Math.round(past)}px past the edge`);
                else if (spill > 1 && el.clientWidth > 0)
                    out.push(`${name(el)}: its content ${spill}px wider than it`);
            }
            return out.length ? out.slice(0, 10) : [`the page is ${root.scrollWidth}px wide`];
        }"""
    )
    return found


async def axe_findings(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (the context must bypass the CSP: the
    script is injected inline, which `script-src 'self'` refuses)."""
    assert AXE.is_file(), f"{AXE} is missing: `cd tests/node && npm ci` installs it"
    await page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = await page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})"
    )
    violations: list[dict[str, Any]] = result["violations"]
    return violations


def blocking(violations: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in violations if v.get("impact") in BLOCKING_IMPACTS]


def describe(url: str, violations: Iterable[dict[str, Any]]) -> str:
    """A readable account of axe findings: rule, impact, help link and the offending nodes."""
    lines = []
    for v in violations:
        lines.append(f"{url}: [{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']})")
        for node in v["nodes"][:5]:
            summary = " ".join(line.strip() for line in node.get("failureSummary", "").splitlines())
            lines.append(f"    {json.dumps(node.get('target'))}: {summary}")
            lines.append(f"        {node.get('html', '')[:200]}")
    return "\n".join(lines)
