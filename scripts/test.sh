#!/usr/bin/env bash
# Set everything up and run the whole check: ruff, mypy (strict), the import
# contracts, then the test suite. Extra arguments go to pytest, e.g.
#   bash scripts/test.sh -k pipeline -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
ensure_venv dev,bench

echo "==> $("$VENV/bin/python" --version), ruff $("$VENV/bin/ruff" --version | cut -d' ' -f2)," \
    "$("$VENV/bin/mypy" --version | cut -d' ' -f1-2)," \
    "pytest $("$VENV/bin/python" -c 'import pytest; print(pytest.__version__)')," \
    "import-linter $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("import-linter"))')"

failed=()
step() {
    local name="$1"
    shift
    echo "==> $name"
    if ! "$@"; then
        failed+=("$name")
    fi
}

step "ruff check" "$VENV/bin/ruff" check .
# The cache belongs to the environment it was computed in (installed stubs, versions).
step "mypy --strict" "$VENV/bin/mypy" --cache-dir "$VENV/.mypy_cache"
step "lint-imports" "$VENV/bin/lint-imports" --no-logo

echo "==> pytest $*"
set +e
"$VENV/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests; that is a failure, not a pass" >&2
fi
if [ "$status" -ne 0 ]; then
    failed+=("pytest (exit $status)")
fi

if [ "${#failed[@]}" -ne 0 ]; then
    printf 'FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "==> all checks passed"
