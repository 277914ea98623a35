"""The dependency rules of DESIGN.md, checked on the source: packages import only what they may."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = {"gateway", "router", "cache", "batching", "sim", "bench", "tests"}
ALLOWED = {
    "router": set(),
    "cache": set(),
    "batching": set(),
    "sim": set(),  # a stand-in upstream: it shares nothing with the gateway it imitates
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


def test_one_http_client_stack() -> None:
    """Upstream calls and the load generator share one HTTP/1.1 client: nothing else drives httptools
    (uvicorn does, as a server) and the gateway's code never sends through httpx."""
    client = REPO / "gateway" / "upstreams" / "http1.py"
    httptools_users, httpx_users = [], []
    for package in ("gateway", "router", "cache", "batching", "bench", "sim"):
        for path in (REPO / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {
                n.module.split(".")[0]
                for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom) and n.module and not n.level
            }
            if "httptools" in names and path != client:
                httptools_users.append(str(path.relative_to(REPO)))
            if "httpx" in names and package == "gateway":
                httpx_users.append(str(path.relative_to(REPO)))
    assert httptools_users == [] and httpx_users == []
