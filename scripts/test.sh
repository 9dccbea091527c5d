#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what the tests drive besides the
# Rust toolchain, then runs every test. No test skips a missing part; this script provides it.
#   - the Python ADBC Flight SQL driver and pyarrow, pinned in tests/requirements.txt
#     (tests/flight/adbc_client.py, run by tests/it/flight.rs);
#   - openssl, which makes the TLS tests' certificates; curl, the client of the disk-full test;
#   - schemathesis and openapi-spec-validator (tests/requirements.txt) for the OpenAPI tests.
# The disk-full tests mount small tmpfs file systems, so the suite runs as root (as CI does).
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test it flight`).
set -euo pipefail
cd "$(dirname "$0")/.."

PIP_ARGS=(--quiet --disable-pip-version-check --root-user-action=ignore)
# Not root and not in a virtualenv: install for this user instead of the system.
if [ "$(id -u)" != 0 ] && [ -z "${VIRTUAL_ENV:-}" ]; then PIP_ARGS+=(--user); fi
python3 -m pip install "${PIP_ARGS[@]}" -r tests/requirements.txt
python3 -c "import adbc_driver_flightsql, pyarrow" # fail here, loudly, if the install did not take

if ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq openssl curl
fi

exec cargo test --workspace "$@"
