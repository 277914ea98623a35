"""The router's own settings; `gateway/settings.py` composes them under `router:`.

The scoring weights were tuned on one half of the BFCL single-call queries; how many tools to keep
is not a setting but a calibration (router/conformal.py) for the configured `coverage`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["RouterSettings"]


class RouterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    threshold: int = Field(16, ge=1, description="narrow only requests with more tools than this")
    pinned: tuple[str, ...] = Field((), description="tool names that always survive narrowing")

    # Scoring: dense similarity of the intent to the tool's full text and to its description alone,
    # plus a lexical (BM25) score normalised by its best match in the catalogue.
    description_weight: float = Field(0.5, ge=0)
    lexical_weight: float = Field(0.4, ge=0)

    # Which tools to keep (see router/narrow.py): every tool within a margin of the best score, at
    # least `min_keep`, at most `max_keep`. The margin is calibrated (router/conformal.py) so that the
    # called tool is kept with probability >= `coverage`: per catalogue from its held-back observed
    # calls once it has `calibration_min` of them, before that from labelled sets (`calibration`,
    # None: the shipped file). `margin` set by hand overrides all of it. Optional heuristics: a best
    # score under `widen_below` keeps `widen_keep`; under `fallback_below` the full list passes.
    coverage: float = Field(0.98, gt=0, lt=1, description="probability that the called tool is kept")
    # 200: the margin of n calls over-covers by up to 1/(n + 1); at 0.98 fewer would cost more tools
    # than the labelled-set margin they replace
    calibration_min: int = Field(200, ge=1, description="held-back calls a catalogue needs for its own margin")
    calibration: str | None = Field(None, description="zero-shot calibration file; None: the shipped one")
    min_keep: int = Field(3, ge=1)
    max_keep: int = Field(128, ge=1)
    margin: float | None = Field(None, ge=0, description="a fixed margin instead of the calibrated one")
    widen_below: float = Field(0.0, ge=0)
    widen_keep: int = Field(80, ge=1)
    fallback_below: float = Field(0.0, ge=0)
    high_from: float = Field(1.0, ge=0, description="best score from which the confidence band is `high`")

    # Feedback: observed tool calls are labelled examples for a classifier per catalogue.
    feedback: bool = True
    feedback_weight: float = Field(2.5, ge=0, description="largest boost the classifier gives a tool")
    feedback_similarity: tuple[float, float] = Field(
        (0.2, 0.6),
        description="similarity to a past example below which it counts for nothing, and at which it counts fully",
    )
    share_feedback: bool = Field(False, description="pool every tenant's feedback (else each tenant learns alone)")
    max_examples: int = Field(2000, ge=1, description="examples kept per scope (oldest dropped first)")
    train_interval_s: float = Field(1.0, gt=0, description="how often the background task looks for new work")
    classifier_c: float = Field(16.0, gt=0, description="inverse regularisation of the logistic regression")

    shadow_fraction: float = Field(
        0.02,
        ge=0,
        le=1,
        description="narrowed requests sent with the full list "
        "and judged: was the tool the model called in the kept set?",
    )
    embed_timeout_s: float = Field(0.5, gt=0, description="when the router must embed the intent itself")
    inline_embed_max: int = Field(
        64,
        ge=0,
        description="unseen tools embedded on the request path; with "
        "more, the request passes whole and they are embedded in the background",
    )
    catalogue_cache: int = Field(256, ge=1, description="tool catalogues kept ready in memory")

    @model_validator(mode="after")
    def _check(self) -> RouterSettings:
        if self.max_keep < self.min_keep:
            raise ValueError("router.max_keep must be at least router.min_keep")
        if self.fallback_below > self.widen_below:
            raise ValueError("router.fallback_below must not exceed router.widen_below")
        lo, hi = self.feedback_similarity
        if not 0 <= lo < hi <= 1:
            raise ValueError("router.feedback_similarity must be (low, high) with 0 <= low < high <= 1")
        return self
