"""README reference tables generated from the code, so they cannot drift from it: every
configuration key (from the settings models) and every metric (from the Prometheus registry).

`python -m gateway.reference` prints both, `python -m gateway.reference --write README.md` refreshes
them in place; a test checks that README.md carries them unchanged.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from gateway.settings import Settings

__all__ = ["config_table", "metrics_table"]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    for arg in typing.get_args(annotation):
        found.extend(_models_in(arg))
    return found


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return "mapping" if issubclass(annotation, BaseModel) else annotation.__name__
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:  # constrained types (PositiveFloat): the base type; the meaning says more
        return _type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is list:
        return f"list[{', '.join(_type_name(a) for a in typing.get_args(annotation))}]"
    if origin is dict:
        return f"map[{', '.join(_type_name(a) for a in typing.get_args(annotation))}]"
    return str(annotation).replace("typing.", "")


def _default(field: Any) -> str:
    if field.default is PydanticUndefined:
        if field.default_factory is not None:
            value = field.default_factory()
        else:
            return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    return f"`{value!r}`" if value not in ({}, []) else "empty"


def _rows(model: type[BaseModel], prefix: str, seen: set[type[BaseModel]]) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _models_in(field.annotation)
        description = (field.description or "").replace("|", "\\|")
        origin = typing.get_origin(field.annotation)
        is_list = origin is list
        rows.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {description} |")
        for sub in nested:
            if sub in seen:
                continue
            sub_prefix = f"{key}[]." if is_list else (f"{key}.<name>." if origin is dict else f"{key}.")
            rows.extend(_rows(sub, sub_prefix, seen | {sub}))
            if is_list:
                break
    return rows


def config_table() -> str:
    header = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    return "\n".join(header + _rows(Settings, "", {Settings}))


def metrics_table() -> str:
    """Every `switchyard_` metric the gateway process registers, its packages' included."""
    import importlib

    from prometheus_client.metrics import MetricWrapperBase

    rows = {}
    for module_name in ("gateway.metrics", "cache.metrics", "router.metrics", "batching.metrics"):
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                # prometheus_client keeps these on the wrapper only; there is no public accessor.
                kind, labels = value._type, ", ".join(value._labelnames)
                name = value._name + ("_total" if kind == "counter" else "")
                rows[name] = f"| `{name}` | {kind} | {labels} | {value._documentation} |"
    header = ["| metric | type | labels | meaning |", "| --- | --- | --- | --- |"]
    return "\n".join(header + [rows[k] for k in sorted(rows)])


def update(readme: str) -> str:
    """`readme` with its generated sections replaced by the current tables."""
    for name, table in (("config-reference", config_table()), ("metrics-reference", metrics_table())):
        start, end = f"<!-- {name}:start -->\n", f"\n<!-- {name}:end -->"
        head, _, rest = readme.partition(start)
        _, _, tail = rest.partition(end)
        readme = head + start + table + end + tail
    return readme


if __name__ == "__main__":
    import sys
    from pathlib import Path

    if sys.argv[1:2] == ["--write"]:  # python -m gateway.reference --write README.md
        path = Path(sys.argv[2])
        path.write_text(update(path.read_text()))
    else:
        print(config_table())
        print()
        print(metrics_table())
