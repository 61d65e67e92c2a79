"""`GET /v1/sandboxes?tag=` lists the sandboxes that carry the tag."""

from __future__ import annotations

import httpx

from tests.fixtures import factories


async def test_the_tag_filter_lists_only_tagged_sandboxes(client: httpx.AsyncClient) -> None:
    headers = await factories.team_with_key(client)
    tagged = await factories.sandbox(client, headers, start=False, tags=["ci", "web"])
    await factories.sandbox(client, headers, start=False, tags=["web"])
    listed = await client.get("/v1/sandboxes", params={"tag": "ci"}, headers=headers)
    assert listed.status_code == 200, listed.text
    assert [s["id"] for s in listed.json()["items"]] == [tagged["id"]]
