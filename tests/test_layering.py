"""Services keep no queries of their own: each of these modules reaches the database through
its domain's repository only (STYLE: every query lives in the repository)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"
SERVICES = [
    "identity/service.py",
    "admission/service.py",
    "admission/quota.py",
    "idempotency.py",
    "usage/warning.py",
    "admin/service.py",
    "reconcile/runs.py",
    "sandboxes/listing.py",
]
# What building or running a statement looks like.
QUERY_BUILDERS = {"select", "insert", "update", "delete", "text", "func"}
SESSION_QUERIES = {"execute", "scalar", "scalars", "get", "add", "stream"}


def _offences(source: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            found += [f"imports {a.name}" for a in node.names if a.name in QUERY_BUILDERS]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "session"
            and node.func.attr in SESSION_QUERIES
        ):
            found.append(f"line {node.lineno}: session.{node.func.attr}()")
    return found


@pytest.mark.parametrize("module", SERVICES)
def test_the_service_runs_no_query_itself(module: str) -> None:
    assert _offences((APP / module).read_text()) == []


def test_the_check_sees_a_query() -> None:
    assert _offences(
        "from sqlalchemy import select\nasync def f(session):\n    await session.get(T, 1)\n"
    ) == ["imports select", "line 3: session.get()"]
