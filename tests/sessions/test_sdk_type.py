"""The mint answer is the SDK's `SandboxSession`: `tests/node/session-type.ts` assigns a
recorded answer to that type (and to `connectToSandbox`'s `session` option), and `tsc --noEmit`
in `make test` compiles it. This test keeps the recording honest: a live answer must have the
recorded keys and value types. `CORRAL_RECORD_SDK_SESSION=1` re-records it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures import factories

TS_FILE = Path(__file__).resolve().parents[1] / "node" / "session-type.ts"
RECORDED = re.compile(
    r"(const recorded: SandboxSession = )(\{.*?\})(;\n// END RECORDED)", re.DOTALL
)


def _recorded() -> dict[str, Any]:
    match = RECORDED.search(TS_FILE.read_text())
    assert match is not None, "session-type.ts lost its recorded literal"
    value: dict[str, Any] = json.loads(match.group(2))
    return value


async def test_live_answer_matches_the_recording_checked_by_tsc(
    client: httpx.AsyncClient, sim: httpx.AsyncClient
) -> None:
    headers = await factories.team_with_key(client)
    sandbox = await factories.sandbox(client, headers)
    response = await client.post(
        f"/v1/sandboxes/{sandbox['id']}/sessions",
        json={"user": "alice@corp", "permission": "write"},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    live = response.json()
    if os.environ.get("CORRAL_RECORD_SDK_SESSION") == "1":
        text = RECORDED.sub(
            lambda m: m.group(1) + json.dumps(live, indent=2) + m.group(3), TS_FILE.read_text()
        )
        TS_FILE.write_text(text)
    recorded = _recorded()
    assert list(live) == list(recorded)
    assert {k: type(v) for k, v in live.items()} == {k: type(v) for k, v in recorded.items()}
    assert live["bootupType"] in ("RUNNING", "CLEAN", "RESUME", "FORK")
