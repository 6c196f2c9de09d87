# Sourced by the scripts in this folder: find Python 3.11+, create .venv if it is
# missing and install the project with the extras asked for. The install is
# skipped when pyproject.toml has not changed since the last one.

VENV="${VENV:-$PWD/.venv}"

find_python() {
    local candidate
    for candidate in ${PYTHON:-} python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "error: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11+)" >&2
    return 1
}

# ensure_venv EXTRA: a working .venv with `pip install -e ".[EXTRA]"` done.
ensure_venv() {
    local extra="$1" python stamp wanted
    if [ ! -x "$VENV/bin/python" ]; then
        python="$(find_python)"
        echo "==> creating $VENV with $("$python" --version 2>&1)"
        if ! "$python" -m venv "$VENV"; then
            echo "error: could not create a virtual environment; on Debian/Ubuntu:" \
                "apt-get install python3-venv" >&2
            return 1
        fi
    fi
    if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "error: $VENV has $("$VENV/bin/python" --version 2>&1); remove it to recreate it" >&2
        return 1
    fi
    stamp="$VENV/.installed-$extra"
    wanted="$("$VENV/bin/python" -c \
        'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())' <pyproject.toml)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
        return 0
    fi
    echo "==> installing the project with [$extra] into $VENV"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet -e ".[$extra]"
    echo "$wanted" >"$stamp"
}
