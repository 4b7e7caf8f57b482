#!/usr/bin/env bash
# Install what luigi-ha's tests need on a fresh Debian 12 machine (run as root), then the Python
# environment in .venv. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# haproxy/keepalived: the HA front; postgresql/mariadb-server: real databases for the tests;
# systemd-container/debootstrap/openssh-client: the nspawn "VMs" Ansible deploys to;
# prometheus: promtool checks the alert rules; etcd-server: the store of the Patroni cluster the
# database-failover tests run on (tests/support/patroni.py); python3-venv: .venv on Debian's optimised CPython
# (scripts/setup-venv.sh says why).
for pkg in haproxy keepalived postgresql mariadb-server systemd iproute2 openssl curl \
           systemd-container debootstrap openssh-client prometheus python3-venv etcd-server; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages (${need[*]}); run this as root or install them" >&2
    exit 1
  fi
  echo "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
exec "$(dirname "$0")/setup-venv.sh" test
