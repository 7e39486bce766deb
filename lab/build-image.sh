#!/usr/bin/env bash
# Build the base image every lab host and Molecule platform runs: Debian 12 with systemd as PID 1,
# Python for Ansible, sshd and a `vagrant` user for Vagrant's docker provider. No registry is
# reachable from the build machines, so the root filesystem comes from debootstrap and enters
# Docker through `docker import`. The image is tagged with a hash of this recipe, so it is rebuilt
# only when the recipe changes; `agenda-base:latest` always names the newest build.
set -euo pipefail

image_repo=${AGENDA_IMAGE_REPO:-agenda-base}
suite=bookworm
packages=(
  systemd systemd-sysv dbus libpam-systemd
  python3 python3-venv python3-apt
  openssh-server sudo iproute2 ca-certificates curl procps
)
# Installed with apt after debootstrap: debootstrap's own configure stage fails on them. They are
# what the roles need on every host, so a converge finds them already there.
extra_packages=(python3-cryptography python3-packaging)

say() { printf 'build-image: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

vagrant_public_key() {
  # The insecure public key that Vagrant ships: Vagrant logs in with it the first time and then
  # replaces it with a key generated for each machine.
  local key
  key=$(dpkg -L vagrant 2>/dev/null | grep -E '/keys/vagrant\.pub$' | head -n1 || true)
  [ -n "$key" ] || key=$(find / -xdev -path '*vagrant*/keys/vagrant.pub' -print -quit 2>/dev/null || true)
  [ -n "$key" ] || die "Vagrant's keys/vagrant.pub was not found: install vagrant first (make tools)"
  printf '%s\n' "$key"
}

# The mirror comes from this machine's own apt sources (never a hard-coded host), so the image is
# built from wherever this machine is allowed to fetch Debian packages.
apt_uri_for() {  # $1: regex the suite must match; prints the first matching URI
  local want=$1
  {
    cat /etc/apt/sources.list 2>/dev/null | awk -v w="$want" '$1=="deb" && $3 ~ w {print $2; exit}'
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -e "$f" ] || continue
      awk -v w="$want" 'BEGIN{RS=""; FS="\n"}
        { uri=""; suites=""; deb=0
          for (i=1;i<=NF;i++) {
            if ($i ~ /^Types:.*(^|[ \t])deb([ \t]|$)/) deb=1
            if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri=a[2] }
            if ($i ~ /^Suites:/) suites=$i }
          if (deb && uri != "" && suites ~ w) print uri }' "$f"
    done
  } | head -n1
}

mirror=${LAB_DEBIAN_MIRROR:-$(apt_uri_for "(^|[ :])${suite}([ ]|$)")}
security_mirror=${LAB_DEBIAN_SECURITY_MIRROR:-$(apt_uri_for "${suite}-security")}
[ -n "$mirror" ] || die "no Debian ${suite} mirror in /etc/apt/sources.list*; set LAB_DEBIAN_MIRROR"

pubkey_file=$(vagrant_public_key)
recipe_hash=$( { cat "$0"; cat "$pubkey_file"; } | sha256sum | cut -c1-12)
tag="${image_repo}:${recipe_hash}"

if docker image inspect "$tag" >/dev/null 2>&1; then
  docker tag "$tag" "${image_repo}:latest"
  say "up to date: $tag"
  echo "$tag"
  exit 0
fi

command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing: apt-get install debootstrap (make tools)"
[ "$(id -u)" -eq 0 ] || die "debootstrap needs root"

root=$(mktemp -d /var/tmp/agenda-rootfs.XXXXXX)
trap 'rm -rf --one-file-system "$root"' EXIT
say "debootstrap ${suite} from ${mirror} into ${root}"
include=$(IFS=,; echo "${packages[*]}")
debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -n 20 "$root.log" >&2; die "debootstrap failed (full log: $root.log)"; }
rm -f "$root.log"

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

{
  echo "deb ${mirror} ${suite} main"
  echo "deb ${mirror} ${suite}-updates main"
  [ -z "$security_mirror" ] || echo "deb ${security_mirror} ${suite}-security main"
} >"$root/etc/apt/sources.list"

# Package lists are kept (fresh at build time): Ansible's apt module judges the cache by their age,
# and an image without lists would look fresh while knowing no package.
in_root apt-get update -qq
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "${extra_packages[@]}" >/dev/null

# Vagrant's docker provider logs in over SSH as `vagrant` with passwordless sudo.
in_root useradd --create-home --shell /bin/bash vagrant
install -d -m 0700 -o "$(in_root id -u vagrant)" -g "$(in_root id -g vagrant)" "$root/home/vagrant/.ssh"
install -m 0600 -o "$(in_root id -u vagrant)" -g "$(in_root id -g vagrant)" "$pubkey_file" \
  "$root/home/vagrant/.ssh/authorized_keys"
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' >"$root/etc/sudoers.d/vagrant"
chmod 0440 "$root/etc/sudoers.d/vagrant"

# Every container must get its own SSH host keys, generated at its first boot.
rm -f "$root"/etc/ssh/ssh_host_*
cat >"$root/etc/systemd/system/ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Generate this machine's SSH host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
UNIT
in_root systemctl enable ssh-hostkeys.service ssh.service >/dev/null 2>&1

# Units that make no sense in a container, or that would take the apt lock in the middle of a
# converge, are masked.
in_root systemctl mask getty@tty1.service console-getty.service systemd-udevd.service \
  apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service >/dev/null 2>&1 || true

: >"$root/etc/machine-id"
in_root apt-get clean
rm -rf "$root"/var/cache/apt/*.bin "$root"/tmp/* "$root"/var/tmp/*

say "importing as $tag"
tar --numeric-owner -C "$root" -c . | docker import \
  -c 'CMD ["/sbin/init"]' -c 'ENV container=docker' - "$tag" >/dev/null
docker tag "$tag" "${image_repo}:latest"
say "built $tag"
echo "$tag"
