from __future__ import annotations

import batching


def test_public_names() -> None:
    assert batching.__all__ == sorted(
        [
            "EngineError",
            "EngineOverloaded",
            "EngineSettings",
            "GenerationOutput",
            "GenerationRequest",
            "InvalidRequest",
            "SamplingParams",
            "TokenLogprob",
            "WorkerPool",
        ]
    )
    for name in batching.__all__:
        assert getattr(batching, name).__module__.startswith("batching.")


def test_exception_tree() -> None:
    assert issubclass(batching.EngineOverloaded, batching.EngineError)
    assert issubclass(batching.InvalidRequest, batching.EngineError)
    assert issubclass(batching.InvalidRequest, ValueError)
    assert batching.EngineOverloaded("full", retry_after=2.5).retry_after == 2.5
    assert batching.InvalidRequest("bad", "top_p").param == "top_p"
