"""Reports: the terminal table of one run, and two runs side by side with ratios (`compare`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["compare_reports", "load_report", "render_report", "write_report"]

_DISTS = [("TTFT", "ttft_ms"), ("ITL", "itl_ms"), ("TPOT", "tpot_ms"), ("E2E", "e2e_ms")]


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        out.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _step_block(step: dict[str, Any]) -> str:
    s = step["summary"]
    head = (
        f"== {step['label']} ({step['phase']}): {s['requests']} requests, {s['ok']} ok, "
        f"{s['error_rate'] * 100:.1f}% errors in {s['wall_s']:.1f}s"
    )
    rows = [["latency (ms)", "p50", "p90", "p95", "p99", "mean", "max"]]
    for name, key in _DISTS:
        d = s.get(key)
        if d:
            rows.append([name, *(_f(d[k], 2) for k in ("p50", "p90", "p95", "p99", "mean", "max"))])
    lines = [head, _table(rows) if len(rows) > 1 else "(no successful requests)"]
    t = s["throughput"]
    lines.append(
        f"throughput: {t['requests_per_s']:,.1f} req/s, {t['output_tokens_per_s']:,.0f} output tok/s, "
        f"{t['input_tokens_per_s']:,.0f} input tok/s"
    )
    if s.get("goodput"):
        g = s["goodput"]
        slo = ",".join(f"{k}={v:g}ms" for k, v in g["slo"].items())
        lines.append(f"goodput ({slo}): {g['requests_per_s']:,.1f} req/s ({g['fraction'] * 100:.1f}% of requests)")
    if s["errors"]:
        lines.append("errors: " + ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items())))
    if s.get("bunching"):
        b = s["bunching"]
        lines.append(
            f"chunks: {b['tokens_per_chunk']:.2f} tokens/chunk, {b['zero_gap_fraction'] * 100:.0f}% "
            f"back-to-back -> {'BUNCHED' if b['bunched'] else 'token by token'}"
        )
    if s.get("send_lag_ms"):
        lag = s["send_lag_ms"]
        lines.append(f"generator send lag: p50 {lag['p50']:.2f} ms, p99 {lag['p99']:.2f} ms")
    if s.get("cache"):
        c = s["cache"]
        lines.append(f"cache: hit ratio {c['hit_ratio'] * 100:.1f}% ({c['statuses']})")
    if s.get("tools"):
        tl = s["tools"]
        lines.append(
            f"tools: in {_f(tl['mean_in'])} -> out {_f(tl['mean_out'])} (from header on "
            f"{tl['requests_with_header']} requests), expected tool called "
            f"{_f(None if tl['expected_tool_called'] is None else tl['expected_tool_called'] * 100)}%"
        )
    if s.get("cost_usd"):
        c = s["cost_usd"]
        lines.append(f"cost: ${c['total']:.6f} total, ${c['per_request']:.8f} per request")
    for key in ("by_priority", "by_tag"):
        if s.get(key):
            rows = [[key[3:], "requests", "errors", "TTFT p50", "TTFT p90", "E2E p50", "E2E p99", "cache hit"]]
            for label, g in s[key].items():
                tt, ee = g.get("ttft_ms") or {}, g.get("e2e_ms") or {}
                hit = g.get("cache_hit_ratio")
                rows.append(
                    [
                        label,
                        str(g["requests"]),
                        str(g["errors"]),
                        _f(tt.get("p50"), 2),
                        _f(tt.get("p90"), 2),
                        _f(ee.get("p50"), 2),
                        _f(ee.get("p99"), 2),
                        "-" if hit is None else f"{hit * 100:.0f}%",
                    ]
                )
            lines.append(_table(rows))
    return "\n".join(lines)


def render_report(report: dict[str, Any]) -> str:
    blocks = [
        f"switchyard bench: {report['workload']['name']} against {report['target']} (tokenizer: {report['tokenizer']})"
    ]
    blocks += [_step_block(step) for step in report["steps"]]
    if len(report["steps"]) > 1:
        rows = [["step", "req/s", "goodput/s", "TTFT p50", "TTFT p90", "TPOT p50", "E2E p99", "errors"]]
        for step in report["steps"]:
            s = step["summary"]
            tt, tp, ee = s.get("ttft_ms") or {}, s.get("tpot_ms") or {}, s.get("e2e_ms") or {}
            rows.append(
                [
                    step["label"],
                    _f(s["throughput"]["requests_per_s"]),
                    _f((s.get("goodput") or {}).get("requests_per_s")),
                    _f(tt.get("p50"), 2),
                    _f(tt.get("p90"), 2),
                    _f(tp.get("p50"), 2),
                    _f(ee.get("p99"), 2),
                    f"{s['error_rate'] * 100:.1f}%",
                ]
            )
        blocks.append("== all steps\n" + _table(rows))
    return "\n\n".join(blocks)


def write_report(report: dict[str, Any], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=1))


def load_report(path: str | Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or "steps" not in data:
        raise ValueError(f"{path}: not a switchyard bench report")
    return data


_COMPARED = [
    ("req/s", ("throughput", "requests_per_s")),
    ("output tok/s", ("throughput", "output_tokens_per_s")),
    ("goodput req/s", ("goodput", "requests_per_s")),
    ("TTFT p50 ms", ("ttft_ms", "p50")),
    ("TTFT p90 ms", ("ttft_ms", "p90")),
    ("TTFT p99 ms", ("ttft_ms", "p99")),
    ("ITL p50 ms", ("itl_ms", "p50")),
    ("ITL p99 ms", ("itl_ms", "p99")),
    ("TPOT p50 ms", ("tpot_ms", "p50")),
    ("TPOT p99 ms", ("tpot_ms", "p99")),
    ("E2E p50 ms", ("e2e_ms", "p50")),
    ("E2E p99 ms", ("e2e_ms", "p99")),
    ("error rate", ("error_rate",)),
    ("cache hit ratio", ("cache", "hit_ratio")),
    ("cost/request $", ("cost_usd", "per_request")),
]


def _dig(d: Any, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(d, dict) or d.get(key) is None:
            return None
        d = d[key]
    return float(d) if isinstance(d, int | float) else None


def compare_reports(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str] = ("A", "B")) -> str:
    """Step by step (matched by position), the key metrics of A and B and the ratio B/A."""
    blocks = [f"A = {names[0]}\nB = {names[1]}"]
    for i, (sa, sb) in enumerate(zip(a["steps"], b["steps"], strict=False)):
        rows = [[f"step {i + 1}: {sa['label']} | {sb['label']}", "A", "B", "B/A"]]
        for label, path in _COMPARED:
            va, vb = _dig(sa["summary"], path), _dig(sb["summary"], path)
            if va is None and vb is None:
                continue
            ratio = "-" if not va or vb is None else f"{vb / va:.3f}x"
            rows.append([label, _f(va, 3), _f(vb, 3), ratio])
        blocks.append(_table(rows))
    if len(a["steps"]) != len(b["steps"]):
        blocks.append(
            f"(A has {len(a['steps'])} steps, B has {len(b['steps'])}; compared the first "
            f"{min(len(a['steps']), len(b['steps']))})"
        )
    return "\n\n".join(blocks)
