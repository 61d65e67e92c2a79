"""Usage reports: who ran what, for how long, at what cost, over a window of time.

Rules (the billing rule itself is in `amounts`):
- intervals are clipped to the window [from, to); open ones count up to `at` (now);
- team keys see their own team only (an owner-bound key: its owner only); admins see every team
  or, with `team=`, one;
- days are local calendar days of the accounting timezone (`periods`), the one the caller
  passes (`Settings.budget_timezone`);
- a group appears when some part of its usage of positive length lies in the window;
- JSON rows and CSV rows carry the same figures (CSV is the same query, streamed, without the
  total), so a CSV parsed back equals the JSON report's rows, except that a text cell which a
  spreadsheet would run as a formula is exported as text (`csv_cell`, DESIGN §15).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import inputs
from app.errors import Unprocessable, WrongTeam
from app.identity.actor import Actor
from app.usage import amounts, periods, repository
from app.usage.schemas import UsageFigures, UsageReport, UsageRow

MAX_WINDOW = timedelta(days=400)
# A JSON report holds all its rows in memory; larger results are for the streamed CSV.
MAX_JSON_ROWS = 50_000
FIGURES = ("seconds", "billed_minutes", "credits", "usd")
# What makes a spreadsheet read a cell as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime


def parse_instant(value: str, name: str, timezone: ZoneInfo) -> datetime:
    """An ISO-8601 instant; a date or a time without offset is read in the accounting
    timezone (so `from=2026-03-01` means local midnight). It must lie in the range every
    client instant does (`app.inputs`), so the window's arithmetic cannot overflow."""
    try:
        if len(value) == 10:
            parsed = datetime.combine(date.fromisoformat(value), time(), tzinfo=timezone)
        else:
            parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Unprocessable(
            f"{name!r} is not an ISO-8601 date or date-time.",
            kind="invalid-date",
            extra={"parameter": name},
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone)
    if not inputs.in_range(parsed):
        raise Unprocessable(
            f"{name!r} must lie from {inputs.EARLIEST:%Y-%m-%d} up to {inputs.LATEST:%Y-%m-%d} "
            "(UTC).",
            kind="date-out-of-range",
            extra={"parameter": name},
        )
    return parsed


def window(raw_from: str | None, raw_to: str | None, at: datetime, timezone: ZoneInfo) -> Window:
    """The report window; by default the current calendar month."""
    start = (
        parse_instant(raw_from, "from", timezone) if raw_from else periods.month_start(at, timezone)
    )
    end = (
        parse_instant(raw_to, "to", timezone)
        if raw_to
        else periods.next_month_start(start, timezone)
    )
    if start >= end:
        raise Unprocessable("'from' must be before 'to'.", kind="invalid-window")
    if end - start > MAX_WINDOW:
        raise Unprocessable(
            f"The window may span at most {MAX_WINDOW.days} days.",
            kind="window-too-long",
            extra={"max_days": MAX_WINDOW.days},
        )
    return Window(start, end)


def group_keys(raw: Sequence[str]) -> list[str]:
    """group_by values, repeated (`group_by=team&group_by=day`) or comma-separated."""
    keys: list[str] = []
    for value in raw:
        for key in value.split(","):
            key = key.strip()
            if key not in repository.GROUP_KEYS:
                raise Unprocessable(
                    f"Unknown group_by {key!r}; use {', '.join(repository.GROUP_KEYS)}.",
                    kind="invalid-group-by",
                    extra={"allowed": list(repository.GROUP_KEYS)},
                )
            if key not in keys:
                keys.append(key)
    return keys


def scope(actor: Actor, team: str | None) -> tuple[str | None, str | None]:
    """(team_id, owner) the actor's report is limited to (None: no limit)."""
    if actor.is_admin:
        return team, None
    if team not in (None, actor.team_id):
        raise WrongTeam("reads its own team's usage")
    return actor.team_id, actor.owner


def _figures(row: Row[Any]) -> dict[str, Any]:
    return {
        "seconds": amounts.seconds_figure(row.seconds),
        "billed_minutes": int(row.billed_minutes),
        "credits": row.credits,
        "usd": row.usd,
    }


def _keys(row: Row[Any], keys: Sequence[str]) -> dict[str, Any]:
    return {key: getattr(row, repository.GROUP_KEYS[key]) for key in keys}


async def report(
    session: AsyncSession,
    actor: Actor,
    *,
    span: Window,
    keys: Sequence[str],
    team: str | None,
    at: datetime,
    timezone: ZoneInfo,
) -> UsageReport:
    team_id, owner = scope(actor, team)
    query = repository.UsageQuery(
        start=span.start,
        end=span.end,
        at=at,
        group_by=keys,
        timezone=timezone.key,
        team_id=team_id,
        owner=owner,
        with_total=True,
    )
    rows = await repository.usage_rows(session, query, limit=MAX_JSON_ROWS + 2)
    if len(rows) > MAX_JSON_ROWS + 1:
        raise Unprocessable(
            f"The report has more than {MAX_JSON_ROWS} rows: ask for text/csv "
            "(streamed), group by fewer keys, or narrow the window.",
            kind="report-too-large",
            extra={"max_rows": MAX_JSON_ROWS},
        )
    out_rows = [UsageRow(**_keys(row, keys), **_figures(row)) for row in rows if not row.is_total]
    # The empty grouping set yields the total row even when no interval matched.
    (total_row,) = [row for row in rows if row.is_total]
    total = UsageFigures(**_figures(total_row))
    return UsageReport(
        from_=span.start,
        to=span.end,
        at=at,
        timezone=timezone.key,
        group_by=list(keys),
        team=team_id,
        rows=out_rows,
        total=total,
    )


def csv_header(keys: Sequence[str]) -> list[str]:
    return [*keys, *FIGURES]


def csv_cell(value: Any) -> Any:
    """A value as the CSV writes it: numbers stay numbers; text (owners, team names, any
    string a client chose) that starts like a formula gets a leading single quote, so a
    spreadsheet shows it instead of running it (OWASP's CSV-injection guidance)."""
    if value is None:
        return ""
    if isinstance(value, int | Decimal | float):
        return value
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _csv_text(rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    # Every text cell is quoted (and its quotes doubled), as the same guidance asks; the
    # figures are numbers, never client input, and stay bare.
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_NONNUMERIC)
    writer.writerows([csv_cell(v) for v in row] for row in rows)
    return buffer.getvalue()


async def csv_lines(
    sessions: async_sessionmaker[AsyncSession],
    actor: Actor,
    *,
    span: Window,
    keys: Sequence[str],
    team: str | None,
    at: datetime,
    timezone: ZoneInfo,
) -> AsyncIterator[str]:
    """The report as CSV text, header first, read through a cursor in batches as it is sent.

    Scope is checked before the first line, so a refusal is still a clean problem response."""
    team_id, owner = scope(actor, team)
    query = repository.UsageQuery(
        start=span.start,
        end=span.end,
        at=at,
        group_by=keys,
        timezone=timezone.key,
        team_id=team_id,
        owner=owner,
    )

    columns = [repository.GROUP_KEYS[k] for k in keys]

    async def lines() -> AsyncIterator[str]:
        yield _csv_text([csv_header(keys)])
        async with sessions() as session, session.begin():
            # One chunk of CSV per batch of rows, with the figures formatted as `_figures`
            # formats them for the JSON report.
            async for rows in repository.stream_usage_rows(session, query):
                yield _csv_text(
                    [
                        *(getattr(row, column) for column in columns),
                        amounts.seconds_figure(row.seconds),
                        int(row.billed_minutes),
                        row.credits,
                        row.usd,
                    ]
                    for row in rows
                )

    return lines()
