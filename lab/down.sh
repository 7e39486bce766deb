#!/usr/bin/env bash
# `make lab-down`: remove the lab's machines, its network and anything a failed run left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
subnet=${LAB_SUBNET:-192.168.56.0/24}

if ! docker info >/dev/null 2>&1; then
  echo "lab-down: no Docker engine answers: nothing of the container lab can be running"
  exit 0
fi
if command -v vagrant >/dev/null 2>&1 && [ -d .vagrant ]; then
  vagrant destroy -f || true
fi
# Leftovers of an interrupted run: containers created for the lab, and Vagrant's network.
leftover=$(docker ps -aq --filter label=agenda-lab=1)
[ -z "$leftover" ] || docker rm -f $leftover >/dev/null
docker network rm "vagrant_network_${subnet}" >/dev/null 2>&1 || true
rm -rf .vagrant/machines

containers=$(docker ps -aq --filter label=agenda-lab=1 | wc -l)
networks=$(docker network ls -q --filter "name=vagrant_network_${subnet}" | wc -l)
routes=$(ip -4 route show to match "${subnet%/*}" | grep -vc '^default' || true)
echo "lab-down: containers=${containers} networks=${networks} routes=${routes}"
[ "$containers" -eq 0 ] && [ "$networks" -eq 0 ] && [ "$routes" -eq 0 ]
