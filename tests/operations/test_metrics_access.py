"""`/metrics` is closed by default: the metrics token when one is set, else admin keys only;
and a deployment on the real upstream does not start without the token or the browser-token
secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from app.db import transaction
from app.identity import service as identity_service
from app.main import StartupError, build_runtime
from app.runtime import Runtime
from app.settings import Settings
from tests.fixtures import factories

TOKEN = "metrics-token-" + "m" * 20
ROOT = Path(__file__).resolve().parents[2]


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


class TestWithoutToken:
    async def test_no_credential_is_refused_with_how_to_open_it(
        self, client: httpx.AsyncClient
    ) -> None:
        for headers in ({}, _bearer("nonsense"), {"Authorization": "Basic eDp5"}):
            response = await client.get("/metrics", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["type"].endswith("metrics-closed")
            assert "CORRAL_METRICS_TOKEN" in response.json()["detail"]
            assert response.headers["WWW-Authenticate"] == "Bearer"

    async def test_a_team_key_is_refused_and_admin_keys_may_scrape(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        team = await factories.team_with_key(client)
        refused = await client.get("/metrics", headers=team)
        assert refused.status_code == 403
        assert "CORRAL_METRICS_TOKEN" in refused.json()["detail"]
        assert (await client.get("/metrics", headers=factories.ADMIN)).status_code == 200
        # An issued admin key (`corral admin create-admin-key`) as well as CORRAL_ADMIN_KEY.
        async with transaction(runtime.sessions) as session:
            issued = await identity_service.issue_key(
                session, team_id=None, name="ops", scopes=["admin"], is_admin=True
            )
        assert (await client.get("/metrics", headers=_bearer(issued.token))).status_code == 200


class TestWithToken:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"metrics_token": SecretStr(TOKEN)})

    async def test_only_the_token_scrapes(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        assert (await client.get("/metrics", headers=_bearer(TOKEN))).status_code == 200
        for headers in ({}, factories.ADMIN, _bearer(TOKEN + "x"), _bearer(TOKEN[:-1])):
            response = await client.get("/metrics", headers=headers)
            assert response.status_code == 401, headers
            assert "CORRAL_METRICS_TOKEN" in response.json()["detail"]


class TestProductionSecrets:
    def test_a_short_metrics_token_is_refused(self, settings: Settings) -> None:
        with pytest.raises(ValidationError, match="CORRAL_METRICS_TOKEN"):
            Settings.model_validate({**settings.model_dump(), "metrics_token": "short"})

    def test_the_real_upstream_needs_both_secrets(self, settings: Settings) -> None:
        real = settings.model_copy(
            update={"upstream": "codesandbox", "upstream_key": SecretStr("csb_" + "k" * 20)}
        )
        assert real.missing_production_secrets() == [
            "CORRAL_BROWSER_TOKEN_SECRET",
            "CORRAL_METRICS_TOKEN",
        ]
        both = real.model_copy(
            update={
                "browser_token_secret": SecretStr("b" * 40),
                "metrics_token": SecretStr(TOKEN),
            }
        )
        assert both.missing_production_secrets() == []
        # A key alone means the real upstream too.
        implied = settings.model_copy(
            update={"upstream": None, "upstream_key": SecretStr("csb_" + "k" * 20)}
        )
        assert implied.missing_production_secrets() == real.missing_production_secrets()
        assert settings.missing_production_secrets() == []

    async def test_start_stops_before_touching_the_database(self, settings: Settings) -> None:
        real = settings.model_copy(
            update={
                "upstream": "codesandbox",
                "upstream_key": SecretStr("csb_" + "k" * 20),
                "metrics_token": SecretStr(TOKEN),
                # Nothing listens here: the check must come first.
                "database_url": SecretStr("postgresql://nobody@127.0.0.1:9/none"),
            }
        )
        with pytest.raises(StartupError, match="needs CORRAL_BROWSER_TOKEN_SECRET \\("):
            await build_runtime(real)

    def test_corral_serve_exits_with_the_message(self, tmp_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "CSB_API_KEY"))}
        env.update(
            CORRAL_UPSTREAM="codesandbox",
            CORRAL_UPSTREAM_KEY="csb_" + "k" * 20,
            CORRAL_DATABASE_URL="postgresql://nobody@127.0.0.1:9/none",
            CORRAL_DATA_DIR=str(tmp_path),
            CORRAL_PORT="0",
        )
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "serve"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0
        output = done.stdout + done.stderr
        assert "CORRAL_UPSTREAM=codesandbox needs CORRAL_BROWSER_TOKEN_SECRET and " in output
        assert "CORRAL_METRICS_TOKEN" in output
