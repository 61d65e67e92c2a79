"""A real browser: headless Chromium (Debian's, driven by Playwright) loads a product page
from one loopback origin, and the page fetches a session from Corral (a real `corral serve`)
on another origin with a browser token. A page served from an origin not on Corral's
allowlist is refused by CORS: its fetch fails inside the page and no session is minted."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.async_api import Browser, async_playwright

from tests import processes
from tests.conftest import ADMIN_KEY
from tests.database import scratch
from tests.fixtures.factories import ALL_TEAM_SCOPES

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
SIM_KEY = "browser-test-simulator-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
PAGE_TIMEOUT_MS = 30_000


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def static_site() -> Iterator[str]:
    """This directory (page.html) on its own loopback origin."""
    handler = partial(_Quiet, directory=str(Path(__file__).parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with scratch(f"corral_browser_{os.getpid()}") as url:
        yield url


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def _open(browser: Browser, origin: str, fragment: dict[str, str]) -> tuple[str, str]:
    """Load the page and wait for it to settle; its status and what it shows."""
    page = await browser.new_page()
    try:
        await page.goto(f"{origin}/page.html#{urlencode(fragment)}")
        await page.wait_for_function(
            "document.getElementById('status').textContent !== 'connecting'",
            timeout=PAGE_TIMEOUT_MS,
        )
        status = await page.text_content("#status") or ""
        shown = await page.text_content("#session" if status == "connected" else "#error")
        return status, shown or ""
    finally:
        await page.close()


async def test_page_on_allowed_origin_gets_a_session_and_others_are_refused(
    database: str, browser: Browser, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        allowed = stack.enter_context(static_site())
        other = stack.enter_context(static_site())
        sim = stack.enter_context(processes.simulator(SIM_KEY, tmp_path))
        corral = stack.enter_context(
            processes.corral(
                database_url=database,
                upstream_url=sim.url,
                upstream_key=SIM_KEY,
                admin_key=ADMIN_KEY,
                log_dir=tmp_path,
                browser_origins=allowed,
                log_level="DEBUG",
            )
        )
        async with httpx.AsyncClient(base_url=corral.url, timeout=30) as api:
            made = await api.post(
                "/v1/admin/teams", json={"id": "web", "name": "web"}, headers=ADMIN
            )
            assert made.status_code == 201, made.text
            key = await api.post(
                "/v1/admin/teams/web/keys",
                json={"name": "backend", "scopes": ALL_TEAM_SCOPES},
                headers=ADMIN,
            )
            assert key.status_code == 201, key.text
            team = {"Authorization": f"Bearer {key.json()['key']}"}
            sandbox = (await api.post("/v1/sandboxes", json={}, headers=team)).json()
            # Asleep, so the page's session has to wake it.
            await api.post(f"/v1/sandboxes/{sandbox['id']}/hibernate", headers=team)
            issued = await api.post(
                f"/v1/sandboxes/{sandbox['id']}/browser-tokens",
                json={"user": "alice@web", "permission": "write", "ttl_seconds": 300},
                headers=team,
            )
            assert issued.status_code == 201, issued.text
            fragment = {
                "corral": corral.url,
                "token": issued.json()["token"],
                "sandbox": sandbox["upstream_id"],
            }

            status, shown = await _open(browser, allowed, fragment)
            assert status == "connected", shown
            session = json.loads(shown)
            assert session["sandboxId"] == sandbox["upstream_id"]
            assert session["bootupType"] == "RESUME"
            assert session["isPint"] is False and session["pitcherToken"]

            status, shown = await _open(browser, other, fragment)
            assert status == "refused"
            assert "Failed to fetch" in shown

            listed = await api.get(f"/v1/sandboxes/{sandbox['id']}/sessions", headers=team)
            records = listed.json()["items"]
            assert [(r["user"], r["via"]) for r in records] == [("alice@web", "browser")]
            now_running = await api.get(f"/v1/sandboxes/{sandbox['id']}", headers=team)
            assert now_running.json()["state"] == "running"

        # Everything the server process logged, at DEBUG, holds no pitcher token.
        output = corral.output()
        assert '"route": "/v1/browser/session"' in output
        assert session["pitcherToken"] not in output
