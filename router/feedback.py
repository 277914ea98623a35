"""The feedback loop's data and models: observed tool calls as labelled examples, and per catalogue a
supervised classifier (scikit-learn logistic regression) that turns them into a boost per tool.

A boost is in [0, 1]: the classifier's probability for the tool, times how close the intent is to
the tool's own past examples (so an intent unlike anything seen before gets nothing), times a ramp in
the tool's example count (one example counts half). The router adds `feedback_weight * boost` to the
zero-shot score, so as examples accumulate the learned part takes over, and it can only ever move
the tools of its own catalogue in its own scope.

`FeedbackBook` holds all of it in one object; training is a pure function run off the event loop.
"""

from __future__ import annotations

import base64
import io
import json
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from router.embedder import Vectors

__all__ = ["CatalogueModel", "Example", "FeedbackBook", "TrainingJob", "split", "train"]

_HOLD_BACK = 4  # one call in four (and every full-list call) calibrates instead of training


@dataclass(frozen=True, slots=True)
class Example:
    """This intent (its vector, and its lexical words) chose this tool (by name), in this tenant's
    request. `full`: the whole tool list went upstream (a shadow or fallback request), so the choice
    was not limited by what the router kept: the best kind of call to calibrate on."""

    name: str
    vector: Vectors
    tenant: str
    words: tuple[str, ...] = ()
    full: bool = False

    def to_json(self) -> str:
        packed = base64.b64encode(self.vector.astype(np.float16).tobytes()).decode()
        return json.dumps({"n": self.name, "v": packed, "t": self.tenant, "w": list(self.words), "f": self.full},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Example | None:
        try:
            data = json.loads(raw)
            vector = np.frombuffer(base64.b64decode(data["v"]), dtype=np.float16).astype(np.float32)
            return cls(name=str(data["n"]), vector=vector, tenant=str(data["t"]),
                       words=tuple(str(w) for w in data.get("w", ())), full=bool(data.get("f", False)))
        except (ValueError, KeyError, TypeError):
            return None  # a damaged record is skipped, not fatal


@dataclass(frozen=True)
class CatalogueModel:
    scope: str
    catalogue: str
    version: int  # the scope's example count when it was trained
    classes: tuple[str, ...]
    coef: npt.NDArray[np.float32]  # (classes, dim); zero rows when there is a single class
    intercept: npt.NDArray[np.float32]
    examples: npt.NDArray[np.float32]  # (m, dim) the examples it was trained on
    labels: npt.NDArray[np.intp]  # (m,) index into classes
    # What its catalogue's held-back calls said (router/conformal.py): blend its boosts into the
    # scores only when that keeps fewer tools at the same coverage; the margin that holds coverage
    # (None: too few held-back calls, the cold margin stands).
    blend: bool = False
    margin: float | None = None
    held_back: int = 0
    weight: float = 0.0  # the boost's strength when blended

    def boosts(
        self, query: Vectors, names: Sequence[str | None], similarity: tuple[float, float]
    ) -> npt.NDArray[np.float64]:
        """Per tool position, a boost in [0, 1]."""
        k = len(self.classes)
        if len(self.coef):
            logits = self.coef @ query + self.intercept
            probability = np.exp(logits - logits.max())
            probability /= probability.sum()
        else:
            probability = np.ones(k, dtype=np.float32)
        nearest = np.full(k, -1.0)
        np.maximum.at(nearest, self.labels, self.examples @ query)
        low, high = similarity
        gate = np.clip((nearest - low) / (high - low), 0.0, 1.0)
        counts = np.bincount(self.labels, minlength=k)
        per_class = probability * gate * counts / (counts + 1.0)
        index = {name: i for i, name in enumerate(self.classes)}
        out = np.zeros(len(names))
        for position, name in enumerate(names):
            i = index.get(name) if name is not None else None
            if i is not None:
                out[position] = per_class[i]
        return out

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            version=np.array(self.version),
            classes=np.array(self.classes, dtype=str),
            coef=self.coef,
            intercept=self.intercept,
            examples=self.examples.astype(np.float16),
            labels=self.labels,
            blend=np.array(self.blend),
            margin=np.array(np.nan if self.margin is None else self.margin),
            held_back=np.array(self.held_back),
            weight=np.array(self.weight),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, scope: str, catalogue: str, blob: bytes) -> CatalogueModel | None:
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as data:
                return cls(
                    scope=scope,
                    catalogue=catalogue,
                    version=int(data["version"]),
                    classes=tuple(str(c) for c in data["classes"]),
                    coef=data["coef"].astype(np.float32),
                    intercept=data["intercept"].astype(np.float32),
                    examples=data["examples"].astype(np.float32),
                    labels=data["labels"].astype(np.intp),
                    blend=bool(data["blend"]) if "blend" in data else False,
                    margin=None if "margin" not in data or np.isnan(data["margin"]) else float(data["margin"]),
                    held_back=int(data["held_back"]) if "held_back" in data else 0,
                    weight=float(data["weight"]) if "weight" in data else 0.0,
                )
        except (ValueError, KeyError, OSError):
            return None


@dataclass(frozen=True, slots=True)
class TrainingJob:
    scope: str
    catalogue: str
    names: frozenset[str]
    version: int
    examples: tuple[Example, ...]


def split(job: TrainingJob) -> tuple[list[Example], list[Example]]:
    """The scope's calls to this catalogue's tools, as (training, held back). Held back, to calibrate
    and judge the model: every full-list call and every `_HOLD_BACK`-th other one in the scope's
    order (the same on every replica: they share that order)."""
    relevant = [e for e in job.examples if e.name in job.names]
    held = [i for i, e in enumerate(relevant) if e.full or i % _HOLD_BACK == _HOLD_BACK - 1]
    chosen = set(held)
    return [e for i, e in enumerate(relevant) if i not in chosen], [relevant[i] for i in held]


def train(job: TrainingJob, c: float) -> CatalogueModel | None:
    """Fit the classifier for one catalogue on the scope's training calls to its tools (CPU-bound:
    run in a thread). The router then judges it on the held-back ones."""
    relevant, _ = split(job)
    if not relevant:
        return None
    classes = tuple(sorted({e.name for e in relevant}))
    index = {name: i for i, name in enumerate(classes)}
    x = np.stack([e.vector for e in relevant]).astype(np.float32)
    y = np.array([index[e.name] for e in relevant], dtype=np.intp)
    dim = x.shape[1]
    if len(classes) == 1:
        coef, intercept = np.zeros((0, dim), np.float32), np.zeros(0, np.float32)
    else:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=c, max_iter=300)
        model.fit(x, y)
        coef, intercept = model.coef_.astype(np.float32), model.intercept_.astype(np.float32)
        if len(classes) == 2:  # sklearn keeps one row for two classes: make it a two-way softmax
            coef = np.concatenate([-coef / 2, coef / 2])
            intercept = np.concatenate([-intercept / 2, intercept / 2])
    return CatalogueModel(
        scope=job.scope,
        catalogue=job.catalogue,
        version=job.version,
        classes=classes,
        coef=coef,
        intercept=intercept,
        examples=x,
        labels=y,
    )


class FeedbackBook:
    """Examples per scope, the catalogues each scope has shown, and the models trained for them."""

    def __init__(self, max_examples: int, max_catalogues: int = 64, max_models: int = 256):
        self._max_examples = max_examples
        self._max_catalogues = max_catalogues
        # Models hold their examples; the store keeps every one ever trained, memory only the recent
        # ones (an evicted model is loaded or trained again when its catalogue next shows up).
        self._max_models = max_models
        self._examples: dict[str, deque[Example]] = {}
        self._versions: dict[str, int] = {}
        self._catalogues: dict[str, OrderedDict[str, frozenset[str]]] = {}
        self._models: OrderedDict[tuple[str, str], CatalogueModel] = OrderedDict()

    def version(self, scope: str) -> int:
        return self._versions.get(scope, 0)

    def scopes(self) -> list[str]:
        return list(self._examples)

    def examples(self, scope: str) -> tuple[Example, ...]:
        return tuple(self._examples.get(scope, ()))

    def add(self, scope: str, examples: Iterable[Example]) -> None:
        kept = self._examples.setdefault(scope, deque(maxlen=self._max_examples))
        for example in examples:
            kept.append(example)
            self._versions[scope] = self._versions.get(scope, 0) + 1

    def replace(self, scope: str, examples: Iterable[Example], version: int) -> None:
        """Take a scope's examples as another replica (or the last run) left them."""
        self._examples[scope] = deque(examples, maxlen=self._max_examples)
        self._versions[scope] = version

    def saw(self, scope: str, catalogue: str, names: Iterable[str | None]) -> None:
        seen = self._catalogues.setdefault(scope, OrderedDict())
        if catalogue in seen:
            seen.move_to_end(catalogue)
            return
        seen[catalogue] = frozenset(n for n in names if n is not None)
        while len(seen) > self._max_catalogues:
            gone, _ = seen.popitem(last=False)
            self._models.pop((scope, gone), None)  # a model holds its examples: it goes with its catalogue

    def model(self, scope: str, catalogue: str) -> CatalogueModel | None:
        model = self._models.get((scope, catalogue))
        if model is not None:
            self._models.move_to_end((scope, catalogue))
        return model

    def models(self) -> list[CatalogueModel]:
        return list(self._models.values())

    def install(self, model: CatalogueModel) -> None:
        current = self._models.get((model.scope, model.catalogue))
        if current is None or current.version <= model.version:
            self._models[(model.scope, model.catalogue)] = model
            self._models.move_to_end((model.scope, model.catalogue))
            while len(self._models) > self._max_models:
                self._models.popitem(last=False)

    def stale(self) -> list[TrainingJob]:
        """Catalogues whose model is older than their scope's examples and that have examples to learn."""
        jobs = []
        for scope, seen in self._catalogues.items():
            version = self.version(scope)
            examples = self.examples(scope)
            learned = {e.name for e in examples}
            for catalogue, names in seen.items():
                current = self._models.get((scope, catalogue))
                if (current is None or current.version < version) and names & learned:
                    jobs.append(TrainingJob(scope, catalogue, names, version, examples))
        return jobs

    def counts(self) -> dict[str, Any]:
        return {"examples": sum(len(v) for v in self._examples.values()), "models": len(self._models)}
