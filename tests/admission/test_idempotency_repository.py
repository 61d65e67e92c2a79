"""Idempotency records: one claim per key, expired records make room, and a stored answer
is read back as stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app import idempotency_repository as repository
from app.db import transaction
from app.runtime import Runtime

KEY = repository.RecordKey("key-1", "POST /v1/sandboxes", "retry-1")


class TestRecords:
    async def test_a_key_is_claimed_once_until_it_expires(self, runtime: Runtime) -> None:
        now = datetime.now(UTC)
        async with transaction(runtime.sessions) as session:
            assert await repository.claim(session, KEY, fingerprint=b"a", expires_at=now)
        async with transaction(runtime.sessions) as session:
            assert not await repository.claim(session, KEY, fingerprint=b"b", expires_at=now)
            # Another route or API key is another record.
            other = repository.RecordKey("key-2", KEY.route, KEY.idempotency_key)
            assert await repository.claim(session, other, fingerprint=b"b", expires_at=now)
        async with transaction(runtime.sessions) as session:
            await repository.delete_expired(session, KEY, now - timedelta(seconds=1))
            assert await repository.get(session, KEY) is not None
            await repository.delete_expired(session, KEY, now)
            assert await repository.get(session, KEY) is None
            assert await repository.get(session, other) is not None

    async def test_a_stored_answer_reads_back_and_forget_removes_it(self, runtime: Runtime) -> None:
        later = datetime.now(UTC) + timedelta(hours=1)
        async with transaction(runtime.sessions) as session:
            await repository.claim(session, KEY, fingerprint=b"a", expires_at=later)
            await repository.store(session, KEY, 201, {"id": "sbx_1"})
        async with transaction(runtime.sessions) as session:
            record = await repository.get(session, KEY)
            assert record is not None
            assert (record.status, record.response, record.fingerprint) == (
                201,
                {"id": "sbx_1"},
                b"a",
            )
            await repository.forget(session, KEY)
            assert await repository.get(session, KEY) is None
