"""Request and settings validation: tables of bad values and the parameter each error names."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from batching import EngineSettings, GenerationRequest, InvalidRequest, SamplingParams

BAD_SAMPLING = [
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"seed": -1}, "seed"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stop": [""]}, "stop"),
    ({"stop": ["x"] * 17}, "stop"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": float("inf")}, "frequency_penalty"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"n": 0}, "n"),
    ({"n": 17}, "n"),
    ({"stop_token_ids": [-1]}, "stop_token_ids"),
]


@pytest.mark.parametrize(("kwargs", "param"), BAD_SAMPLING)
def test_sampling_params_reject(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest, match=param) as info:
        SamplingParams(**kwargs)
    assert info.value.param == param


def test_sampling_params_normalise_stop() -> None:
    assert SamplingParams(stop="END").stop == ("END",)
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")
    assert SamplingParams(temperature=0).greedy and not SamplingParams().greedy


def test_generation_request() -> None:
    assert GenerationRequest([1, 2]).prompt_token_ids == (1, 2)
    with pytest.raises(InvalidRequest, match="priority"):
        GenerationRequest([1], priority="urgent")  # type: ignore[arg-type]


BAD_SETTINGS = [
    ({"model": "bundled:nope"}, "model"),
    ({"model": "/nonexistent/dir"}, "model"),
    ({"devices": ["gpu"]}, "devices"),
    ({"devices": []}, "devices"),
    ({"max_num_seqs": 0}, "max_num_seqs"),
    ({"max_num_seqs": 64, "max_num_batched_tokens": 32}, "max_num_batched_tokens"),
    ({"gpu_memory_utilization": 0}, "gpu_memory_utilization"),
    ({"kv_cache_memory_mb": 0}, "kv_cache_memory_mb"),
    ({"unknown_key": 1}, "unknown_key"),
]


@pytest.mark.parametrize(("kwargs", "key"), BAD_SETTINGS)
def test_settings_reject_and_name_the_key(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ValidationError, match=key):
        EngineSettings(**kwargs)


def test_settings_defaults_and_devices(tiny_model_dir: Any) -> None:
    s = EngineSettings(model=str(tiny_model_dir), devices=["cuda", "cpu"])
    assert s.devices == ["cuda:0", "cpu"] and s.max_num_seqs == 32 and s.kv_cache_memory_mb is None
