"""Timestamp parsing, x-csb rate-limit headers and secret hiding in the client's result types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.upstream.ratelimit import parse_rate_limits, retry_after_seconds, seconds_until
from app.upstream.schemas import (
    NewPreviewToken,
    RunningVM,
    SessionResult,
    StartResult,
    parse_timestamp,
)

MOMENT = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
EPOCH = int(MOMENT.timestamp())


class TestParseTimestamp:
    @pytest.mark.parametrize(
        "value",
        [
            "2025-06-01T12:00:00Z",
            "2025-06-01T12:00:00+00:00",
            "2025-06-01T14:00:00+02:00",
            "2025-06-01T12:00:00",  # naive: taken as UTC
            EPOCH,
            float(EPOCH),
            str(EPOCH),
            f" {EPOCH} ",
            f"{EPOCH}.0",
            EPOCH * 1000,
            str(EPOCH * 1000),
            datetime(2025, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
        ],
    )
    def test_every_shape_gives_the_same_aware_utc_moment(self, value: object) -> None:
        parsed = parse_timestamp(value)
        assert parsed == MOMENT
        assert parsed is not None and parsed.utcoffset() == timedelta(0)

    @pytest.mark.parametrize("value", [None, "", "   "])
    def test_missing_is_none(self, value: object) -> None:
        assert parse_timestamp(value) is None

    @pytest.mark.parametrize("value", ["yesterday", True, float("nan"), 1e300, [1]])
    def test_garbage_is_refused(self, value: object) -> None:
        with pytest.raises(ValueError):
            parse_timestamp(value)

    @given(st.integers(min_value=1_000_000_000_000, max_value=7_000_000_000_000))
    def test_seconds_and_milliseconds_agree(self, millis: int) -> None:
        from_ms = parse_timestamp(millis)
        from_s = parse_timestamp(millis / 1000)
        assert from_ms is not None and from_s is not None
        assert abs(from_ms - from_s) < timedelta(milliseconds=1)
        assert parse_timestamp(str(millis)) == from_ms

    def test_running_vm_fields_are_all_optional(self) -> None:
        vm = RunningVM.model_validate({})
        assert (vm.id, vm.last_active_at, vm.session_started_at, vm.specs) == (None,) * 4

    def test_running_vm_with_bad_timestamp_is_invalid(self) -> None:
        with pytest.raises(ValueError):
            RunningVM.model_validate({"last_active_at": "soon"})


class TestRateLimitHeaders:
    def test_no_x_csb_headers_is_none(self) -> None:
        assert parse_rate_limits(httpx.Headers({"content-type": "application/json"})) is None

    def test_families_are_independent_and_reset_is_verbatim(self) -> None:
        headers = httpx.Headers(
            {
                "X-CSB-Sandbox-Hourly-Remaining": "3",
                "X-CSB-Sandbox-Hourly-Used": "7",
                "X-CSB-Sandbox-Hourly-Reset": "2025-06-01T13:00:00Z",
                "x-csb-vms-used": "4",
            }
        )
        limits = parse_rate_limits(headers)
        assert limits is not None
        assert limits.sandbox_hourly is not None
        assert limits.sandbox_hourly.limit == 10
        assert limits.sandbox_hourly.reset == "2025-06-01T13:00:00Z"
        assert limits.rate_hourly is None
        assert limits.vms is not None
        assert (limits.vms.remaining, limits.vms.used, limits.vms.limit) == (None, 4, None)
        assert limits.exhausted_family() is None

    def test_non_integer_counts_are_dropped_not_fatal(self) -> None:
        limits = parse_rate_limits(httpx.Headers({"x-csb-rate-hourly-remaining": "lots"}))
        assert limits is not None and limits.rate_hourly is not None
        assert limits.rate_hourly.remaining is None

    @pytest.mark.parametrize(
        ("reset", "expected"),
        [
            ("30", 30.0),
            (str(EPOCH + 90), 90.0),
            (str((EPOCH + 90) * 1000), 90.0),
            ("2025-06-01T12:02:00Z", 120.0),
            ("Sun, 01 Jun 2025 12:01:00 GMT", 60.0),
            (str(EPOCH - 90), 0.0),
            ("whenever", None),
            ("", None),
        ],
    )
    def test_reset_interpretation(self, reset: str, expected: float | None) -> None:
        assert seconds_until(reset, now=MOMENT) == expected

    def test_retry_after_falls_back_to_the_family_reset(self) -> None:
        headers = httpx.Headers({"x-csb-vms-remaining": "0", "x-csb-rate-hourly-reset": "99"})
        limits = parse_rate_limits(headers)
        assert limits is not None
        assert limits.exhausted_family() == "vms"
        # The vms family has no reset, and another family's reset says nothing about it.
        assert retry_after_seconds(headers, limits, "vms", now=MOMENT) is None
        assert retry_after_seconds(headers, limits, "rate_hourly", now=MOMENT) == 99.0


class TestSecrets:
    def test_tokens_are_not_in_repr_or_str(self) -> None:
        start = StartResult(
            id="a",
            bootup_type="FORK",
            pitcher_url="wss://x",
            pitcher_token="pitcher-secret",
            pint_token="pint-secret",
            reconnect_token="reconnect-secret",
        )
        session = SessionResult(username="u", pitcher_token="session-secret", pitcher_url="wss://x")
        token = NewPreviewToken(token_id="prv_1", token="preview-secret")
        for model in (start, session, token):
            text = repr(model) + str(model)
            assert "secret" not in text, text
        # The values are still there for the code that needs them.
        assert start.pitcher_token == "pitcher-secret"
        assert session.pitcher_token == "session-secret"

    def test_results_are_frozen_and_ignore_new_fields(self) -> None:
        start = StartResult.model_validate(
            {
                "id": "a",
                "bootup_type": "RUNNING",
                "pitcher_url": "wss://x",
                "pitcher_token": "t",
                "brand_new_field": 1,
            }
        )
        with pytest.raises(ValueError):
            start.id = "b"  # type: ignore[misc]
        assert not hasattr(start, "brand_new_field")
