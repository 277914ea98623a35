"""Switchyard gateway: the OpenAI-compatible HTTP surface and the request pipeline.

Front door: `create_app(settings)` builds the ASGI app; `load_settings` reads and validates
configuration; `main` is the `switchyard` command line. The names load on first use, so that
`switchyard sim` and `switchyard check-config` do not pay for the web framework and the models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.app import create_app
    from gateway.cli import main
    from gateway.errors import SwitchyardError
    from gateway.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "SwitchyardError", "create_app", "load_settings", "main"]

_HOMES = {
    "create_app": "gateway.app",
    "main": "gateway.cli",
    "SwitchyardError": "gateway.errors",
    "ConfigError": "gateway.settings",
    "Settings": "gateway.settings",
    "load_settings": "gateway.settings",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
