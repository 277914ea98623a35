"""The OpenAPI description the fuzzer (and any client generator) reads is self-consistent: every
`$ref` in it points at something that exists."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from gateway.app import create_app
from gateway.settings import Settings


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def test_every_ref_in_the_openapi_description_resolves() -> None:
    app = create_app(Settings.model_validate({"auth": {"mode": "none"}})).app
    assert isinstance(app, FastAPI)
    document = app.openapi()
    for ref in _refs(document):
        _resolve(document, ref)
    chat = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    message = chat["properties"]["messages"]["items"]
    message = _resolve(document, message["$ref"]) if "$ref" in message else message
    assert message["properties"]["role"]["enum"]  # the nested models are described, not lost
