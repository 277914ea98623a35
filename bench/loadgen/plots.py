"""PNG plots (matplotlib, Agg): latency distributions of a step; TTFT and throughput against load."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.loadgen.record import RequestRecord

__all__ = ["plot_latency", "plot_sweep"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: str | Path) -> Path:
    """Lay out, write and close the figure (pyplot keeps every open one alive)."""
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_latency(records: Sequence[RequestRecord], path: str | Path, title: str) -> Path:
    """Histograms of TTFT, ITL, TPOT and end-to-end latency (ms) with their p50 and p99 marked."""
    import numpy as np

    plt = _pyplot()
    ok = [r for r in records if r.error is None]
    series = {
        "TTFT": [r.ttft * 1000 for r in ok if r.ttft is not None],
        "ITL": [g * 1000 for r in ok for g in r.itls],
        "TPOT": [t * 1000 for r in ok if (t := r.tpot) is not None],
        "end-to-end": [r.e2e * 1000 for r in ok],
    }
    fig, axes = plt.subplots(2, 2, figsize=(8, 5.5), dpi=80)
    for ax, (name, values) in zip(axes.flat, series.items(), strict=True):
        if values:
            ax.hist(values, bins=40, color="#4477aa")
            for q, style in ((50, "-"), (99, "--")):
                v = float(np.percentile(values, q))
                ax.axvline(v, color="#cc3311", linestyle=style, linewidth=1, label=f"p{q} {v:.1f} ms")
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("ms", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(plt, fig, path)


def plot_sweep(steps: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path:
    """TTFT p50/p90 and throughput against the offered load, one point per sweep step."""
    plt = _pyplot()
    xs = [s["load"]["value"] for s in steps]
    mode = steps[0]["load"]["mode"] if steps else "concurrency"

    def pick(key: str, q: str) -> list[float]:
        return [((s["summary"].get(key) or {}).get(q) or float("nan")) for s in steps]

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=80)
    ax.plot(xs, pick("ttft_ms", "p50"), "o-", color="#4477aa", label="TTFT p50")
    ax.plot(xs, pick("ttft_ms", "p90"), "s--", color="#66ccee", label="TTFT p90")
    ax.set_xlabel("concurrency" if mode == "concurrency" else "offered rate (req/s)")
    ax.set_ylabel("TTFT (ms)")
    ax2 = ax.twinx()
    ax2.plot(
        xs, [s["summary"]["throughput"]["requests_per_s"] for s in steps], "^-", color="#cc3311", label="throughput"
    )
    good = [(s["summary"].get("goodput") or {}).get("requests_per_s") for s in steps]
    if any(g is not None for g in good):
        ax2.plot(xs, [g if g is not None else float("nan") for g in good], "v:", color="#228833", label="goodput")
    ax2.set_ylabel("requests/s")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper left")
    ax.set_title(title, fontsize=10)
    return _save(plt, fig, path)
