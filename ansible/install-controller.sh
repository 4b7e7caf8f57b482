#!/usr/bin/env bash
# Install the Ansible controller tools (ansible-core + ansible-lint) into their own virtualenv.
#
#   ansible/install-controller.sh                 # venv at /var/cache/luigi-ha/ansible-venv
#   LUIGI_HA_ANSIBLE_VENV=~/.venvs/ansible ansible/install-controller.sh
#
# Prints the venv's bin directory on its last line. Safe to run again (only installs what is
# missing). Only ansible.builtin modules are used by the playbooks, so no Galaxy collection is
# needed (Galaxy may be unreachable from the controller).
set -euo pipefail
venv=${LUIGI_HA_ANSIBLE_VENV:-/var/cache/luigi-ha/ansible-venv}
# ansible-core 2.19 is the line the playbooks are tested with; ansible-lint 25.x/26.x support it.
core_spec=${ANSIBLE_CORE_SPEC:-ansible-core>=2.19,<2.20}
lint_spec=${ANSIBLE_LINT_SPEC:-ansible-lint>=25.6}
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/ansible-playbook" ] || [ ! -x "$venv/bin/ansible-lint" ]; then
  mkdir -p "$(dirname "$venv")"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q "$core_spec" "$lint_spec" >&2
fi
echo "$venv/bin"
