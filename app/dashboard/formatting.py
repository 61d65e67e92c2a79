"""How the dashboard writes numbers, money, durations and instants.

Credits keep 2 to 4 decimals (a Pico minute is 0.0833 credits, a month of XLarge is thousands),
dollars are cents, durations are hours and minutes, and every instant is shown in the
accounting timezone with its UTC value in the `title`, so a figure reads the same on every page
and in every row. Rounding is half-up, as the reports round.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

_FOUR = Decimal("0.0001")
_CENTS = Decimal("0.01")
Number = Decimal | int | float


def _decimal(value: Number) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def integer(value: Number | None) -> str:
    if value is None:
        return "—"
    return f"{int(value):,}"


def credits(value: Number | None) -> str:
    """1,234.50 — thousands separated, at least 2 and at most 4 decimals."""
    if value is None:
        return "—"
    text = f"{_decimal(value).quantize(_FOUR, rounding=ROUND_HALF_UP):,.4f}"
    # Trailing zeros beyond the second decimal say nothing.
    while text.endswith("0") and len(text.rsplit(".", 1)[1]) > 2:
        text = text[:-1]
    return text


def usd(value: Number | None) -> str:
    """$1,234.56, and -$1.50 for a negative amount."""
    if value is None:
        return "—"
    cents = _decimal(value).quantize(_CENTS, rounding=ROUND_HALF_UP)
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents):,.2f}"


def plain(value: Number | None) -> str:
    """A number as a machine reads it (the `data-value` hooks): no separators, no exponent."""
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    normal = _decimal(value).normalize()
    return f"{normal:f}"


def percent(fraction: Number | None) -> str:
    if fraction is None:
        return "—"
    whole = (_decimal(fraction) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return f"{whole:,} %"


def duration(seconds: Number | None) -> str:
    """12 s, 45 min, 3 h 05 min (whole units, rounded down: a 59-second run is not a minute)."""
    if seconds is None:
        return "—"
    total = int(_decimal(seconds).to_integral_value(rounding=ROUND_FLOOR))
    if total < 60:
        return f"{max(total, 0)} s"
    minutes = total // 60
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60:,} h {minutes % 60:02d} min"


def local(moment: datetime, timezone: ZoneInfo) -> str:
    shown = moment.astimezone(timezone)
    return f"{shown:%Y-%m-%d %H:%M:%S} {shown.tzname()}"


class Html(str):
    """Markup that autoescaping passes through as it is: Jinja honours `__html__`. Only
    `when` makes it, from escaped parts."""

    def __html__(self) -> str:
        return str(self)


def when(moment: datetime | None, timezone: ZoneInfo) -> Html:
    """A <time> element: the instant in the accounting timezone, its UTC value in the title."""
    if moment is None:
        return Html("—")
    utc = moment.astimezone(UTC)
    iso = html.escape(utc.isoformat().replace("+00:00", "Z"))
    shown = html.escape(local(moment, timezone))
    return Html(f'<time datetime="{iso}" title="{utc:%Y-%m-%d %H:%M:%S} UTC">{shown}</time>')
