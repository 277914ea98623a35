"""`switchyard keys …` and `switchyard budgets …`: the admin API from the command line.

The gateway's address comes from `--url` or SWITCHYARD_ADMIN_URL, the admin key from `--admin-key`
or SWITCHYARD_ADMIN_KEY (better: it stays out of the shell history). Answers are printed as JSON;
an error prints the API's message and exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from typing import Any
from urllib.parse import urlencode

from gateway.upstreams import http1

__all__ = ["add_commands"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"'{text}' is not a duration such as 3600, 90m, 12h or 30d")
    return float(match.group(1)) * _UNIT[match.group(2)]


def _models(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    key = args.admin_key or os.environ.get("SWITCHYARD_ADMIN_KEY")
    if not key:
        print("switchyard: no admin key; pass --admin-key or set SWITCHYARD_ADMIN_KEY", file=sys.stderr)
        return 2
    url = (args.url or os.environ.get("SWITCHYARD_ADMIN_URL") or "http://127.0.0.1:8080").rstrip("/")
    query = urlencode(getattr(args, "params", None) or {})
    headers = {"authorization": f"Bearer {key}"}
    if body is not None:
        headers["content-type"] = "application/json"
    try:
        status, raw = asyncio.run(
            http1.request(
                method, url + path + (f"?{query}" if query else ""), headers=headers,
                body=json.dumps(body).encode() if body is not None else b"", timeout=10.0,
            )
        )  # fmt: skip
    except (http1.HttpError, OSError, ValueError) as exc:
        print(f"switchyard: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {"error": {"message": raw.decode(errors="replace") or f"HTTP {status}"}}
    if status >= 400:
        message = (answer.get("error") or {}).get("message") if isinstance(answer, dict) else None
        print(f"switchyard: {status}: {message or answer}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    return 0


def _create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"tenant": args.tenant, "priority": args.priority}
    for name in ("team", "name", "models", "rpm", "tpm"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.budget is not None:
        body["budget"] = {"amount_usd": args.budget, "period": args.period}
    if args.expires_in is not None:
        body["expires_in_seconds"] = args.expires_in
    return _call(args, "POST", "/admin/keys", body)


def _list(args: argparse.Namespace) -> int:
    args.params = {k: v for k, v in (("tenant", args.tenant), ("team", args.team)) if v}
    return _call(args, "GET", "/admin/keys")


def _budget_path(args: argparse.Namespace) -> str:
    base = f"/admin/tenants/{args.tenant}"
    return base + (f"/teams/{args.team}" if args.team else "")


def add_commands(sub: Any) -> None:
    """Add the `keys` and `budgets` subcommands to the CLI's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the gateway (default: SWITCHYARD_ADMIN_URL or http://127.0.0.1:8080)")
    common.add_argument("--admin-key", help="the admin key (default: SWITCHYARD_ADMIN_KEY)")

    keys = sub.add_parser("keys", help="create, list, rotate and revoke API keys (admin API)")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    create = ksub.add_parser("create", parents=[common], help="a new key; its secret is printed once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--team")
    create.add_argument("--name", help="a label for people")
    create.add_argument("--models", type=_models, help="comma-separated models the key may use (default: all)")
    create.add_argument("--rpm", type=int)
    create.add_argument("--tpm", type=int)
    create.add_argument("--priority", choices=["interactive", "batch"], default="interactive")
    create.add_argument("--budget", type=float, metavar="USD", help="the key's own spend cap per period")
    create.add_argument("--period", choices=["daily", "monthly"], default="monthly")
    create.add_argument("--expires-in", type=_duration, metavar="DURATION", help="e.g. 3600, 90m, 12h, 30d")
    create.set_defaults(func=_create)
    listing = ksub.add_parser("list", parents=[common], help="keys (never their secrets)")
    listing.add_argument("--tenant")
    listing.add_argument("--team")
    listing.set_defaults(func=_list)
    for name, method, suffix, text in (
        ("show", "GET", "", "one key and its spend"),
        ("rotate", "POST", "/rotate", "a new secret; the old one stops at once"),
        ("revoke", "DELETE", "", "revoke the key on every replica"),
    ):
        cmd = ksub.add_parser(name, parents=[common], help=text)
        cmd.add_argument("id")
        cmd.set_defaults(func=lambda a, m=method, s=suffix: _call(a, m, f"/admin/keys/{a.id}{s}"))

    budgets = sub.add_parser("budgets", help="team and tenant budgets, and spend (admin API)")
    bsub = budgets.add_subparsers(dest="budgets_command", required=True)
    for name, text in (("show", "budget and spend"), ("set", "set a budget"), ("clear", "remove a budget")):
        cmd = bsub.add_parser(name, parents=[common], help=text)
        cmd.add_argument("--tenant", required=True)
        cmd.add_argument("--team")
        if name == "set":
            cmd.add_argument("--amount", type=float, required=True, metavar="USD")
            cmd.add_argument("--period", choices=["daily", "monthly"], default="monthly")
    bsub.choices["show"].set_defaults(func=lambda a: _call(a, "GET", _budget_path(a)))
    bsub.choices["set"].set_defaults(
        func=lambda a: _call(a, "PUT", _budget_path(a) + "/budget", {"amount_usd": a.amount, "period": a.period})
    )
    bsub.choices["clear"].set_defaults(func=lambda a: _call(a, "DELETE", _budget_path(a) + "/budget"))
