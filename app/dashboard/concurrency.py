"""Concurrent VMs over a recent window, from the ledger (`repository.concurrency`).

A window is cut into equal buckets aligned to whole multiples of their width since the epoch
(a 24 h chart has 5-minute buckets ending at the next 5-minute mark), and each bucket shows the
most VMs that ran at once at any moment of it: the peak of the levels at the instants inside
it, and the level carried in from before it unless an instant at its very start replaced that
level before any time passed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.dashboard import repository


@dataclass(frozen=True)
class Window:
    name: str
    label: str
    buckets: int
    width_seconds: int


WINDOWS = {
    w.name: w
    for w in (
        Window("24h", "24 hours", 288, 300),
        Window("7d", "7 days", 336, 1800),
        Window("30d", "30 days", 360, 7200),
    )
}
DEFAULT_WINDOW = "24h"


@dataclass(frozen=True)
class Point:
    start: datetime
    peak: int


def span(window: Window, at: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the window's buckets, the last one holding `at`."""
    epoch = int(at.timestamp())
    end = (epoch // window.width_seconds + 1) * window.width_seconds
    start = end - window.buckets * window.width_seconds
    return datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)


def peaks(rows: Iterable[Any], *, start: datetime, width_seconds: int, buckets: int) -> list[Point]:
    """The series from the sweep's rows (bucket start, peak, net, first_at), one point per
    bucket; a bucket without a row held one level all through: the one carried in."""
    found = {row.bucket: row for row in rows}
    level = 0
    points: list[Point] = []
    for bucket in range(buckets):
        begins = start + timedelta(seconds=bucket * width_seconds)
        row = found.get(begins)
        if row is None:
            points.append(Point(begins, level))
            continue
        peak = int(row.peak)
        if row.first_at > begins:
            peak = max(peak, level)  # the carried level held until the first instant
        points.append(Point(begins, peak))
        level += int(row.net)
    return points


async def series(
    session: AsyncSession, window: Window, at: datetime, *, team_id: str | None = None
) -> list[Point]:
    start, end = span(window, at)
    rows: Sequence[Any] = await repository.concurrency(
        session, start=start, end=end, width_seconds=window.width_seconds, team_id=team_id
    )
    return peaks(rows, start=start, width_seconds=window.width_seconds, buckets=window.buckets)
