"""The README's run command: `switchyard serve` with no flags serves the bundled model on the
built-in engine, with no Redis, no GPU and no network."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.support.processes import ServerProcess, free_port, switchyard_command, wait_until_ready

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_default_command_serves_the_bundled_model(tmp_path: Path) -> None:
    port = free_port()
    gateway = ServerProcess(
        switchyard_command("serve", "--port", str(port)),
        port,
        ready_path="/healthz",
        env={"HF_HUB_OFFLINE": "1", "SWITCHYARD_SERVER__STATE_DIR": str(tmp_path / "state")},
        log_path=tmp_path / "gateway.log",
    )
    gateway.start(timeout=60)  # alive at once; the model loads in the background
    try:
        loading = httpx.get(gateway.url + "/readyz")  # loading and warming take many seconds on two cores
        assert loading.status_code == 503 and loading.json()["engine:local"]["ready"] is False
        wait_until_ready(gateway.url + "/readyz", gateway.proc, timeout=300)
        with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as client:
            assert [m.id for m in client.models.list()] == ["smollm2-135m-instruct"]
            reply = client.chat.completions.create(
                model="smollm2-135m-instruct",
                messages=[{"role": "user", "content": "What is the capital of France?"}],
                temperature=0,
                max_tokens=24,
            )
            assert "Paris" in (reply.choices[0].message.content or "")
            streamed = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(
                    model="smollm2-135m-instruct",
                    stream=True,
                    temperature=0,
                    max_tokens=8,
                    messages=[{"role": "user", "content": "Say hello."}],
                )
                if c.choices
            )
            assert streamed.strip()
        ready = httpx.get(gateway.url + "/readyz").json()
        assert ready["engine:local"]["ready"] is True and ready["cache"]["store"] == "memory"
        assert "switchyard_engine_model_load_seconds" in httpx.get(gateway.url + "/metrics").text
    finally:
        assert gateway.stop(timeout=60) == 0
