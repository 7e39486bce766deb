#!/usr/bin/env bash
# `make lab`: bring the whole lab up with Vagrant's docker provider and provision it with
# site.yml; run again, it re-provisions (and should report changed=0). Ends with what a user
# needs to reach the system.
set -euo pipefail
trap 'echo "lab: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

lab/ensure-tools.sh
python3 lab/check_subnet.py

# Lab containers this checkout's Vagrant does not know (another checkout's lab, or an interrupted
# run) hold the machines' names and addresses: say so instead of failing inside Vagrant.
known=$(for f in .vagrant/machines/*/docker/id; do if [ -e "$f" ]; then cat "$f"; echo; fi; done)
orphans=()
for id in $(docker ps -aq --no-trunc --filter label=agenda-lab=1); do
  grep -qx "$id" <<<"$known" || orphans+=("$(docker inspect --format '{{.Name}}' "$id" | tr -d /)")
done
if [ ${#orphans[@]} -gt 0 ]; then
  echo "lab: containers of another lab exist (${orphans[*]}); run 'make lab-down' (it removes them) and try again" >&2
  exit 1
fi
LAB_IMAGE=$(lab/build-image.sh)
export LAB_IMAGE

mkdir -p .cache
log=.cache/lab-up.log
start=$(date +%s)
set +e
vagrant up --provider=docker --no-parallel --provision 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
elapsed=$(( $(date +%s) - start ))

# The play recap, summed over hosts (Vagrant colours Ansible's output; strip that first).
read -r changed failed unreachable < <(sed 's/\x1b\[[0-9;]*m//g' "$log" | awk '
  /PLAY RECAP/ {c=0; f=0; u=0; seen=1; next}
  seen && / : ok=/ { for (i=1;i<=NF;i++) { split($i,kv,"="); if (kv[1]=="changed") c+=kv[2];
                       if (kv[1]=="failed") f+=kv[2]; if (kv[1]=="unreachable") u+=kv[2] } }
  END { print c+0, f+0, u+0 }')
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$unreachable" -ne 0 ]; then
  echo "lab: vagrant up failed (exit $status, failed=$failed, unreachable=$unreachable); log: $log" >&2
  exit 1
fi

inventory=$(python3 inventories/lab/hosts.py --list)
vip=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["all"]["vars"]["agenda_vip"])' <<<"$inventory")
hosts=$(python3 -c 'import json,sys; h=json.load(sys.stdin)["_meta"]["hostvars"]; print("  ".join(n + " " + v["agenda_host_ip"] for n, v in sorted(h.items())))' <<<"$inventory")
ca=inventories/lab/.pki/ca.crt
# The VIP is what users are given: make lab is done when it answers there (the master's
# agenda-vrrpd holds it; the others are ready to take it over).
vip_ok=0
for _ in $(seq 1 30); do
  if python3 -c 'import ssl, sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=3,
      context=ssl.create_default_context(cafile=sys.argv[2]))' "https://${vip}/v1/health" "$ca" 2>/dev/null; then
    vip_ok=1; break
  fi
  sleep 1
done
if [ "$vip_ok" -ne 1 ]; then
  echo "lab: provisioning passed but nothing answers at https://${vip}/v1/health (check: vagrant ssh agenda1 -c 'sudo /opt/agenda/venv/bin/agenda-vrrpd status')" >&2
  exit 1
fi
cat <<MSG

Agenda Distribuida lab is up (${elapsed}s; provisioning changed=${changed} failed=0 unreachable=0).
  machines:  ${hosts}
  gateway:   https://${vip}/  (the VIP; agenda-vrrpd moves it to another machine when its holder fails)
  CA:        $PWD/${ca}
Try (the README's quickstart goes on from here):
  curl --cacert ${ca} https://${vip}/v1/health
  vagrant ssh agenda1 -c 'sudo /opt/agenda/venv/bin/agenda-vrrpd status'
  ansible agenda -m ansible.builtin.ping
  ansible-playbook site.yml            # re-provision (or: make lab)
Deployed: the PKI, the DB Service (5 Raft members), the User and Group Services, a gateway per
machine and the VIP (agenda-vrrpd). Still to come in their own issues: Redis and gossip discovery.
MAKE_LAB_CHANGED=${changed}
MSG
