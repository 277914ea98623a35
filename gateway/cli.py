"""`switchyard` command line: serve, sim, check-config, bench."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="switchyard", description="Switchyard LLM gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sim", help="run a simulated OpenAI-compatible backend", add_help=False)
    if argv[:1] == ["sim"]:
        from gateway.sim.cli import main as sim_main

        return sim_main(argv[1:])
    parser.parse_args(argv)
    return 2
