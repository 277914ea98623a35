"""May a cached answer be served for a new prompt? A calibrated model decides, not hand thresholds.

A logistic model over `pair_features` (cosine plus the guards' signals) scores a candidate pair;
the pair is served when its score exceeds the threshold of its scope. Each weight's sign is fixed
by what its feature means (more cosine or more shared words can only help, a differing rare word or
name can only hurt), so the model cannot learn a set's accident, say that a name missing makes a
match *more* likely; length, which has no direction, is left out. Signals that change what is asked
by definition (a different number, date, negation, antonym or role) veto the pair outright: a set
without such traps could not teach their weight, and no real paraphrase differs in them. Fitted
and held out per set (bench/cache_eval.py), this generalises where unconstrained weights did not.

The threshold comes from split conformal risk control on labelled pairs: fit the model on one part,
score the *negative* pairs (different answers) of the other part, and take the
ceil((n + 1)(1 - alpha))-th smallest score. A new negative pair, exchangeable with those, then
scores above it with probability at most alpha: the expected wrong-hit rate is <= alpha.
`Calibration` holds the result; `cache/calibration.json` is the one shipped, written by
`python -m bench.cache_eval --write-calibration` from the labelled sets in bench/eval_data.py.

Live, the gateway re-asks the backend for a sample of hits (`cache.verify_sample_rate`). Each
verdict is a labelled pair the deployment saw itself: `LiveRisk` raises the threshold of a scope
(and of the whole deployment) until the wrong share of its verified hits above it is <= alpha.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cache.pair_features import FEATURES

__all__ = ["SIGNS", "VETOES", "Calibration", "LiveRisk", "conformal_threshold", "fit_calibration",
           "load_calibration", "tightened_threshold"]


def conformal_threshold(negative_scores: npt.ArrayLike, alpha: float) -> float:
    """The score a new negative exceeds with probability <= alpha (split conformal). +inf when there
    are too few negatives to promise it: then nothing is served semantically."""
    scores = np.sort(np.asarray(negative_scores, dtype=np.float64))
    n = len(scores)
    k = math.ceil((n + 1) * (1 - alpha))
    return float(scores[k - 1]) if 1 <= k <= n else math.inf


@dataclass(frozen=True)
class Calibration:
    """A fitted pair model and the threshold that holds its wrong-hit rate at `alpha`."""

    features: tuple[str, ...]
    vetoes: tuple[str, ...]  # features whose presence means "not the same question"
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    alpha: float
    threshold: float
    negatives: int  # calibration negatives behind the threshold
    trained_on: tuple[str, ...] = ()  # the labelled sets
    _w: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)
    _m: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)
    _s: npt.NDArray[np.float64] = field(init=False, repr=False, compare=False)
    _v: npt.NDArray[np.intp] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if tuple(self.features) != FEATURES:
            raise ValueError(f"calibration was made for features {self.features}, this cache computes {FEATURES}")
        object.__setattr__(self, "_w", np.asarray(self.weights, dtype=np.float64))
        object.__setattr__(self, "_m", np.asarray(self.mean, dtype=np.float64))
        object.__setattr__(self, "_s", np.asarray(self.scale, dtype=np.float64))
        object.__setattr__(self, "_v", np.array([FEATURES.index(v) for v in self.vetoes], dtype=np.intp))

    def score(self, row: npt.NDArray[np.float64]) -> float:
        """The model's probability that the pair has the same answer (0 when a veto fires)."""
        if (row[self._v] > 0).any():
            return 0.0
        z = float(((row - self._m) / self._s) @ self._w + self.bias)
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def scores(self, rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        z = ((rows - self._m) / self._s) @ self._w + self.bias
        out = 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))
        out[(rows[:, self._v] > 0).any(axis=1)] = 0.0
        return np.asarray(out, dtype=np.float64)

    def at(self, alpha: float, negative_scores: npt.ArrayLike) -> Calibration:
        """The same model with the threshold for another alpha."""
        return _replace(self, alpha=alpha, threshold=conformal_threshold(negative_scores, alpha))

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        data["threshold"] = None if math.isinf(self.threshold) else self.threshold
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, raw: str) -> Calibration:
        data = json.loads(raw)
        data["threshold"] = math.inf if data.get("threshold") is None else float(data["threshold"])
        for key in ("features", "vetoes", "mean", "scale", "weights", "trained_on"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)


def _replace(c: Calibration, **changes: Any) -> Calibration:
    data = {k: v for k, v in asdict(c).items() if not k.startswith("_")} | changes
    return Calibration(**data)


def load_calibration(path: str | Path | None = None) -> Calibration:
    """The calibration at `path`, or the one shipped with the package."""
    if path is not None:
        return Calibration.from_json(Path(path).read_text(encoding="utf-8"))
    return Calibration.from_json(resources.files("cache").joinpath("calibration.json").read_text(encoding="utf-8"))


# The sign each feature's weight may take (+1: can only raise the score, -1: only lower it); features
# not named are not used. `VETOES` end the question outright.
SIGNS = {
    "cosine": 1, "hard_words": -1, "rare_words": -1, "soft_only": 1, "same_words": 1, "overlap": 1,
}
VETOES = ("numbers_differ", "dates_differ", "negation_differs", "antonym", "roles_swapped")


def _fit_signed(z: npt.NDArray[np.float64], y: npt.NDArray[np.bool_], signs: list[int], l2: float
                ) -> tuple[npt.NDArray[np.float64], float]:
    """Class-balanced logistic regression with each weight's sign bounded (L-BFGS-B)."""
    from scipy.optimize import minimize

    target = y.astype(np.float64)
    weight = np.where(y, 0.5 / max(target.mean(), 1e-9), 0.5 / max(1 - target.mean(), 1e-9))
    n = len(target)

    def loss(p: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
        t = z @ p[:-1] + p[-1]
        value = float((weight * (np.logaddexp(0, -t) * target + np.logaddexp(0, t) * (1 - target))).mean())
        g = -(target - 1 / (1 + np.exp(-t))) * weight
        grad = np.append(z.T @ g / n + 2 * l2 * p[:-1] / n, g.mean())
        return value + l2 * float(p[:-1] @ p[:-1]) / n, grad

    bounds = [(0.0, None) if sg > 0 else (None, 0.0) for sg in signs] + [(None, None)]
    found = minimize(loss, np.zeros(len(signs) + 1), jac=True, method="L-BFGS-B", bounds=bounds)
    return np.asarray(found.x[:-1], dtype=np.float64), float(found.x[-1])


def fit_calibration(rows: npt.NDArray[np.float64], same: npt.NDArray[np.bool_], alpha: float, *,
                    calibrate: npt.NDArray[np.bool_], trained_on: tuple[str, ...] = (), l2: float = 1.0
                    ) -> tuple[Calibration, npt.NDArray[np.float64]]:
    """Fit the model on the rows not in `calibrate` (and not vetoed), the threshold on the negatives
    in `calibrate`. Returns the calibration and those negatives' scores."""
    used = [FEATURES.index(name) for name in SIGNS]
    vetoed = (rows[:, [FEATURES.index(v) for v in VETOES]] > 0).any(axis=1)
    train = ~calibrate & ~vetoed
    mean = np.zeros(len(FEATURES))
    scale = np.ones(len(FEATURES))
    mean[used] = rows[train][:, used].mean(axis=0)
    spread = rows[train][:, used].std(axis=0)
    scale[used] = np.where(spread < 1e-9, 1.0, spread)
    z = (rows[train][:, used] - mean[used]) / scale[used]
    coef, bias = _fit_signed(z, same[train], list(SIGNS.values()), l2)
    weights = np.zeros(len(FEATURES))
    weights[used] = coef
    fitted = Calibration(
        features=FEATURES, vetoes=VETOES, mean=tuple(mean.tolist()), scale=tuple(scale.tolist()),
        weights=tuple(weights.tolist()), bias=bias, alpha=alpha, threshold=math.inf, negatives=0,
        trained_on=trained_on,
    )
    negatives = fitted.scores(rows[calibrate & ~same])
    return _replace(fitted, threshold=conformal_threshold(negatives, alpha), negatives=len(negatives)), negatives


def tightened_threshold(samples: list[tuple[float, bool]], floor: float, alpha: float) -> float:
    """The smallest threshold >= floor above which the verified samples' wrong share is <= alpha.
    `samples`: (score, wrong) of verified hits. Serving is `score > threshold`."""
    above = sorted((s for s in samples if s[0] > floor), key=lambda s: s[0], reverse=True)
    wrong = sum(w for _, w in above)
    if wrong <= alpha * len(above):
        return floor
    # Walk up from the floor: dropping the lowest-scored samples one score at a time.
    n = len(above)
    i = n
    while i > 0:
        cut = above[i - 1][0]
        while i > 0 and above[i - 1][0] == cut:
            i -= 1
            wrong -= above[i][1]
        if wrong <= alpha * i:
            return cut
    return above[0][0]


class LiveRisk:
    """Verified hits per scope (recent `window` each, `max_scopes` scopes) and the thresholds they
    call for. Per process: every replica learns from the verdicts it makes."""

    def __init__(self, alpha: float, window: int, max_scopes: int = 10_000):
        self.alpha = alpha
        self.window = window
        self.max_scopes = max_scopes
        self._scopes: OrderedDict[str, deque[tuple[float, bool]]] = OrderedDict()
        self._all: deque[tuple[float, bool]] = deque(maxlen=window * 4)
        self._deployment: float | None = None
        self._thresholds: dict[str, float] = {}

    def record(self, scope: str, score: float, wrong: bool) -> None:
        samples = self._scopes.get(scope)
        if samples is None:
            samples = self._scopes[scope] = deque(maxlen=self.window)
            while len(self._scopes) > self.max_scopes:
                gone, _ = self._scopes.popitem(last=False)
                self._thresholds.pop(gone, None)
        else:
            self._scopes.move_to_end(scope)
        samples.append((score, wrong))
        self._all.append((score, wrong))
        self._deployment = None
        self._thresholds.pop(scope, None)
        if wrong:  # a contradiction may lift every scope's floor: recompute lazily
            self._thresholds.clear()

    def threshold(self, scope: str, base: float) -> float:
        """The threshold for `scope`: the calibrated `base`, raised by what verification found."""
        if self._deployment is None:
            # Deployment-wide only once there are enough verdicts to measure alpha at all; before
            # that a few contradictions tighten their own scope, not every tenant's.
            enough = len(self._all) >= math.ceil(1 / self.alpha)
            self._deployment = tightened_threshold(list(self._all), base, self.alpha) if enough else base
        found = self._thresholds.get(scope)
        if found is None:
            samples = self._scopes.get(scope)
            floor = max(base, self._deployment)
            found = tightened_threshold(list(samples), floor, self.alpha) if samples else floor
            self._thresholds[scope] = found
        return found

    def wrong_rate(self, scope: str, threshold: float) -> tuple[int, int]:
        """(wrong, verified) among a scope's verified hits scored above `threshold`."""
        above = [w for s, w in self._scopes.get(scope, ()) if s > threshold]
        return sum(above), len(above)
