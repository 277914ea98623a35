"""`bench.vllm_cpu` without starting vLLM: the server is started so that a gateway in front of it routes
the same public model name the project's own engine serves."""

from __future__ import annotations

import yaml

from batching.models import BUNDLED_MODELS
from bench.vllm_cpu import MODEL_NAME, VllmServer
from tests.support.processes import REPO


def test_vllm_serves_the_bundled_model_under_its_public_name() -> None:
    config = yaml.safe_load((REPO / "config" / "gateway.yaml").read_text())
    public = {m for backend in config["backends"] for m in backend.get("models", [])}
    assert MODEL_NAME in public and MODEL_NAME in BUNDLED_MODELS
    args = VllmServer(port=1).args
    assert args[args.index("--served-model-name") + 1] == MODEL_NAME


def test_dtype_extra_arguments_and_environment_reach_vllm_serve() -> None:
    server = VllmServer(port=1, dtype="bfloat16", extra_args=["--max-model-len", "2048"], env={"X_PROBE": "1"})
    assert server.args[server.args.index("--dtype") + 1] == "bfloat16"
    assert server.args[-2:] == ["--max-model-len", "2048"]
    assert server.env["VLLM_TARGET_DEVICE"] == "cpu" and server.env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert server.env["X_PROBE"] == "1"
    assert server.ready_path == "/health"
