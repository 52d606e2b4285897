#!/usr/bin/env bash
# The Python SDK in CI: build the wheel with maturin, install it into a venv, and run the
# pytest suite against the installed wheel (not the sources). Exits non-zero on any failure.
#
#   crates/python/ci.sh            debug build (fast; what CI runs)
#   PROFILE=release crates/python/ci.sh
#   PYTHON=python3.9 P3AK_PYVENV=/tmp/venv39 PYTEST_VERSION=8.4.2 crates/python/ci.sh
#                                  the oldest Python the abi3 wheel is for (pytest 9 needs 3.10)
set -euo pipefail

MATURIN_VERSION=1.16.0
PYTEST_VERSION="${PYTEST_VERSION:-9.2.0}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${P3AK_PYVENV:-$HOME/.cache/p3ak-pyvenv}"
profile="${PROFILE:-debug}"
python="${PYTHON:-python3}"
# The workspace's shared target directory, when the caller set one, is used as is.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/../../target}"

# A venv of our own, created once and then reused (pip does nothing when the pins hold).
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "maturin==$MATURIN_VERSION" "pytest==$PYTEST_VERSION"

# The bindings are behind the `python` feature (the workspace's clippy leaves them out).
cargo clippy --quiet --manifest-path "$here/Cargo.toml" --features python --all-targets -- -D warnings

# A fresh output directory, so that exactly one wheel is the one just built.
wheels="$(mktemp -d "${TMPDIR:-/tmp}/p3ak-wheel.XXXXXX")"
trap 'rm -rf "$wheels"' EXIT
build=(build --manifest-path "$here/Cargo.toml" --interpreter "$venv/bin/python" --out "$wheels")
if [ "$profile" = release ]; then
    build+=(--release)
fi
started=$(date +%s)
"$venv/bin/maturin" "${build[@]}"
built=$(( $(date +%s) - started ))

shopt -s nullglob
found=("$wheels"/p3ak-*.whl)
if [ "${#found[@]}" -ne 1 ]; then
    echo "ci.sh: expected one wheel in $wheels, found ${#found[@]}" >&2
    exit 1
fi
wheel="${found[0]}"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall \
    --no-deps "$wheel"

# Run from the tests' directory with the sources off the path: `import p3ak` must find the
# installed wheel. conftest.py checks that it did.
export P3AK_TEST_INSTALLED=1
(cd "$here/tests" && "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@")

size=$(stat -c %s "$wheel")
echo "wheel: $(basename "$wheel") ($size bytes, $(( size / 1024 )) KiB; $profile build in ${built}s)"
