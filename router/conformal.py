"""How many tools to keep so the called one survives with probability >= the configured coverage.

Split conformal prediction over the router's scores. A call's nonconformity is how far the called
tool's score is below the request's best score (`gap`). On calibration calls, the
ceil((n + 1) * coverage)-th smallest gap is `margin`; keeping every tool within `margin` of the
best then holds the called tool with probability >= coverage for a new call exchangeable with
them. `router/narrow.py` keeps exactly that set (plus the tools that must survive).

Calibration calls come from where they can:
- per catalogue and scope, the feedback calls held back from training (`assess`), shadow calls
  first: their full list went upstream, so the model's choice was not limited by the router;
- for a catalogue with too few of those, the zero-shot gaps measured on labelled sets at build
  time (`router/calibration.json`, written by `python -m bench.tool_router_eval --write-calibration`).

The same held-back calls decide whether the feedback model is blended in at all: only when, both
calibrated to the same coverage, the blended scores keep fewer tools than zero-shot ones. Either
way the kept set holds the configured coverage, so learning can shrink sets but not lower recall.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["Assessment", "ColdCalibration", "assess", "conformal_margin", "gap", "kept_count", "load_cold"]


def conformal_margin(gaps: Sequence[float] | npt.NDArray[np.float64], coverage: float) -> float:
    """The margin that holds `coverage` for calls exchangeable with these; +inf with too few."""
    ordered = np.sort(np.asarray(gaps, dtype=np.float64))
    k = math.ceil((len(ordered) + 1) * coverage)
    return float(ordered[k - 1]) if 1 <= k <= len(ordered) else math.inf


def gap(scores: npt.NDArray[np.float64], called: int) -> float:
    """How far below the best the called tool scored (0: it was the best)."""
    finite = scores[np.isfinite(scores)]
    return float(finite.max() - scores[called]) if finite.size else 0.0


def kept_count(scores: npt.NDArray[np.float64], margin: float) -> int:
    finite = scores[np.isfinite(scores)]
    return int(np.count_nonzero(finite >= finite.max() - margin)) if finite.size else 0


@dataclass(frozen=True)
class ColdCalibration:
    """Zero-shot gaps measured on labelled sets, for catalogues without calls of their own."""

    gaps: tuple[float, ...]
    trained_on: tuple[str, ...]
    description_weight: float
    lexical_weight: float

    def margin(self, coverage: float) -> float:
        return conformal_margin(self.gaps, coverage)

    def to_json(self) -> str:
        return json.dumps({"trained_on": self.trained_on, "description_weight": self.description_weight,
                           "lexical_weight": self.lexical_weight, "gaps": [round(g, 5) for g in self.gaps]})

    @classmethod
    def from_json(cls, raw: str) -> ColdCalibration:
        data = json.loads(raw)
        return cls(gaps=tuple(float(g) for g in data["gaps"]), trained_on=tuple(data["trained_on"]),
                   description_weight=float(data["description_weight"]),
                   lexical_weight=float(data["lexical_weight"]))


def load_cold(path: str | Path | None = None) -> ColdCalibration:
    if path is not None:
        return ColdCalibration.from_json(Path(path).read_text(encoding="utf-8"))
    return ColdCalibration.from_json(resources.files("router").joinpath("calibration.json").read_text("utf-8"))


@dataclass(frozen=True)
class Assessment:
    """What a catalogue's held-back calls say: the margin to use and whether to blend."""

    calls: int  # held-back calls it rests on
    blend: bool
    margin: float  # for the scores it chose (blended or zero-shot)
    kept_zero_shot: float  # mean tools kept at zero-shot's own margin, on the held-back calls
    kept_blended: float


def assess(zero_shot: npt.NDArray[np.float64], blended: npt.NDArray[np.float64], called: Sequence[int],
           coverage: float, minimum: int) -> Assessment | None:
    """`zero_shot`, `blended`: (calls, tools) scores of the held-back calls; `called` the index of
    each call's tool. None when there are fewer than `minimum` calls (the cold margin stands)."""
    if len(called) < minimum:
        return None
    idx = list(called)
    zs_gaps = [gap(zero_shot[i], c) for i, c in enumerate(idx)]
    bl_gaps = [gap(blended[i], c) for i, c in enumerate(idx)]
    zs_margin, bl_margin = conformal_margin(zs_gaps, coverage), conformal_margin(bl_gaps, coverage)
    zs_kept = float(np.mean([kept_count(row, zs_margin) for row in zero_shot]))
    bl_kept = float(np.mean([kept_count(row, bl_margin) for row in blended]))
    blend = bl_kept < zs_kept
    return Assessment(calls=len(idx), blend=blend, margin=bl_margin if blend else zs_margin,
                      kept_zero_shot=round(zs_kept, 3), kept_blended=round(bl_kept, 3))
