#!/usr/bin/env bash
# Set everything up and run the benchmark suite (docs/benchmarks.md). Arguments go
# to the suite, e.g. `bash scripts/bench.sh --quick` or `--only dispatch --only sqlite`.
# The tables go to stdout; its last line is the JSON summary (also written to
# bench-results.json unless --json-out is given).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
ensure_venv bench

# The PostgreSQL workload reuses the tests' throwaway cluster helper
# (tests/support/postgres.py), which imports pytest.
if ! "$VENV/bin/python" -c 'import pytest' 2>/dev/null; then
    echo "==> installing pytest (for tests/support/postgres.py)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet pytest
fi

# PostgreSQL: a server given by URL, or initdb/pg_ctl for a throwaway cluster.
if [ -z "${CQRS_BENCH_POSTGRES_URL:-}" ] &&
    ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing the PostgreSQL server binaries (apt-get install postgresql)"
        policy=/usr/sbin/policy-rc.d # do not start the system service
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod +x "$policy"
            trap 'rm -f "$policy"' EXIT
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
    else
        echo "warning: no PostgreSQL (initdb) and CQRS_BENCH_POSTGRES_URL is unset:" \
            "the postgres workload will report an error" >&2
    fi
fi

args=("$@")
if [[ " ${args[*]-} " != *" --json-out "* ]]; then
    args+=(--json-out bench-results.json)
fi
echo "==> $("$VENV/bin/python" --version) on $(nproc) CPUs: python -m benchmarks ${args[*]}"
exec "$VENV/bin/python" -m benchmarks "${args[@]}"
