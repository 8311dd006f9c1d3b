#!/usr/bin/env bash
# Creates .venv and installs dataworth with the exact versions measured on these machines.
# Safe to re-run: it reinstalls only when pyproject.toml or the constraints changed.
# DATAWORTH_VENV=/path/to/venv uses that environment as it is and installs nothing (CI's fresh
# clone reuses the checkout's environment this way; the scripts put the clone's code first).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${DATAWORTH_VENV:-}" ]; then
  if [ ! -x "$DATAWORTH_VENV/bin/dataworth" ]; then
    echo "[setup] DATAWORTH_VENV=$DATAWORTH_VENV holds no dataworth installation" >&2
    exit 1
  fi
  exit 0
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($python --version)"
  "$python" -m venv .venv
fi

stamp=.venv/.dataworth-installed
want=$(cat pyproject.toml infra/constraints.txt infra/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing dataworth and its pinned dependencies (first run takes a few minutes)"
  # This machine's pip config names local wheel folders that may be absent: drop that noise only.
  quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
  quiet .venv/bin/python -m pip install -q --upgrade pip
  # constraints.txt pins torch==2.13.0 (the local CPU wheel); pyproject keeps ranges for users.
  quiet .venv/bin/python -m pip install -q -c infra/constraints.txt -e '.[dev,eval]'
  # kronfluence (the eval extra's EK-FAC peer) declares torchvision, but PyPI's torchvision does
  # not load beside this machine's CPU torch wheel ("operator torchvision::nms does not exist"),
  # and transformers then cannot import a single model class. kronfluence never imports it.
  quiet .venv/bin/python -m pip uninstall -q -y torchvision
  echo "$want" > "$stamp"
fi
