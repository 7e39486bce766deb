#!/usr/bin/env bash
# Make sure a Docker engine answers. Installs Debian's docker.io when the engine is missing and
# starts dockerd in the background when nothing supervises it (the build machines have no systemd).
# Exits non-zero with a single-line explanation when that is impossible.
set -euo pipefail

log=${DOCKERD_LOG:-/var/log/agenda-dockerd.log}
wait_seconds=${DOCKERD_WAIT:-60}

say() { printf 'ensure-docker: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

docker info >/dev/null 2>&1 && exit 0

if ! command -v dockerd >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || die "no Docker engine and not root: install docker.io (apt-get install docker.io) or run as root"
  command -v apt-get >/dev/null 2>&1 || die "no Docker engine and no apt-get to install one: install Docker, then run again"
  say "installing Debian's docker.io"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null 2>&1; } \
    || die "apt-get could not install docker.io; install a Docker engine, then run again"
fi

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl start docker >/dev/null 2>&1 || true
else
  [ "$(id -u)" -eq 0 ] || die "dockerd is installed but not running, and starting it needs root"
  say "starting dockerd in the background (log: $log)"
  setsid nohup dockerd >"$log" 2>&1 < /dev/null &
fi

for _ in $(seq 1 "$wait_seconds"); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
die "dockerd did not answer within ${wait_seconds}s; see $log"
