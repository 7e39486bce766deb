#!/usr/bin/env bash
# Install what the container lab needs and a fresh Debian 12 machine lacks: a running Docker
# engine, Vagrant (its docker provider is built in) and debootstrap. One line of explanation and
# a non-zero exit when that is impossible.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

missing=()
command -v vagrant >/dev/null 2>&1 || missing+=(vagrant)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-tools: missing ${missing[*]}: install them (Debian: apt-get install ${missing[*]}), then run again" >&2
    exit 1
  fi
  echo "ensure-tools: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; } \
    || { echo "ensure-tools: apt-get could not install ${missing[*]}" >&2; exit 1; }
fi
"$here/ensure-docker.sh"
