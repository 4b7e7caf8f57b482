#!/usr/bin/env bash
# Create .venv and install luigi-ha into it (editable). "test" also installs the test and
# benchmark extras.
#
# The interpreter: $PYTHON if set. Otherwise the distribution's /usr/bin/python3 when it is 3.11
# or newer and can make a venv, else the python3 on PATH. Debian builds its CPython with
# profile-guided and link-time optimisation; pyenv's default build has neither. A scheduler
# node spends most of its CPU in the interpreter: on the 2-CPU VM it needed 0.63 ms of CPU per
# drained task on Debian's build against 0.75 ms on pyenv's, medians of ten drains each
# (bench/README.md, "Where the node's CPU goes, and the interpreter").
# The Ansible roles deploy on the same /usr/bin/python3.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  if /usr/bin/python3 -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PYTHON=/usr/bin/python3
  fi
fi

if [ -x .venv/bin/python ]; then
  made_with=$(sed -n 's/^executable = //p' .venv/pyvenv.cfg)
  wanted=$("$PYTHON" -c 'import sys; print(sys.executable)')
  if [ -n "$made_with" ] && [ "$(realpath "$made_with")" != "$(realpath "$wanted")" ]; then
    echo "note: .venv runs on $made_with, not $wanted; remove .venv to rebuild it on $wanted" >&2
  fi
else
  "$PYTHON" -m venv .venv
fi
extras=""
[ "${1:-}" = "test" ] && extras="[test,bench]"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e ".${extras}"
