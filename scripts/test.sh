#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what the tests drive besides the
# Rust toolchain, then runs every test. No test skips a missing part; this script provides it.
#   - the Python ADBC Flight SQL driver and pyarrow, pinned in tests/requirements.txt
#     (tests/flight/adbc_client.py, run by tests/it/flight.rs);
#   - openssl, which makes the TLS test's certificates.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test it flight`).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    -r tests/requirements.txt
python3 -c "import adbc_driver_flightsql, pyarrow" # fail here, loudly, if the install did not take

if ! command -v openssl >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq openssl
fi

exec cargo test --workspace "$@"
