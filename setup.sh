#!/usr/bin/env bash
# Creates .venv and installs freelabel into it (editable, with test extras) under the pinned torch/torchvision.
# Safe to run again: it reinstalls only when pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.freelabel-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
    touch "$stamp"
fi
