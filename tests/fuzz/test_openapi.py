"""The HTTP surface fuzzed from its own OpenAPI description with schemathesis: bodies that fit the
schemas and bodies that break them (wrong types, missing fields, out-of-range numbers, odd
strings), against a live gateway process in front of a sim. Every answer must be an OpenAI-shaped
4xx or a valid answer: never a 5xx, never a stack trace, and schema-breaking input always refused.

Bounded: `EXAMPLES` per operation keeps the whole run under two minutes here.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.config import GenerationConfig, ProjectConfig, SchemathesisConfig  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

from tests.faults.oracle import assert_error_shape  # noqa: E402
from tests.support.processes import ServerProcess  # noqa: E402
from tests.support.stack import sim_backend, start_gateway, start_sim  # noqa: E402

EXAMPLES = 300
MODELS = ["sim-model", "embed-model"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("openapi-fuzz")
    sim = start_sim("--models", ",".join(MODELS), "--output-tokens", "3", log_dir=tmp)
    config = {
        "auth": {"mode": "none"},
        "server": {"max_body_bytes": 256 * 1024},
        "backends": [sim_backend("s", sim)],
        "resilience": {"retries": 0},
    }
    gw = start_gateway(config, tmp)
    try:
        yield gw
    finally:
        gw.stop()
        sim.stop()


@pytest.fixture(scope="module")
def api_schema(gateway: ServerProcess) -> Any:
    generation = GenerationConfig(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES, deterministic=True
    )
    config = SchemathesisConfig(projects=None)
    config.projects.default = ProjectConfig(generation=generation, request_timeout=10.0)
    return schemathesis.openapi.from_url(gateway.url + "/openapi.json", config=config)


_rng = random.Random(9)

OPERATIONS = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model}"),
]


def _known_model(case: Any) -> Any:
    """Half the valid bodies name a model that exists, so they reach the backend, not just the 404."""
    if isinstance(case.body, dict) and "model" in case.body and _rng.random() < 0.5:
        case.body = {**case.body, "model": _rng.choice(MODELS)}
    return case


def _check(case: Any, mode: GenerationMode) -> None:
    response = case.call(timeout=10)
    case.validate_response(response, checks=[not_a_server_error])
    assert response.status_code < 500, response.text[:2000]
    if mode == GenerationMode.NEGATIVE:  # input that breaks the schema is refused (400, or 413 when huge)
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:2000])
    assert "Traceback" not in response.text and 'File "' not in response.text
    if response.status_code >= 400:
        assert_error_shape(response.json()["error"])


# Schema-breaking input exists only where there is a schema to break: the POST bodies.
CASES = [
    (m, p, mode) for m, p in OPERATIONS for mode in GenerationMode if m == "POST" or mode == GenerationMode.POSITIVE
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES])
def test_every_answer_is_valid_or_an_openai_shaped_4xx(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    examples = EXAMPLES if method == "POST" else EXAMPLES // 4

    strategy = operation.as_strategy(mode)

    @settings(
        max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
    )
    @given(case=strategy.map(_known_model) if mode == GenerationMode.POSITIVE else strategy)
    def fuzz(case: Any) -> None:
        _check(case, mode)

    fuzz()
