#!/usr/bin/env bash
# The README's test command: installs everything the tests need (system
# packages included) and runs the whole suite. .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== system packages (Dovecot, Chromium)"
bash scripts/install-test-deps.sh

echo "== python packages"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".[test]"

echo "== lint"
python3 -m ruff check .

echo "== layering (import-linter contracts in pyproject.toml)"
# The console script next to this Python, not whatever a PATH shim finds first.
"$(python3 -c 'import os, sys; print(os.path.dirname(sys.executable))')/lint-imports"

echo "== types"
python3 -m mypy

echo "== tests"
set +e
python3 -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure, not a pass" >&2
    exit 1
fi
exit "$rc"
