"""The apps form a stack and imports only go down: integrationhub <- core <- feeds <- orders (docs: STYLE.md, Layers).

Read from the source with `ast`, so an import inside a function counts as much as one at the top. Migrations are
history (they name the models where they were then) and are not read.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"integrationhub", "core", "feeds", "orders", "sandbox"}
# What each layer must not import; integrationhub's URL wiring (urls.py, wsgi.py) is the top and imports anything.
FORBIDDEN = {
    "integrationhub": {"core", "feeds", "orders", "sandbox"},
    "core": {"feeds", "orders", "sandbox"},
    "feeds": {"orders", "sandbox"},
    "orders": {"sandbox"},
    "sandbox": OURS - {"sandbox"},
}
TOP = {Path("integrationhub/urls.py"), Path("integrationhub/wsgi.py")}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in the file, however deep in it."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def sources(app: str) -> list[Path]:
    return [path for path in sorted((ROOT / app).rglob("*.py"))
            if "migrations" not in path.relative_to(ROOT).parts and path.relative_to(ROOT) not in TOP]


@pytest.mark.parametrize("app", sorted(FORBIDDEN))
def test_imports_only_go_down(app: str) -> None:
    assert sources(app), f"no Python files under {app}/"
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {package}" for path in sources(app)
             for line, package in imported_packages(path) if package in FORBIDDEN[app]]

    assert not wrong, f"{app} must not import {', '.join(sorted(FORBIDDEN[app]))}:\n" + "\n".join(wrong)


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "late.py"
    module.write_text("def later():\n    from orders.models import OrderSync\n    import feeds.tasks\n")

    assert imported_packages(module) == [(2, "orders"), (3, "feeds")]
