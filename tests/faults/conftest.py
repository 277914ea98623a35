"""The fault table: each fault case records what the client saw and how long recovery took; the
table is printed at the end of the run (and written as JSON where SWITCHYARD_FAULT_TABLE points)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import pytest

_ROWS = pytest.StashKey[list["FaultRow"]]()


@dataclass(frozen=True)
class FaultRow:
    case: str
    client_saw: str
    recovery_s: float | None  # from the fault's end to the first good answer; None: nothing to recover


class FaultTable:
    def __init__(self, rows: list[FaultRow]):
        self.rows = rows

    def add(self, case: str, client_saw: str, recovery_s: float | None = None) -> None:
        self.rows.append(FaultRow(case, client_saw, recovery_s))


@pytest.fixture
def fault_table(request: pytest.FixtureRequest) -> FaultTable:
    return FaultTable(request.config.stash.setdefault(_ROWS, []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    terminalreporter.section("fault table")
    terminalreporter.write_line("| case | what the client saw | recovery |")
    terminalreporter.write_line("| --- | --- | --- |")
    for row in rows:
        recovery = "-" if row.recovery_s is None else f"{row.recovery_s:.2f} s"
        terminalreporter.write_line(f"| {row.case} | {row.client_saw} | {recovery} |")
    target = os.environ.get("SWITCHYARD_FAULT_TABLE")
    if target:
        with open(target, "w") as out:
            json.dump([asdict(r) for r in rows], out, indent=1)
