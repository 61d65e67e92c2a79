"""The accounting timezone is the runtime's setting, passed to what counts months and days:
two apps in one process count in their own zones, whichever was built last."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx

from app.main import create_app
from app.runtime import Runtime
from app.settings import Settings
from app.usage import periods
from tests.fixtures import factories


class TestSetting:
    def test_is_a_zone_read_from_its_name(self) -> None:
        assert Settings(budget_timezone="Asia/Kolkata").budget_timezone == ZoneInfo("Asia/Kolkata")
        assert Settings().budget_timezone == ZoneInfo("UTC")


class TestTwoApps:
    async def test_each_reports_in_its_own_settings_timezone(self, runtime: Runtime) -> None:
        new_york = ZoneInfo("America/New_York")
        ny_settings = {**runtime.settings.model_dump(), "budget_timezone": "America/New_York"}
        ny_runtime = replace(runtime, settings=Settings.model_validate(ny_settings))
        ny_app = create_app(runtime=ny_runtime)
        # Built second: a zone kept per process rather than per app would now be UTC for both.
        utc_app = create_app(runtime=runtime)
        for app, zone in ((ny_app, new_york), (utc_app, ZoneInfo("UTC"))):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://corral"
            ) as http:
                response = await http.get("/v1/usage", headers=factories.ADMIN)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["timezone"] == zone.key
            # The default window is the calendar month in that zone.
            at = datetime.fromisoformat(body["at"])
            assert datetime.fromisoformat(body["from"]) == periods.month_start(at, zone)
            assert datetime.fromisoformat(body["to"]) == periods.next_month_start(
                periods.month_start(at, zone), zone
            )
