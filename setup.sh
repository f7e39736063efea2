#!/usr/bin/env bash
# Creates .venv and installs freelabel into it (editable, with test extras) under the pinned torch/torchvision.
# Safe to run again: it reinstalls only when pyproject.toml or constraints.txt changed.
# The review page's browser test needs Debian's chromium and chromium-driver: installed here when missing and run
# as root on a machine with apt-get (else it says how; the test then skips, or fails under CI=true).
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.freelabel-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
    touch "$stamp"
fi
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "setup.sh: for the browser test, install chromium and chromium-driver (as root: apt-get install chromium chromium-driver)" >&2
    fi
fi
