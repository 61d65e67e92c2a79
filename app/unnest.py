"""Set-based statements over `unnest`: one array parameter per column, so a whole batch travels
in one statement whatever its size, and the statement text never depends on the batch.

Column names and SQL types are constants of the calling module, never input. jsonb travels as
text (asyncpg has no jsonb[] codec) and is cast back in the statement.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

Columns = Mapping[str, str]  # column name → SQL type


def arrays(columns: Columns) -> str:
    """`unnest(CAST(:a AS t[]), …) AS u(a, …)`."""
    casts = ", ".join(
        f"CAST(:{name} AS {'text' if kind == 'jsonb' else kind}[])"
        for name, kind in columns.items()
    )
    return f"unnest({casts}) AS u({', '.join(columns)})"


def selected(columns: Columns, *, source: str = "u") -> str:
    """The columns as read from the unnested relation, jsonb cast back."""
    return ", ".join(
        f"{source}.{name}::jsonb AS {name}" if kind == "jsonb" else f"{source}.{name}"
        for name, kind in columns.items()
    )


def insert(table: str, columns: Columns) -> str:
    """`INSERT INTO table (columns) SELECT … FROM unnest(…)`."""
    return (
        f"INSERT INTO {table} ({', '.join(columns)})"  # noqa: S608
        f" SELECT {selected(columns)} FROM {arrays(columns)}"
    )


def params(columns: Columns, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """One list per column, in row order."""
    return {
        name: [json.dumps(row[name]) if kind == "jsonb" else row[name] for row in rows]
        for name, kind in columns.items()
    }
