#!/usr/bin/env bash
# Build the documentation site into docs/_build/html, strictly: every warning
# (a broken reference, an orphan page, a public name without a docstring, an
# error without a remedy) fails the build. Needs Graphviz's `dot` for the
# diagrams (Debian: apt-get install graphviz). Extra arguments go to
# sphinx-build, e.g. `bash scripts/docs.sh -b linkcheck`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
ensure_venv dev,bench
exec "$VENV/bin/python" -m sphinx -W --keep-going -E -b html "$@" docs docs/_build/html
