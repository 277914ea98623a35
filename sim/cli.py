"""`switchyard sim`: flags and a profile file become one `SimConfig`, served by uvicorn.

Precedence: defaults < `--profile` file < flags. Distributions take a short spec on the command line:
`50` (fixed), `uniform:20:80`, `lognormal:50:0.4` (median, sigma), each optionally followed by
`,tail=0.01x20` (1% of draws twenty times larger).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from sim.config import SimConfig, load_profile, merge_config

__all__ = ["build_config", "main", "parse_distribution"]


def parse_distribution(spec: str) -> dict[str, Any]:
    """`"lognormal:50:0.4,tail=0.01x20"` → a `Distribution` document."""
    head, _, tail = spec.partition(",")
    parts = head.split(":")
    try:
        if len(parts) == 1:
            out: dict[str, Any] = {"kind": "fixed", "value": float(parts[0])}
        elif parts[0] == "fixed" and len(parts) == 2:
            out = {"kind": "fixed", "value": float(parts[1])}
        elif parts[0] == "uniform" and len(parts) == 3:
            out = {"kind": "uniform", "low": float(parts[1]), "high": float(parts[2])}
        elif parts[0] == "lognormal" and len(parts) in (2, 3):
            out = {"kind": "lognormal", "value": float(parts[1])}
            if len(parts) == 3:
                out["sigma"] = float(parts[2])
        else:
            raise ValueError(spec)
        if tail:
            key, _, value = tail.partition("=")
            fraction, _, factor = value.partition("x")
            if key != "tail" or not factor:
                raise ValueError(spec)
            out["tail_fraction"], out["tail_factor"] = float(fraction), float(factor)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad distribution {spec!r}: use N, uniform:LO:HI or lognormal:MEDIAN[:SIGMA],"
            " optionally followed by ,tail=FRACxFACTOR"
        ) from None
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="switchyard sim", description="A fake OpenAI-compatible (and Anthropic Messages) LLM server."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port (stats are per process)")
    p.add_argument("--profile", help="YAML or JSON file with SimConfig fields")
    p.add_argument("--models", help="comma-separated model names")
    p.add_argument(
        "--apis", help="comma-separated APIs to serve: chat, completions, embeddings, messages (default all)"
    )
    p.add_argument("--ttft-ms", type=parse_distribution, help="time to first token, e.g. 50 or lognormal:50:0.4")
    p.add_argument("--itl-ms", type=parse_distribution, help="inter-token latency, e.g. 5 or uniform:2:8")
    p.add_argument("--output-tokens", type=parse_distribution, help="output length, e.g. 64 or uniform:16:256")
    p.add_argument("--tokens-per-chunk", type=int, help="tokens in each SSE chunk (>1 bunches tokens)")
    p.add_argument("--chunks-per-burst", type=int, help="SSE chunks flushed together (>1 bunches chunks)")
    p.add_argument("--max-concurrency", type=int, help="generations at once; more requests queue (saturation)")
    p.add_argument("--embedding-dim", type=int)
    p.add_argument("--tool-call-rate", type=float)
    p.add_argument("--seed", type=int)
    faults = p.add_argument_group("faults (rates are probabilities per request)")
    faults.add_argument("--error-rate", type=float)
    faults.add_argument("--error-status", type=int, help="status of injected errors: 429, 500, 503, ...")
    faults.add_argument("--retry-after", type=float, help="Retry-After seconds sent with injected 429s")
    faults.add_argument("--hang-rate", type=float, help="hang before the first byte")
    faults.add_argument("--hang-s", type=float, help="how long a hang lasts")
    faults.add_argument("--disconnect-rate", type=float, help="drop the connection mid-response")
    faults.add_argument("--disconnect-after", type=int, help="chunks sent before a disconnect or malformed chunk")
    faults.add_argument("--slow-rate", type=float, help="stream at --slow-itl-ms per token")
    faults.add_argument("--slow-itl-ms", type=float)
    faults.add_argument("--malformed-json-rate", type=float)
    faults.add_argument("--malformed-sse-rate", type=float)
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return p


def build_config(args: argparse.Namespace) -> SimConfig:
    patch: dict[str, Any] = load_profile(args.profile) if args.profile else {}
    flags: dict[str, Any] = {
        "models": args.models.split(",") if args.models else None,
        "apis": args.apis.split(",") if args.apis else None,
        "ttft_ms": args.ttft_ms,
        "itl_ms": args.itl_ms,
        "output_tokens": args.output_tokens,
        "tokens_per_chunk": args.tokens_per_chunk,
        "chunks_per_burst": args.chunks_per_burst,
        "embedding_dim": args.embedding_dim,
        "max_concurrency": args.max_concurrency,
        "tool_call_rate": args.tool_call_rate,
        "seed": args.seed,
        "error_status": args.error_status,
        "retry_after_s": args.retry_after,
        "hang_s": args.hang_s,
        "disconnect_after_chunks": args.disconnect_after,
        "slow_itl_ms": args.slow_itl_ms,
    }
    patch.update({k: v for k, v in flags.items() if v is not None})
    rates = {
        "error": args.error_rate,
        "hang": args.hang_rate,
        "disconnect": args.disconnect_rate,
        "slow": args.slow_rate,
        "malformed_json": args.malformed_json_rate,
        "malformed_sse": args.malformed_sse_rate,
    }
    rates = {k: v for k, v in rates.items() if v is not None}
    if rates:
        patch["faults"] = {**patch.get("faults", {}), **rates}
    return merge_config(SimConfig(), patch)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        config = build_config(args)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"switchyard sim: bad configuration: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from sim.app import CONFIG_ENV, SimApp

    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "access_log": False,
        "server_header": False,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
    }
    if args.workers > 1:
        os.environ[CONFIG_ENV] = config.model_dump_json()
        uvicorn.run("sim.app:app_from_env", factory=True, workers=args.workers, **common)
    else:
        uvicorn.run(SimApp(config), **common)
    return 0
