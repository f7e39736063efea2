#!/usr/bin/env bash
# Times both README commands on a fresh clone of this checkout (a new .venv included); prints one summary line.
# The clone goes beside this checkout so that ../shared is found as in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
clone=$(mktemp -d "$(dirname "$PWD")/fresh-clone.XXXX")
trap 'rm -rf "$clone"' EXIT
git clone -q . "$clone"
cd "$clone"
main_cmd=$(grep -A1 '^```bash' README.md | sed -n 2p)
test_cmd=$(grep -A1 '^```bash' README.md | sed -n 5p)
start=$(date +%s)
bash -c "$main_cmd" > main.log 2>&1
mid=$(date +%s)
CI=true bash -c "$test_cmd" > test.log 2>&1
end=$(date +%s)
echo "fresh_clone: main_command=$(( (mid - start) / 60 ))m$(( (mid - start) % 60 ))s (install included)" \
     "test_command=$(( (end - mid) / 60 ))m$(( (end - mid) % 60 ))s ($(tail -1 test.log | tr -d '=' | xargs))"
