#!/usr/bin/env bash
# Set everything up and run the demo on the embedded default (a fresh SQLite
# file in ./demo-data). Arguments go to `cqrs-ddd demo`, e.g.
# `bash scripts/demo.sh --commands 500 --concurrency 4` (see `--help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
ensure_venv cli

exec "$VENV/bin/cqrs-ddd" demo "$@"
