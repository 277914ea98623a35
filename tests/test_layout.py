"""The dependency rules of DESIGN.md, checked on the source: packages import only what they may."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = {"gateway", "router", "cache", "batching", "bench", "tests"}
ALLOWED = {
    "router": set(),
    "cache": set(),
    "batching": set(),
    "gateway": {"router", "cache", "batching"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_follow_the_rules(package: str) -> None:
    offenders = {}
    for path in (REPO / package).rglob("*.py"):
        bad = _imports(path) - ALLOWED[package] - {package}
        if bad:
            offenders[str(path.relative_to(REPO))] = sorted(bad)
    assert offenders == {}


def test_gateway_front_door() -> None:
    import gateway

    assert sorted(gateway.__all__) == [
        "ConfigError",
        "Settings",
        "SwitchyardError",
        "create_app",
        "load_settings",
        "main",
    ]
