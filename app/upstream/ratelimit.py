"""Rate-limit state reported by the upstream in ``x-csb-*`` response headers.

The upstream may send three header families on any response (CONTRACT §1.3)::

    x-csb-sandbox-hourly-{remaining,used,reset}   sandboxes created per hour
    x-csb-rate-hourly-{remaining,used,reset}      requests per hour
    x-csb-vms-{remaining,used}                    concurrent VMs (no reset)

Every family, and every header within one, is optional. The format of the ``reset`` headers is
undocumented, so it is kept verbatim and only interpreted, best effort, by `seconds_until`.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from app import clock

__all__ = [
    "LimitFamily",
    "RateLimitWindow",
    "RateLimits",
    "parse_rate_limits",
    "retry_after_seconds",
    "seconds_until",
]

LimitFamily = Literal["sandbox_hourly", "rate_hourly", "vms"]

# Header prefix per family, in the order the official SDK checks them on a 429: when several are
# exhausted at once we blame the same one it would.
_PREFIXES: dict[LimitFamily, str] = {
    "sandbox_hourly": "x-csb-sandbox-hourly-",
    "rate_hourly": "x-csb-rate-hourly-",
    "vms": "x-csb-vms-",
}

# Numbers above these are absolute epoch timestamps rather than a count of seconds to wait.
# 1e9 s is 2001; 1e11 s would be the year 5138, so anything that large must be milliseconds.
_EPOCH_SECONDS_FLOOR = 1e9
_EPOCH_MILLIS_FLOOR = 1e11


class RateLimitWindow(BaseModel):
    """One header family. ``None`` means the header was absent or not an integer."""

    model_config = ConfigDict(frozen=True)

    remaining: int | None = None
    used: int | None = None
    reset: str | None = None

    @property
    def limit(self) -> int | None:
        if self.remaining is None or self.used is None:
            return None
        return self.remaining + self.used

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


class RateLimits(BaseModel):
    """The rate-limit headers of one response; families the upstream did not send are ``None``."""

    model_config = ConfigDict(frozen=True)

    sandbox_hourly: RateLimitWindow | None = None
    rate_hourly: RateLimitWindow | None = None
    vms: RateLimitWindow | None = None

    def window(self, family: LimitFamily) -> RateLimitWindow | None:
        window: RateLimitWindow | None = getattr(self, family)
        return window

    def exhausted_family(self) -> LimitFamily | None:
        """The first family with nothing remaining, which is the one a 429 is about."""
        for family in _PREFIXES:
            window = self.window(family)
            if window is not None and window.exhausted:
                return family
        return None


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        return None


def parse_rate_limits(headers: Mapping[str, str]) -> RateLimits | None:
    """Parse the ``x-csb-*`` families; ``None`` when the response carried none of them.

    ``headers`` should be case-insensitive (``httpx.Headers``) or already lower-cased.
    """
    windows: dict[str, RateLimitWindow] = {}
    for family, prefix in _PREFIXES.items():
        names = (prefix + "remaining", prefix + "used", prefix + "reset")
        if not any(name in headers for name in names):
            continue
        windows[family] = RateLimitWindow(
            remaining=_int_header(headers, names[0]),
            used=_int_header(headers, names[1]),
            reset=headers.get(names[2]),
        )
    if not windows:
        return None
    return RateLimits.model_validate(windows)


def seconds_until(value: str, *, now: datetime | None = None) -> float | None:
    """Seconds from ``now`` until the moment ``value`` names, never negative.

    Accepts a delay in seconds, an epoch timestamp in seconds or milliseconds, ISO-8601 or an
    HTTP date; anything else gives ``None`` rather than a guess.
    """
    now = now or clock.now()
    text = value.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        if not math.isfinite(number) or number < 0:
            return None
        if number >= _EPOCH_MILLIS_FLOOR:
            return max(0.0, number / 1000 - now.timestamp())
        if number >= _EPOCH_SECONDS_FLOOR:
            return max(0.0, number - now.timestamp())
        return number
    moment: datetime | None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


def retry_after_seconds(
    headers: Mapping[str, str],
    rate_limits: RateLimits | None,
    family: LimitFamily | None,
    *,
    now: datetime | None = None,
) -> float | None:
    """How long to wait before asking again, from ``Retry-After`` or the exhausted family's reset.

    ``Retry-After`` wins because it is the standard header and, when sent, the more deliberate
    answer; the upstream is not known to send it (CONTRACT §1.3), so the reset is the usual source.
    """
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        seconds = seconds_until(retry_after, now=now)
        if seconds is not None:
            return seconds
    if rate_limits is None or family is None:
        return None
    window = rate_limits.window(family)
    if window is None or window.reset is None:
        return None
    return seconds_until(window.reset, now=now)
