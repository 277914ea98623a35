"""Switchyard gateway: the OpenAI-compatible HTTP surface and the request pipeline.

Front door: `create_app(settings)` builds the ASGI app; `load_settings` reads and validates
configuration; `main` is the `switchyard` command line.
"""

from gateway.app import create_app
from gateway.cli import main
from gateway.errors import SwitchyardError
from gateway.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "SwitchyardError", "create_app", "load_settings", "main"]
