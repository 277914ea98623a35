"""The OpenAI wire surface: one sub-package per endpoint (protocol, serving, route)."""
