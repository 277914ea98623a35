"""`switchyard serve --upstream URL …` in front of servers already running: no config file, models
discovered from each upstream's /v1/models, every stage on its defaults."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.support.processes import ServerProcess, free_port, switchyard_command
from tests.support.stack import SimControl, start_sim


def test_serve_in_front_of_two_upstreams_discovers_their_models(tmp_path: Path) -> None:
    small = start_sim("--models", "small-model", log_dir=tmp_path, name="small")
    large = start_sim("--models", "large-model,other-model", log_dir=tmp_path, name="large")
    port = free_port()
    command = switchyard_command("serve", "--upstream", small.url, "--upstream", large.url + "/v1",
                                 "--port", str(port), "--api-key", "sk-quick-start")
    gateway = ServerProcess(command, port, ready_path="/readyz", log_path=tmp_path / "gateway.log")
    try:
        gateway.start(timeout=120)
        with openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-quick-start", max_retries=0) as client:
            assert sorted(m.id for m in client.models.list()) == ["large-model", "other-model", "small-model"]
            for model, sim in (("small-model", small), ("other-model", large)):
                reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
                assert reply.choices[0].message.content
                assert SimControl(sim).last_request()["body"]["model"] == model
        with openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-someone-else", max_retries=0) as client, \
                pytest.raises(openai.AuthenticationError):
            client.models.list()
    finally:
        gateway.stop()
        small.stop()
        large.stop()
