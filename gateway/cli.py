"""`switchyard` command line: serve, sim, check-config, hash-key, keys, budgets, bench."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.settings import Settings, SettingsSource

__all__ = ["DEFAULT_CONFIG", "main"]

# The embedded default: the checkout's config/gateway.yaml, or the copy a wheel installs.
_DEFAULT_CANDIDATES = (
    Path(__file__).resolve().parents[1] / "config" / "gateway.yaml",
    Path(sys.prefix) / "share" / "switchyard" / "gateway.yaml",
)
DEFAULT_CONFIG = next((p for p in _DEFAULT_CANDIDATES if p.exists()), _DEFAULT_CANDIDATES[0])


def _upstream_backends(urls: list[str]) -> list[dict[str, Any]]:
    """`--upstream URL` backends: models are discovered from each upstream's /v1/models."""
    backends = []
    for i, url in enumerate(urls):
        base = url.rstrip("/")
        if not base.endswith("/v1"):
            base += "/v1"
        backends.append({"name": f"upstream-{i + 1}", "type": "openai", "base_url": base})
    return backends


def _settings_for_serve(args: argparse.Namespace) -> tuple[Settings, SettingsSource]:
    from gateway.settings import SettingsSource

    overrides: dict[str, Any] = {"server": {}}
    for key in ("host", "port", "workers"):
        if getattr(args, key) is not None:
            overrides["server"][key] = getattr(args, key)
    path: Path | None = Path(args.config) if args.config else None
    if args.upstream:
        overrides["backends"] = _upstream_backends(args.upstream)
        if args.api_key:
            from gateway.auth import hash_key

            overrides["auth"] = {
                "mode": "keys",
                "keys": [{"sha256": hash_key(k), "tenant": "default"} for k in args.api_key],
            }
        elif path is None:
            overrides["auth"] = {"mode": "none"}  # a quick start in front of a local server
    elif path is None:
        path = DEFAULT_CONFIG
    source = SettingsSource(path, overrides)
    return source.load(), source


def _serve(args: argparse.Namespace) -> int:
    # Imported here: the settings pull in every package's, which the admin commands do not need.
    from gateway.settings import ConfigError

    try:
        settings, source = _settings_for_serve(args)
    except ConfigError as exc:
        print(f"switchyard: bad configuration: {exc}", file=sys.stderr)
        return 2
    from gateway.server import run

    return run(settings, source)


def _check_config(args: argparse.Namespace) -> int:
    from gateway.settings import ConfigError, SettingsSource

    try:
        settings = SettingsSource(args.path).load()
    except ConfigError as exc:
        print(f"{args.path}: {exc}", file=sys.stderr)
        return 1
    models = sorted({m for b in settings.backends for m in b.public_models()})
    print(f"{args.path}: ok ({len(settings.backends)} backend(s); models: {', '.join(models) or 'discovered'})")
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    from gateway.auth import hash_key

    key = args.key if args.key is not None else sys.stdin.readline().strip()
    if not key:
        print("switchyard: no key given", file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `sim` and `bench` own their flags; hand them the rest of the command line untouched.
    # The sim (sim/) and the load generator (bench/) are packages of their own; the gateway never
    # imports them, the command line only hands over to them.
    if argv[:1] == ["sim"]:
        sim_cli: Any = importlib.import_module("sim.cli")
        return int(sim_cli.main(argv[1:]))
    if argv[:1] == ["bench"]:
        bench_cli: Any = importlib.import_module("bench.cli")
        return int(bench_cli.main(argv[1:]))

    parser = argparse.ArgumentParser(prog="switchyard", description="Switchyard: an OpenAI-compatible LLM gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help=f"YAML configuration (default: {DEFAULT_CONFIG.name}, the embedded default)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="URL",
        help="proxy an OpenAI-compatible server, models discovered (repeatable; no config file needed)",
    )
    serve.add_argument("--api-key", action="append", default=[], help="with --upstream: accept this client key")
    serve.set_defaults(func=_serve)
    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("path")
    check.set_defaults(func=_check_config)
    hasher = sub.add_parser("hash-key", help="print the SHA-256 digest to put in auth.keys[].sha256")
    hasher.add_argument("key", nargs="?", help="the API key (read from stdin when omitted)")
    hasher.set_defaults(func=_hash_key)
    from gateway.admin.cli import add_commands as add_admin_commands

    add_admin_commands(sub)
    sub.add_parser("sim", help="run a simulated OpenAI-compatible backend (switchyard sim --help)")
    sub.add_parser("bench", help="LLM-aware load generator (switchyard bench --help)")
    args = parser.parse_args(argv)
    return int(args.func(args))
