#!/usr/bin/env bash
# Build (once) the Debian 12 root file system the VM-like tests boot with systemd-nspawn.
#
#   scripts/build-test-rootfs.sh            # prints the rootfs path on its last line
#   LUIGI_HA_ROOTFS_CACHE=/somewhere scripts/build-test-rootfs.sh
#
# The result is cached under $LUIGI_HA_ROOTFS_CACHE (default /var/cache/luigi-ha/rootfs), in a
# directory named after the SHA-256 of THIS script: editing the package list (or anything else
# here) builds a new rootfs, and an unchanged script reuses the cached one in milliseconds.
# Older builds are left alone; remove them with `rm -rf` when the cache grows.
#
# The tests boot it read-only with `systemd-nspawn --volatile=overlay` (every boot is a fresh
# "VM"), so nothing in here may be specific to one test run: no SSH client keys (the test
# bind-mounts its own authorized_keys), no addresses, no luigi-ha code (Ansible installs that).
#
# Needs root, debootstrap and systemd-container (apt-get install -y debootstrap systemd-container)
# and the Debian mirror; about 1-2 minutes and ~500 MB the first time.
set -euo pipefail

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# What a luigi-ha VM has before Ansible runs: systemd as PID 1, sshd to be reached, python3 for
# Ansible and the virtualenv, python3-apt for ansible.builtin.apt, haproxy and keepalived for the
# balancer role (the role "installs" them: already present, so no network is needed in tests).
PACKAGES=(
  systemd systemd-sysv dbus
  openssh-server
  python3 python3-venv python3-apt
  haproxy keepalived
  curl iproute2 procps ca-certificates
)

script_hash=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
cache=${LUIGI_HA_ROOTFS_CACHE:-/var/cache/luigi-ha/rootfs}
dest="$cache/$script_hash"
rootfs="$dest/rootfs"

if [ -f "$dest/.complete" ]; then
  echo "$rootfs"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "build-test-rootfs: must run as root (debootstrap)" >&2
  exit 1
fi
for tool in debootstrap systemd-nspawn; do
  command -v "$tool" >/dev/null || {
    echo "build-test-rootfs: $tool missing: apt-get install -y debootstrap systemd-container" >&2
    exit 1
  }
done

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9  # one builder at a time; a second caller waits and then finds the finished build
if [ -f "$dest/.complete" ]; then
  echo "$rootfs"
  exit 0
fi

started=$(date +%s)
work="$cache/.build-$script_hash-$$"
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

include=$(IFS=,; echo "${PACKAGES[*]}")
echo "build-test-rootfs: debootstrap $SUITE ($include) into $work/rootfs" >&2
debootstrap --variant=minbase --include="$include" "$SUITE" "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  exit 1
}

r="$work/rootfs"
# Boot-time configuration. Everything below is static and the same for every node.
# - sshd: root logs in with a key only (the test bind-mounts /root/.ssh/authorized_keys).
mkdir -p "$r/root/.ssh"
chmod 0700 "$r/root/.ssh"
cat >"$r/etc/ssh/sshd_config.d/luigi-ha-test.conf" <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
EOF
# - the services the roles manage must not start by themselves at boot before Ansible configured
#   them (Debian enables haproxy and keepalived on install); Ansible enables what it deploys.
chroot "$r" systemctl disable haproxy.service keepalived.service >/dev/null 2>&1 || true
# - nothing waits for a network manager that is not there; no getty on the nspawn console.
chroot "$r" systemctl mask systemd-networkd-wait-online.service console-getty.service \
  systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
  fstrim.timer >/dev/null 2>&1 || true
chroot "$r" systemctl enable ssh.service >/dev/null
# - UTC, so "02:00" in the timer and in `list-timers` read the same.
ln -sf /usr/share/zoneinfo/Etc/UTC "$r/etc/localtime"
echo "Etc/UTC" >"$r/etc/timezone"
# - no /etc/hostname (debootstrap copies the build host's): the node takes nspawn's machine name.
rm -f "$r/etc/hostname"
# - an empty machine-id: systemd makes a fresh one per boot (two nodes must not share one).
: >"$r/etc/machine-id"
rm -f "$r/var/lib/dbus/machine-id"
# - apt caches are useless in an image that is never updated in place.
rm -rf "$r/var/cache/apt/archives/"*.deb "$r/var/lib/apt/lists/"*

{
  echo "built_at=$(date -u +%FT%TZ)"
  echo "seconds=$(( $(date +%s) - started ))"
  echo "suite=$SUITE"
  echo "packages=$include"
} >"$work/build-info"

rm -rf "$dest"
mkdir -p "$dest"
mv "$work/rootfs" "$rootfs"
mv "$work/build-info" "$work/debootstrap.log" "$dest/"
touch "$dest/.complete"
echo "build-test-rootfs: done in $(( $(date +%s) - started ))s" >&2
echo "$rootfs"
