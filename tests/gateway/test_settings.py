from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.settings import ConfigError, load_settings

DEV = {"auth": {"mode": "none"}}


def test_errors_name_the_bad_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("auth: {mode: none}\nserver:\n  port: 99999\nbackends:\n  - name: x\n    type: openai\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert "server.port" in str(err.value)
    assert "backends.0" in str(err.value) and "base_url" in str(err.value)


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"server\.prot"):
        load_settings(overrides={**DEV, "server": {"prot": 1}})


def test_keys_are_required_unless_development_mode_is_chosen() -> None:
    with pytest.raises(ConfigError, match=r"auth\.mode: none"):
        load_settings(environ={})
    assert load_settings(environ={}, overrides=DEV).auth.mode == "none"


def test_the_default_state_dir_is_under_home_not_a_folder_named_tilde(monkeypatch: pytest.MonkeyPatch) -> None:
    default = load_settings(environ={}, overrides=DEV).server.state_dir
    assert default == os.path.expanduser("~/.local/state/switchyard") and "~" not in default
    monkeypatch.setenv("HOME", "/home/ada")
    given = load_settings(environ={}, overrides={**DEV, "server": {"state_dir": "~/state"}})
    assert given.server.state_dir == "/home/ada/state"


def test_environment_overrides() -> None:
    env = {"SWITCHYARD_SERVER__PORT": "9123", "SWITCHYARD_AUTH__MODE": "none", "SWITCHYARD_REDIS__URL": "redis://r:1/0"}
    settings = load_settings(environ=env)
    assert settings.server.port == 9123 and settings.redis.url == "redis://r:1/0"


def test_upstream_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(
        environ={},
        overrides={**DEV, "backends": [{"name": "b", "base_url": "http://x/v1", "api_key_env": "B_KEY"}]},
    )
    with pytest.raises(ConfigError, match="B_KEY"):
        settings.backends[0].api_key()
    monkeypatch.setenv("B_KEY", "secret")
    assert settings.backends[0].api_key() == "secret"


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("auth: {mode: none}\nbackends:\n  - {name: a, base_url: 'http://h/v1', models: [m1]}\n")
    assert main(["check-config", str(good)]) == 0
    assert "m1" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("auth: {mode: none}\nrelay: {hedge_budget: 2}\n")
    assert main(["check-config", str(bad)]) == 1
    assert "relay.hedge_budget" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("relay", "model", "priority", "deadline"),
    [
        ({}, "m", "interactive", None),  # none configured: derived from recent TTFTs at run time
        ({"first_token_deadline": 0.5}, "m", "interactive", 0.5),
        ({"first_token_deadline": 0.5}, "m", "batch", None),  # one figure is interactive's only
        ({"first_token_deadline": {"interactive": 0.5, "batch": 4}}, "m", "batch", 4.0),
        ({"first_token_deadline": {"batch": 4}}, "m", "interactive", None),
        ({"first_token_deadline": 0.5, "model_deadlines": {"big": {"interactive": 2}}}, "big", "interactive", 2.0),
        ({"first_token_deadline": 0.5, "model_deadlines": {"big": 2}}, "small", "interactive", 0.5),
    ],
)
def test_first_token_deadlines_per_model_and_class(
    relay: dict[str, object], model: str, priority: str, deadline: float | None
) -> None:
    settings = load_settings(overrides={**DEV, "relay": relay})
    assert settings.relay.fixed_deadline(model, priority) == deadline  # type: ignore[arg-type]


def test_deadlines_must_be_positive_and_name_a_class() -> None:
    with pytest.raises(ConfigError, match=r"relay\.first_token_deadline"):
        load_settings(overrides={**DEV, "relay": {"first_token_deadline": -1}})
    with pytest.raises(ConfigError, match=r"relay\.model_deadlines"):
        load_settings(overrides={**DEV, "relay": {"model_deadlines": {"m": {"urgent": 1}}}})


def test_backends_declare_the_apis_they_speak_natively() -> None:
    base = {"auth": {"mode": "none"}}
    remote = {"name": "v", "base_url": "http://h/v1"}
    s = load_settings(overrides={**base, "backends": [remote, {**remote, "name": "w", "apis": ["chat", "responses"]}]})
    assert s.backends[0].native_apis() == {"chat", "completions", "embeddings"}
    assert s.backends[1].native_apis() == {"chat", "responses"}
    local = load_settings(overrides={**base, "backends": [{"name": "e", "type": "local", "models": ["m"]}]})
    assert local.backends[0].native_apis() == {"chat", "completions"}
    with pytest.raises(ConfigError, match="apis"):
        load_settings(
            overrides={**base, "backends": [{"name": "e", "type": "local", "models": ["m"], "apis": ["responses"]}]}
        )
    with pytest.raises(ConfigError, match="apis"):
        load_settings(overrides={**base, "backends": [{**remote, "apis": ["smoke-signals"]}]})
