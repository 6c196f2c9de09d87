#!/usr/bin/env bash
# Set everything up and run the demo on the embedded default. Arguments go to
# the demo, e.g. `bash scripts/demo.sh --orders 10`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
ensure_venv cli

# The `cqrs-ddd` command is used once its module exists; until then, the quick
# start example. A CLI module that exists but fails to import fails the demo.
set +e
"$VENV/bin/python" - <<'PY'
import importlib.util
import sys

try:
    found = importlib.util.find_spec("cqrs_ddd_advanced_core.cli.main") is not None
except ModuleNotFoundError:
    found = False
sys.exit(0 if found else 3)
PY
status=$?
set -e
case "$status" in
    0) exec "$VENV/bin/cqrs-ddd" demo "$@" ;;
    3) exec "$VENV/bin/python" examples/quickstart.py "$@" ;;
    *) exit "$status" ;;
esac
