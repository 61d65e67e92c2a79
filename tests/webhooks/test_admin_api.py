"""The admin API of webhook endpoints (DESIGN §13): register, read, change, retire, rotate
secrets, and look at and retry deliveries. Secrets are shown once, every change is audited,
bad input changes nothing, and only admin keys get in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from standardwebhooks import Webhook

from app import clock
from app.db import transaction
from app.identity.actor import Actor
from app.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.runtime import Runtime
from app.settings import Settings
from app.webhooks import service, signing
from app.webhooks.events import EVENT_TYPES, Event, emit_many
from tests.fixtures import factories
from tests.test_layering import _offences

ADMIN = factories.ADMIN
ROOT = "/v1/admin/webhooks"
URL = "https://hooks.example.com/corral"
PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings, with an allow-list as a production deployment sets one."""
    return settings.model_copy(
        update={"webhook_allowed_hosts": ["hooks.example.com", "*.corp.example"]}
    )


# --- helpers --------------------------------------------------------------------------------


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body = {"url": URL, "events": ["budget.exhausted"], **body}
    response = await client.post(ROOT, json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def listed(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get(ROOT, headers=ADMIN)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


async def audit_rows(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """The webhook rows of the audit log, oldest first."""
    response = await client.get("/v1/admin/audit", params={"limit": 500}, headers=ADMIN)
    assert response.status_code == 200, response.text
    rows = [r for r in response.json()["items"] if r["action"].startswith("webhook.")]
    return rows[::-1]


def problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["type"].endswith("/" + kind), body
    return body


async def stored(runtime: Runtime, endpoint_id: str) -> WebhookEndpoint:
    async with transaction(runtime.sessions) as session:
        row = await session.get(WebhookEndpoint, endpoint_id)
        assert row is not None
        return row


async def emit(runtime: Runtime, *types: str) -> list[str]:
    """Write one event of each type, as a cause would, in one transaction."""
    async with transaction(runtime.sessions) as session:
        return await emit_many(session, [Event(type=t, data={"team": "search-ui"}) for t in types])


async def deliveries_of(runtime: Runtime, endpoint_id: str) -> list[WebhookDelivery]:
    async with transaction(runtime.sessions) as session:
        rows = await session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .order_by(WebhookDelivery.id)
        )
        return list(rows)


async def settle(
    runtime: Runtime, delivery_id: int, status: str, codes: Sequence[int | None]
) -> None:
    """Record attempts as the delivery worker would: one per code (None: no answer)."""
    at = clock.now()
    async with transaction(runtime.sessions) as session:
        for n, code in enumerate(codes, start=1):
            session.add(
                WebhookAttempt(
                    delivery_id=delivery_id,
                    attempt=n,
                    at=at + timedelta(seconds=n),
                    duration_ms=10 * n,
                    status_code=code,
                    error=None if code is not None else "connection refused",
                )
            )
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(
                status=status,
                attempts=len(codes),
                last_status_code=codes[-1] if codes else None,
                last_error="connection refused" if codes and codes[-1] is None else None,
                next_attempt_at=None if status != "pending" else at,
                completed_at=None if status == "pending" else at,
            )
        )


def verifies(secret: str, signed_with: Sequence[str]) -> bool:
    """Whether a receiver holding `secret` accepts a delivery signed as Corral signs it."""
    body = json.dumps({"type": "budget.exhausted", "timestamp": "2026-01-01T00:00:00+00:00"})
    headers = signing.headers(
        signed_with, message_id="msg_test", sent_at=datetime.now(UTC), body=body
    )
    try:
        Webhook(secret).verify(body, headers)
    except Exception:
        return False
    return True


# --- tests ----------------------------------------------------------------------------------


class TestCreate:
    async def test_answers_the_endpoint_with_a_secret_that_signs_its_deliveries(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create(
            client, events=["budget.exhausted", "org.plan_full"], description="on-call"
        )
        assert created["id"].startswith("whep_") and len(created["id"]) <= 32
        assert created["url"] == URL
        assert created["events"] == ["budget.exhausted", "org.plan_full"]
        assert created["description"] == "on-call"
        assert created["enabled"] is True and created["disabled_reason"] is None
        assert created["previous_secret_expires_at"] is None
        secret = created["secret"]
        assert secret.startswith("whsec_")
        # The receiver's copy verifies what the library signs with it, and what Corral signs
        # with the secret it stored.
        webhook = Webhook(secret)
        now = datetime.now(UTC)
        signature = webhook.sign(msg_id="msg_1", timestamp=now, data='{"a":1}')
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        assert webhook.verify('{"a":1}', headers) == {"a": 1}
        row = await stored(runtime, created["id"])
        assert row.secret == secret
        assert verifies(secret, [row.secret])
        assert not verifies(signing.new_secret(), [row.secret])

    async def test_each_endpoint_has_its_own_id_and_secret(self, client: httpx.AsyncClient) -> None:
        first, second = await create(client), await create(client)
        assert first["id"] != second["id"]
        assert first["secret"] != second["secret"]

    async def test_the_secret_is_shown_in_no_other_answer_nor_in_the_audit_log(
        self, client: httpx.AsyncClient
    ) -> None:
        created = await create(client)
        secret, endpoint = created["secret"], f"{ROOT}/{created['id']}"
        patched = await client.patch(endpoint, json={"description": "x"}, headers=ADMIN)
        answers = [
            await client.get(ROOT, headers=ADMIN),
            await client.get(endpoint, headers=ADMIN),
            patched,
            await client.get(f"{endpoint}/deliveries", headers=ADMIN),
            await client.get("/v1/admin/audit", headers=ADMIN),
        ]
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert secret not in answer.text
            assert '"secret"' not in answer.text and 'previous_secret"' not in answer.text
        assert set((await listed(client))[0]) == set(created) - {"secret"}

    async def test_is_audited_with_the_urls_origin_only(self, client: httpx.AsyncClient) -> None:
        created = await create(client, url="https://a.corp.example:8443/in/T0K3N?sig=s3cr3t")
        rows = await audit_rows(client)
        assert [(r["action"], r["target"], r["team_id"], r["actor"]) for r in rows] == [
            ("webhook.create", created["id"], None, "env-admin")
        ]
        assert rows[0]["detail"] == {
            "url": "https://a.corp.example:8443",
            "events": ["budget.exhausted"],
        }

    async def test_every_known_event_type_may_be_subscribed(
        self, client: httpx.AsyncClient
    ) -> None:
        created = await create(client, events=sorted(EVENT_TYPES))
        assert created["events"] == sorted(EVENT_TYPES)

    async def test_an_unknown_event_type_is_a_422_that_names_it(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post(
            ROOT, json={"url": URL, "events": ["budget.exhausted", "budget.nope"]}, headers=ADMIN
        )
        body = problem(response, 422, "unknown-event-type")
        assert body["unknown"] == ["budget.nope"]
        assert "'budget.nope'" in body["detail"] and "budget.exhausted" in body["detail"]
        assert await listed(client) == []
        assert await audit_rows(client) == []

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("https://attacker.net/hook", "'attacker.net' is not in CORRAL_WEBHOOK_ALLOWED_HOSTS"),
            ("https://169.254.169.254/latest", "not in CORRAL_WEBHOOK_ALLOWED_HOSTS"),
            ("https://corp.example/hook", "not in CORRAL_WEBHOOK_ALLOWED_HOSTS"),
            ("ftp://hooks.example.com/", "http or https"),
            ("https://u:p@hooks.example.com/", "credentials"),
            ("https://hooks.example.com/#x", "fragment"),
            (" https://hooks.example.com/", "whitespace"),
            ("not a url", "whitespace"),
            ("hooks.example.com", "http or https"),
        ],
    )
    async def test_a_url_that_may_not_receive_webhooks_is_a_422_with_the_reason(
        self, client: httpx.AsyncClient, url: str, reason: str
    ) -> None:
        response = await client.post(
            ROOT, json={"url": url, "events": ["org.plan_full"]}, headers=ADMIN
        )
        body = problem(response, 422, "invalid-webhook-url")
        assert reason in body["detail"]
        assert await listed(client) == []
        assert await audit_rows(client) == []

    @pytest.mark.parametrize(
        "body",
        [
            {"url": URL, "events": []},
            {"url": URL, "events": ["org.plan_full", "org.plan_full"]},
            {"url": URL},
            {"events": ["org.plan_full"]},
            {"url": URL, "events": "org.plan_full"},
            {"url": URL, "events": None},
            {"url": URL, "events": [1]},
            {"url": 7, "events": ["org.plan_full"]},
            {"url": "", "events": ["org.plan_full"]},
            {"url": URL + "/" + "a" * 2000, "events": ["org.plan_full"]},
            {"url": URL + "\x00", "events": ["org.plan_full"]},
            {"url": URL, "events": ["org.plan_full"], "description": "d" * 501},
            {"url": URL, "events": ["org.plan_full"], "description": "\x00"},
            {"url": URL, "events": ["x" * 65]},
            {"url": URL, "events": ["org.plan_full"], "secret": "whsec_mine"},
            {"url": URL, "events": ["org.plan_full"], "enabled": False},
        ],
    )
    async def test_a_bad_body_is_a_422_and_creates_nothing(
        self, client: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        response = await client.post(ROOT, json=body, headers=ADMIN)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        assert await listed(client) == []
        assert await audit_rows(client) == []


class TestReadAndChange:
    async def test_the_list_holds_live_endpoints_oldest_first(
        self, client: httpx.AsyncClient
    ) -> None:
        first = await create(client, description="first")
        second = await create(client, events=["reconcile.drift_found"])
        third = await create(client)
        deleted = await client.delete(f"{ROOT}/{second['id']}", headers=ADMIN)
        assert deleted.status_code == 204
        assert [e["id"] for e in await listed(client)] == [first["id"], third["id"]]
        one = await client.get(f"{ROOT}/{first['id']}", headers=ADMIN)
        assert one.status_code == 200
        assert one.json() == {k: v for k, v in first.items() if k != "secret"}

    @pytest.mark.parametrize("bad", ["whep_nosuch", "whep_0123456789abcdef01234567"])
    async def test_an_unknown_id_is_404_on_every_route(
        self, client: httpx.AsyncClient, bad: str
    ) -> None:
        for method, path, body in (
            ("GET", f"{ROOT}/{bad}", None),
            ("PATCH", f"{ROOT}/{bad}", {"enabled": False}),
            ("DELETE", f"{ROOT}/{bad}", None),
            ("POST", f"{ROOT}/{bad}/rotate-secret", None),
            ("GET", f"{ROOT}/{bad}/deliveries", None),
            ("POST", f"{ROOT}/{bad}/deliveries/1/retry", None),
        ):
            response = await client.request(method, path, json=body, headers=ADMIN)
            problem(response, 404, "webhook-not-found")
        assert await audit_rows(client) == []

    @pytest.mark.parametrize(
        "path", [f"{ROOT}/nope", f"{ROOT}/whep_UPPER", f"{ROOT}/whep_{'a' * 28}", f"{ROOT}/%00"]
    )
    async def test_a_malformed_id_is_refused_before_any_query(
        self, client: httpx.AsyncClient, path: str
    ) -> None:
        response = await client.get(path, headers=ADMIN)
        assert response.status_code in (400, 422), response.text
        assert response.headers["content-type"].startswith(PROBLEM_JSON)

    async def test_patch_changes_what_it_names_and_is_audited(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create(client, description="old")
        path = f"{ROOT}/{created['id']}"
        response = await client.patch(
            path,
            json={
                "url": "https://x.corp.example/new?token=abc",
                "events": ["org.plan_headroom_low", "org.plan_full"],
                "enabled": False,
            },
            headers=ADMIN,
        )
        assert response.status_code == 200, response.text
        patched = response.json()
        assert patched["url"] == "https://x.corp.example/new?token=abc"
        assert patched["events"] == ["org.plan_headroom_low", "org.plan_full"]
        assert patched["enabled"] is False
        assert patched["description"] == "old"
        assert (await client.get(path, headers=ADMIN)).json() == patched
        row = await stored(runtime, created["id"])
        assert (row.url, row.enabled, row.secret) == (patched["url"], False, created["secret"])
        cleared = await client.patch(path, json={"description": None}, headers=ADMIN)
        assert cleared.status_code == 200 and cleared.json()["description"] is None
        assert cleared.json()["enabled"] is False
        rows = await audit_rows(client)
        assert [(r["action"], r["detail"]) for r in rows[1:]] == [
            (
                "webhook.update",
                {
                    "url": "https://x.corp.example",
                    "events": ["org.plan_headroom_low", "org.plan_full"],
                    "enabled": False,
                },
            ),
            ("webhook.update", {"description": None}),
        ]

    async def test_a_disabled_endpoint_gets_no_new_deliveries_until_enabled(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create(client)
        path = f"{ROOT}/{created['id']}"
        assert (await client.patch(path, json={"enabled": False}, headers=ADMIN)).status_code == 200
        await emit(runtime, "budget.exhausted")
        assert await deliveries_of(runtime, created["id"]) == []
        assert (await client.patch(path, json={"enabled": True}, headers=ADMIN)).status_code == 200
        await emit(runtime, "budget.exhausted")
        assert len(await deliveries_of(runtime, created["id"])) == 1

    async def test_enabling_clears_why_corral_disabled_it(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create(client)
        async with transaction(runtime.sessions) as session:
            await session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == created["id"])
                .values(enabled=False, disabled_reason="the receiver answered 410 Gone")
            )
        path = f"{ROOT}/{created['id']}"
        shown = (await client.get(path, headers=ADMIN)).json()
        assert shown["disabled_reason"] == "the receiver answered 410 Gone"
        # A change that does not enable it keeps the reason.
        kept = await client.patch(path, json={"description": "looked at"}, headers=ADMIN)
        assert kept.json()["disabled_reason"] == "the receiver answered 410 Gone"
        response = await client.patch(path, json={"enabled": True}, headers=ADMIN)
        assert response.status_code == 200, response.text
        assert response.json()["enabled"] is True
        assert response.json()["disabled_reason"] is None
        row = await stored(runtime, created["id"])
        assert (row.enabled, row.disabled_reason) == (True, None)

    @pytest.mark.parametrize(
        ("body", "status", "kind"),
        [
            ({"url": None}, 422, "null-not-allowed"),
            ({"events": None}, 422, "null-not-allowed"),
            ({"enabled": None, "description": "x"}, 422, "null-not-allowed"),
            ({"url": "https://attacker.net/"}, 422, "invalid-webhook-url"),
            ({"url": "https://hooks.example.com/", "events": ["nope"]}, 422, "unknown-event-type"),
            ({"events": []}, 422, "validation"),
            ({"events": ["org.plan_full", "org.plan_full"]}, 422, "validation"),
            ({"enabled": "yes"}, 422, "validation"),
            ({"secret": "whsec_mine"}, 422, "validation"),
            ({"deleted_at": None}, 422, "validation"),
        ],
    )
    async def test_a_bad_patch_changes_nothing(
        self, client: httpx.AsyncClient, body: dict[str, Any], status: int, kind: str
    ) -> None:
        created = await create(client, description="kept")
        path = f"{ROOT}/{created['id']}"
        problem(await client.patch(path, json=body, headers=ADMIN), status, kind)
        after = (await client.get(path, headers=ADMIN)).json()
        assert after == {k: v for k, v in created.items() if k != "secret"}
        assert [r["action"] for r in await audit_rows(client)] == ["webhook.create"]


class TestDelete:
    async def test_retires_the_endpoint_and_cancels_its_pending_deliveries_only(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        gone = await create(client)
        kept = await create(client)
        await emit(runtime, "budget.exhausted", "budget.exhausted")
        done, waiting = await deliveries_of(runtime, gone["id"])
        await settle(runtime, done.id, "succeeded", [200])
        path = f"{ROOT}/{gone['id']}"
        assert (await client.delete(path, headers=ADMIN)).status_code == 204
        statuses = {d.id: d.status for d in await deliveries_of(runtime, gone["id"])}
        assert statuses == {done.id: "succeeded", waiting.id: "cancelled"}
        cancelled = next(d for d in await deliveries_of(runtime, gone["id"]) if d.id == waiting.id)
        assert cancelled.next_attempt_at is None and cancelled.completed_at is not None
        # Another endpoint's deliveries are left alone.
        assert [d.status for d in await deliveries_of(runtime, kept["id"])] == ["pending"] * 2
        row = await stored(runtime, gone["id"])
        assert row.deleted_at is not None
        for method, route in (
            ("GET", path),
            ("PATCH", path),
            ("DELETE", path),
            ("POST", f"{path}/rotate-secret"),
            ("GET", f"{path}/deliveries"),
        ):
            body = {"enabled": True} if method == "PATCH" else None
            response = await client.request(method, route, json=body, headers=ADMIN)
            problem(response, 404, "webhook-not-found")
        # The outbox no longer writes deliveries for it.
        await emit(runtime, "budget.exhausted")
        assert len(await deliveries_of(runtime, gone["id"])) == 2
        assert len(await deliveries_of(runtime, kept["id"])) == 3
        rows = await audit_rows(client)
        assert [(r["action"], r["target"], r["detail"]) for r in rows[2:]] == [
            ("webhook.delete", gone["id"], {"cancelled": 1})
        ]


class TestRotateSecret:
    async def test_the_old_secret_signs_beside_the_new_one_for_24_hours(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create(client)
        # On Corral's clock, not the wall clock: ten simulated days on.
        advanced = await client.post(
            "/v1/admin/clock/advance", json={"seconds": 10 * 86400}, headers=ADMIN
        )
        assert advanced.status_code == 200, advanced.text
        before = clock.now()
        response = await client.post(f"{ROOT}/{created['id']}/rotate-secret", headers=ADMIN)
        after = clock.now()
        assert response.status_code == 200, response.text
        rotated = response.json()
        new, old = rotated["secret"], created["secret"]
        assert new.startswith("whsec_") and new != old
        expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
        assert before + timedelta(hours=24) <= expires <= after + timedelta(hours=24)
        assert expires > datetime.now(UTC) + timedelta(days=10)
        row = await stored(runtime, created["id"])
        assert (row.secret, row.previous_secret) == (new, old)
        assert row.previous_secret_expires_at == expires
        # A delivery signed with both verifies for a receiver holding either.
        assert row.previous_secret is not None
        assert verifies(new, [row.secret, row.previous_secret])
        assert verifies(old, [row.secret, row.previous_secret])
        assert not verifies(old, [row.secret])
        shown = (await client.get(f"{ROOT}/{created['id']}", headers=ADMIN)).json()
        assert shown["previous_secret_expires_at"] == rotated["previous_secret_expires_at"]
        assert "secret" not in shown

    async def test_a_rotation_inside_the_overlap_replaces_the_previous_with_the_current(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create(client)
        path = f"{ROOT}/{created['id']}/rotate-secret"
        first = (await client.post(path, headers=ADMIN)).json()
        await client.post("/v1/admin/clock/advance", json={"seconds": 3600}, headers=ADMIN)
        second = (await client.post(path, headers=ADMIN)).json()
        assert len({created["secret"], first["secret"], second["secret"]}) == 3
        row = await stored(runtime, created["id"])
        assert (row.secret, row.previous_secret) == (second["secret"], first["secret"])
        expires = datetime.fromisoformat(second["previous_secret_expires_at"])
        assert expires - datetime.fromisoformat(first["previous_secret_expires_at"]) >= timedelta(
            hours=1
        )
        assert row.previous_secret is not None
        assert not verifies(created["secret"], [row.secret, row.previous_secret])

    async def test_a_rotation_waits_for_one_in_progress_and_demotes_its_secret(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        # Unserialised, both would demote the original secret, and the first answer would
        # show a secret overwritten before any receiver could use it.
        created = await create(client)
        admin = Actor(key_id="env-admin", team_id=None, scopes=frozenset({"admin"}), is_admin=True)
        async with transaction(runtime.sessions) as first:
            ahead = await service.rotate_secret(first, admin, created["id"])

            async def second() -> tuple[str, str | None]:
                async with transaction(runtime.sessions) as session:
                    row = await service.rotate_secret(session, admin, created["id"])
                    return row.secret, row.previous_secret

            waiting = asyncio.create_task(second())
            await asyncio.sleep(0.3)
            assert not waiting.done()
            first_secret = ahead.secret
        secret, previous = await waiting
        assert previous == first_secret
        row = await stored(runtime, created["id"])
        assert (row.secret, row.previous_secret) == (secret, first_secret)

    async def test_is_audited_without_either_secret(self, client: httpx.AsyncClient) -> None:
        created = await create(client)
        rotated = (await client.post(f"{ROOT}/{created['id']}/rotate-secret", headers=ADMIN)).json()
        rows = await audit_rows(client)
        assert [(r["action"], r["target"]) for r in rows] == [
            ("webhook.create", created["id"]),
            ("webhook.rotate_secret", created["id"]),
        ]
        assert rows[1]["detail"] == {
            "previous_secret_expires_at": datetime.fromisoformat(
                rotated["previous_secret_expires_at"]
            ).isoformat()
        }
        text = json.dumps(rows)
        assert created["secret"] not in text and rotated["secret"] not in text


class TestDeliveries:
    async def test_newest_first_with_their_event_type_and_attempts(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create(client, events=["budget.exhausted", "org.plan_full"])
        other = await create(client, events=["org.plan_full"])
        first_event, second_event = await emit(runtime, "budget.exhausted", "org.plan_full")
        older, newer = await deliveries_of(runtime, created["id"])
        await settle(runtime, older.id, "failed", [500, None])
        response = await client.get(f"{ROOT}/{created['id']}/deliveries", headers=ADMIN)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["next_cursor"] is None
        assert [(d["id"], d["event_id"], d["event_type"]) for d in page["items"]] == [
            (newer.id, second_event, "org.plan_full"),
            (older.id, first_event, "budget.exhausted"),
        ]
        pending, failed = page["items"]
        assert (pending["status"], pending["attempts"], pending["attempt_log"]) == (
            "pending",
            0,
            [],
        )
        assert pending["next_attempt_at"] is not None and pending["completed_at"] is None
        assert failed["status"] == "failed" and failed["attempts"] == 2
        assert (failed["last_status_code"], failed["last_error"]) == (None, "connection refused")
        assert failed["completed_at"] is not None and failed["next_attempt_at"] is None
        assert [
            (a["attempt"], a["status_code"], a["duration_ms"], a["error"])
            for a in failed["attempt_log"]
        ] == [(1, 500, 10, None), (2, None, 20, "connection refused")]
        # The other endpoint sees its own delivery of the shared event only.
        theirs = (await client.get(f"{ROOT}/{other['id']}/deliveries", headers=ADMIN)).json()
        assert [d["event_id"] for d in theirs["items"]] == [second_event]

    async def test_a_status_filter_and_a_walk_by_cursor(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create(client)
        await emit(runtime, *["budget.exhausted"] * 5)
        ids = [d.id for d in await deliveries_of(runtime, created["id"])]
        await settle(runtime, ids[1], "succeeded", [200])
        await settle(runtime, ids[3], "succeeded", [204])
        path = f"{ROOT}/{created['id']}/deliveries"
        seen: list[int] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get(path, params=params, headers=ADMIN)).json()
            seen += [d["id"] for d in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids[::-1] and pages == 3
        succeeded = await client.get(path, params={"status": "succeeded"}, headers=ADMIN)
        assert [d["id"] for d in succeeded.json()["items"]] == [ids[3], ids[1]]
        pending = await client.get(path, params={"status": "pending", "limit": 2}, headers=ADMIN)
        assert [d["id"] for d in pending.json()["items"]] == [ids[4], ids[2]]
        rest = await client.get(
            path,
            params={"status": "pending", "cursor": pending.json()["next_cursor"]},
            headers=ADMIN,
        )
        assert [d["id"] for d in rest.json()["items"]] == [ids[0]]

    @pytest.mark.parametrize(
        ("params", "status"),
        [
            ({"status": "done"}, 422),
            ({"limit": 0}, 422),
            ({"limit": 201}, 422),
            ({"cursor": "bm9wZQ"}, 400),
            ({"cursor": "ZGVsaXZlcnk6MA"}, 400),  # delivery:0
            ({"cursor": "ZGVsaXZlcnk6OTk5OTk5OTk5OTk5OTk5OTk5OTk5"}, 400),  # past a bigint
            ({"cursor": "x" * 201}, 422),
            ({"cursor": "!!"}, 400),
        ],
    )
    async def test_bad_parameters_are_4xx_problems(
        self, client: httpx.AsyncClient, params: dict[str, Any], status: int
    ) -> None:
        created = await create(client)
        response = await client.get(
            f"{ROOT}/{created['id']}/deliveries", params=params, headers=ADMIN
        )
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith(PROBLEM_JSON)


class TestRetry:
    async def test_a_failed_delivery_is_due_again_now_and_the_retry_is_audited(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create(client)
        (event_id,) = await emit(runtime, "budget.exhausted")
        (delivery,) = await deliveries_of(runtime, created["id"])
        await settle(runtime, delivery.id, "failed", [500, 502, 503])
        await client.post("/v1/admin/clock/advance", json={"seconds": 7200}, headers=ADMIN)
        before = clock.now()
        response = await client.post(
            f"{ROOT}/{created['id']}/deliveries/{delivery.id}/retry", headers=ADMIN
        )
        assert response.status_code == 200, response.text
        retried = response.json()
        assert (retried["id"], retried["event_id"], retried["event_type"]) == (
            delivery.id,
            event_id,
            "budget.exhausted",
        )
        assert retried["status"] == "pending" and retried["completed_at"] is None
        assert retried["attempts"] == 3 and len(retried["attempt_log"]) == 3
        due = datetime.fromisoformat(retried["next_attempt_at"])
        assert before <= due <= clock.now()
        (row,) = await deliveries_of(runtime, created["id"])
        assert (row.status, row.next_attempt_at, row.completed_at) == ("pending", due, None)
        rows = await audit_rows(client)
        assert [(r["action"], r["target"], r["detail"]) for r in rows[1:]] == [
            ("webhook.retry", created["id"], {"delivery_id": delivery.id, "was": "failed"})
        ]

    @pytest.mark.parametrize("status", ["succeeded", "pending"])
    async def test_any_other_live_delivery_may_be_sent_again(
        self, client: httpx.AsyncClient, runtime: Runtime, status: str
    ) -> None:
        created = await create(client)
        await emit(runtime, "budget.exhausted")
        (delivery,) = await deliveries_of(runtime, created["id"])
        await settle(runtime, delivery.id, status, [200] if status == "succeeded" else [500])
        response = await client.post(
            f"{ROOT}/{created['id']}/deliveries/{delivery.id}/retry", headers=ADMIN
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "pending"

    async def test_a_cancelled_delivery_or_one_of_a_deleted_endpoint_is_a_409(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create(client)
        await emit(runtime, "budget.exhausted", "budget.exhausted")
        done, waiting = await deliveries_of(runtime, created["id"])
        await settle(runtime, done.id, "succeeded", [200])
        assert (await client.delete(f"{ROOT}/{created['id']}", headers=ADMIN)).status_code == 204
        for delivery, why in ((waiting, "cancelled"), (done, "deleted")):
            response = await client.post(
                f"{ROOT}/{created['id']}/deliveries/{delivery.id}/retry", headers=ADMIN
            )
            assert why in problem(response, 409, "delivery-not-retryable")["detail"]
        statuses = [d.status for d in await deliveries_of(runtime, created["id"])]
        assert statuses == ["succeeded", "cancelled"]
        assert [r["action"] for r in await audit_rows(client)] == [
            "webhook.create",
            "webhook.delete",
        ]

    async def test_a_delivery_of_another_endpoint_is_404(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        mine, theirs = await create(client), await create(client)
        await emit(runtime, "budget.exhausted")
        (their_delivery,) = await deliveries_of(runtime, theirs["id"])
        await settle(runtime, their_delivery.id, "failed", [500])
        for delivery_id in (their_delivery.id, 999_999):
            response = await client.post(
                f"{ROOT}/{mine['id']}/deliveries/{delivery_id}/retry", headers=ADMIN
            )
            problem(response, 404, "delivery-not-found")
        (row,) = await deliveries_of(runtime, theirs["id"])
        assert row.status == "failed"

    @pytest.mark.parametrize("bad", ["0", "-1", "x", "9223372036854775808", "1.5"])
    async def test_a_malformed_delivery_id_is_a_422(
        self, client: httpx.AsyncClient, bad: str
    ) -> None:
        created = await create(client)
        response = await client.post(
            f"{ROOT}/{created['id']}/deliveries/{bad}/retry", headers=ADMIN
        )
        problem(response, 422, "validation")


class TestAccess:
    async def test_team_keys_are_refused_and_no_key_is_401(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        created = await create(client)
        await emit(runtime, "budget.exhausted")
        (delivery,) = await deliveries_of(runtime, created["id"])
        team = await factories.team_with_key(client, "search-ui")
        path = f"{ROOT}/{created['id']}"
        for method, route, body in (
            ("POST", ROOT, {"url": URL, "events": ["org.plan_full"]}),
            ("GET", ROOT, None),
            ("GET", path, None),
            ("PATCH", path, {"enabled": False}),
            ("DELETE", path, None),
            ("POST", f"{path}/rotate-secret", None),
            ("GET", f"{path}/deliveries", None),
            ("POST", f"{path}/deliveries/{delivery.id}/retry", None),
        ):
            refused = await client.request(method, route, json=body, headers=team)
            problem(refused, 403, "missing-scope")
            anonymous = await client.request(method, route, json=body)
            problem(anonymous, 401, "unauthorized")
        assert [e["id"] for e in await listed(client)] == [created["id"]]
        row = await stored(runtime, created["id"])
        assert (row.enabled, row.secret, row.deleted_at) == (True, created["secret"], None)
        assert [r["action"] for r in await audit_rows(client)] == ["webhook.create"]


def test_the_service_runs_no_query_itself() -> None:
    service = Path(__file__).resolve().parents[2] / "app" / "webhooks" / "service.py"
    assert _offences(service.read_text()) == []
