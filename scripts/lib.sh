# Shared by the scripts: where things are, and which compose to call.
# shellcheck shell=bash
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-halab}"
TARGET=x86_64-unknown-linux-gnu
DAEMONS=(dispatcher worker leader-election primary-standby monitor)
# Built the same way and staged beside them, but no image of their own: scripts/chaos runs
# them in a lab image's container.
TOOLS=(halab)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Installs the Debian packages whose commands are missing: ensure_packages COMMAND:PACKAGE...
ensure_packages() {
  local wanted=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || wanted+=("${pair#*:}")
  done
  [ "${#wanted[@]}" -eq 0 ] && return 0
  log "installing ${wanted[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${wanted[@]}" >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${wanted[@]}" >/dev/null; }
}

# docker compose v2 when present, else Debian's docker-compose v1: the file works with both.
compose() {
  if docker compose version >/dev/null 2>&1; then
    docker compose -f "$ROOT/docker-compose.yml" "$@"
  else
    docker-compose -f "$ROOT/docker-compose.yml" "$@"
  fi
}

# Container ids of a compose service in this project (names differ between v1 and v2).
service_containers() {
  docker ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
    --filter "label=com.docker.compose.service=$1"
}
