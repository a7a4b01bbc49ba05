"""The folders are the architecture: which package may import which, read off the source."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = {"store", "retention", "search", "exports"}
# What each package may import of the others: dependencies point one way, from the composition
# root (service) down to what only persists (store).
ALLOWED = {
    "store": set(),
    "search": {"store"},
    "exports": {"store"},
    "ingest": {"store"},
    "retention": {"store", "search", "exports"},
    "scheduler": DOMAIN,
    "api": DOMAIN,
    "web": DOMAIN | {"api"},
    "service": DOMAIN | {"ingest", "scheduler", "api", "web"},
}


def imported_packages(package: str) -> dict[str, set[str]]:
    """The project's packages each module of ``package`` imports (absolute imports)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        tops = {name.split(".")[0] for name in names} & set(ALLOWED)
        found[str(path.relative_to(ROOT))] = tops - {package}
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_packages_below_it(package: str) -> None:
    beyond = {
        module: sorted(tops - ALLOWED[package])
        for module, tops in imported_packages(package).items()
        if tops - ALLOWED[package]
    }
    assert beyond == {}


def test_every_package_is_installed_type_checked_and_in_the_image() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+) \1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert found == set(ALLOWED)
    assert set(project["tool"]["mypy"]["packages"]) == set(ALLOWED)
    assert copied == set(ALLOWED)
