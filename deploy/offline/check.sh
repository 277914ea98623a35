#!/usr/bin/env bash
# Build the offline images and run the container tests (tests marked `docker`: the image as a real
# container, and the compose stack with two gateway replicas). What CI runs; a developer may too.
#
#   deploy/offline/check.sh             # build (cached layers make a rebuild quick), then test
#   deploy/offline/check.sh --auto      # only when the image's inputs changed since the last pass here
#
# --auto keeps the key of the last passing run in $SWITCHYARD_CI_STATE (default
# /var/lib/switchyard-ci): a host that never passed, a fresh one included, builds and tests once;
# after that only a change to the Dockerfile, .dockerignore, deploy/, the dependencies
# (pyproject.toml), the baked-in config, the compose files or these tests runs it again.
set -euo pipefail
cd "$(dirname "$0")/../.."

state="${SWITCHYARD_CI_STATE:-/var/lib/switchyard-ci}"
# Everything the image and its tests are made of, apart from the project's own code (which the
# rest of the suite tests without a container).
inputs=(Dockerfile .dockerignore deploy pyproject.toml config/gateway.yaml config/examples/compose.yaml
        docker-compose.yml tests/deploy/test_container.py tests/deploy/test_compose_stack.py
        tests/support/containers.py)
key="$(git ls-files -s -- "${inputs[@]}" | sha256sum | cut -c1-16)"
if [ "${1:-}" = --auto ] && [ "$(cat "$state/image-tests.key" 2>/dev/null)" = "$key" ]; then
  echo "container tests: skipped, their inputs ($key) passed on this host before (deploy/offline/check.sh runs them)"
  exit 0
fi

engine_was_running=0
docker info >/dev/null 2>&1 && engine_was_running=1
stop_engine() {
  # Stop the engine only if this run started it.
  if [ "$engine_was_running" = 0 ] && [ -f /var/lib/switchyard-docker/dockerd.pid ]; then
    kill "$(cat /var/lib/switchyard-docker/dockerd.pid)" 2>/dev/null || true
  fi
}
trap stop_engine EXIT

started="$(date +%s)"
deploy/offline/build.sh --with-redis
built="$(date +%s)"
SWITCHYARD_TEST_IMAGE=switchyard:offline .venv/bin/pytest -m docker -p no:cacheprovider -rA -s \
  tests/deploy/test_container.py tests/deploy/test_compose_stack.py
echo "container tests: build $((built - started)) s, tests $(( $(date +%s) - built )) s"
mkdir -p "$state" && echo "$key" >"$state/image-tests.key"
