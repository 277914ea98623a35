"""README promises that must stay true: the two set-up commands, and reference tables that match the code."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.reference import config_table, metrics_table

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _section(name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)\n<!-- {name}:end -->", README, re.S)
    assert match, f"README has no {name} section"
    return match.group(1)


def test_configuration_reference_matches_the_settings_models() -> None:
    assert _section("config-reference") == config_table(), "run: python -m gateway.reference"


def test_metrics_reference_matches_the_registry() -> None:
    assert _section("metrics-reference") == metrics_table(), "run: python -m gateway.reference"


def test_the_two_commands_and_ci_agree() -> None:
    assert "make serve" in README and "make test" in README
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert "make test" in [line.strip() for line in ci]  # CI runs the README's test command itself
