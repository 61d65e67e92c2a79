"""The advisory-lock registry: one meaning per key, and no key written outside it."""

from __future__ import annotations

import re
from pathlib import Path

from app.locks import Lock

APP = Path(__file__).resolve().parent.parent / "app"


class TestRegistry:
    def test_every_key_is_distinct(self) -> None:
        # An IntEnum member with a repeated value is an alias, not a member of its own.
        assert len(Lock.__members__) == len(set(Lock)) == len({int(lock) for lock in Lock})

    def test_no_module_writes_a_key_of_its_own(self) -> None:
        literal = re.compile(r"\b7240\d\d\b")
        offenders = [
            f"{path.relative_to(APP)}:{n}"
            for path in sorted(APP.rglob("*.py"))
            if path.name != "locks.py"
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if literal.search(line)
        ]
        assert offenders == []
