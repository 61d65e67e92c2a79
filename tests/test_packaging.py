"""What the wheel holds and needs: every package, the migrations, every imported distribution.

The wheel itself is built, installed in a clean virtualenv and run by `.ci/check-wheel`; these
tests catch the omissions that check cannot see from outside (a dependency installed only
because another one happens to pull it in).
"""

from __future__ import annotations

import ast
import fnmatch
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

from app.db import migrations_dir

ROOT = Path(__file__).resolve().parent.parent
# Directories whose modules the wheel carries, and the package each installs as.
SHIPPED = {ROOT / "app": "app", ROOT / "migrations": "app.migrations"}


def pyproject() -> dict[str, Any]:
    loaded: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return loaded


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_dependencies() -> set[str]:
    names = set()
    for requirement in pyproject()["project"]["dependencies"]:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        assert match, requirement
        names.add(normalise(match.group()))
    return names


def is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_top_level_names(tree: ast.AST) -> set[str]:
    """Absolute imports anywhere in a module (function bodies too), except under
    `if TYPE_CHECKING:`, which never runs."""
    names: set[str] = set()
    pending = [tree]
    while pending:
        node = pending.pop()
        if is_type_checking_block(node):
            assert isinstance(node, ast.If)
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        pending.extend(ast.iter_child_nodes(node))
    return names


def third_party_imports() -> dict[str, set[str]]:
    """Each imported top-level module outside the standard library and the project, with the
    shipped files that import it."""
    found: dict[str, set[str]] = {}
    for directory in SHIPPED:
        for path in sorted(directory.rglob("*.py")):
            for name in imported_top_level_names(ast.parse(path.read_text(), str(path))):
                if name in sys.stdlib_module_names or name == "app":
                    continue
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


class TestWheelContents:
    def test_every_package_under_app_and_the_migrations_is_listed(self) -> None:
        # Every directory that holds modules, with or without an __init__.py (versions/ has
        # none: Alembic loads its files by path).
        on_disk = {
            ".".join((package, *module.parent.relative_to(directory).parts))
            for directory, package in SHIPPED.items()
            for module in directory.rglob("*.py")
        }
        listed = set(pyproject()["tool"]["setuptools"]["packages"])
        assert on_disk == listed, (
            f"[tool.setuptools] packages in pyproject.toml: add {sorted(on_disk - listed)}, "
            f"remove {sorted(listed - on_disk)}"
        )

    def test_the_migrations_install_as_app_migrations(self) -> None:
        assert pyproject()["tool"]["setuptools"]["package-dir"] == {"app.migrations": "migrations"}
        # Under the editable install the package is the repository's own directory.
        assert migrations_dir() == ROOT / "migrations"
        assert (migrations_dir() / "env.py").is_file()
        assert sorted((migrations_dir() / "versions").glob("*.py"))

    def test_every_file_alembic_reads_that_is_not_a_module_is_package_data(self) -> None:
        patterns = pyproject()["tool"]["setuptools"]["package-data"]["app.migrations"]
        data = [
            path.relative_to(ROOT / "migrations").as_posix()
            for path in (ROOT / "migrations").rglob("*")
            if path.is_file() and path.suffix not in (".py", ".pyc")
        ]
        assert "script.py.mako" in data
        for name in data:
            assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


class TestDependencies:
    def test_every_imported_distribution_is_declared(self) -> None:
        """Declared by name in [project] dependencies: being installed because a declared
        package depends on it today is not enough."""
        providers = metadata.packages_distributions()
        declared = declared_dependencies()
        undeclared = []
        for module, importers in sorted(third_party_imports().items()):
            distributions = {normalise(d) for d in providers.get(module, [])}
            if not distributions & declared:
                who = ", ".join(sorted(distributions)) or "no installed distribution"
                undeclared.append(f"{module} ({who}) imported by {', '.join(sorted(importers))}")
        assert not undeclared, "not in [project] dependencies: " + "; ".join(undeclared)

    def test_the_check_sees_the_known_imports(self) -> None:
        imports = third_party_imports()
        assert {"fastapi", "sqlalchemy", "alembic", "aiohttp", "pgserver"} <= set(imports)
        # The migrations ship too, so their imports count.
        assert "migrations/env.py" in imports["alembic"]
        # An import inside a function body counts.
        assert "app/db.py" in imports["pgserver"]

    def test_type_checking_imports_are_not_runtime_imports(self) -> None:
        tree = ast.parse(
            "from typing import TYPE_CHECKING\n"
            "import a\n"
            "if TYPE_CHECKING:\n    import b\nelse:\n    import c\n"
            "def f():\n    from d.e import g\n"
        )
        assert imported_top_level_names(tree) == {"typing", "a", "c", "d"}

    def test_the_lock_pins_every_declared_dependency(self) -> None:
        pinned = {
            normalise(line.split("==")[0])
            for line in (ROOT / "requirements.lock").read_text().splitlines()
            if "==" in line and not line.startswith((" ", "#"))
        }
        assert declared_dependencies() - pinned == set()
