#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what the tests drive besides the
# Rust toolchain, then runs every test. No test skips a missing part; this script provides it.
#   - the Python ADBC Flight SQL driver and pyarrow, and moto (an S3-compatible server for the
#     cluster tests), pinned in tests/requirements.txt
#     (tests/flight/adbc_client.py, run by tests/it/flight.rs);
#   - openssl, which makes the TLS tests' certificates; curl, the client of the disk-full test;
#   - schemathesis and openapi-spec-validator (tests/requirements.txt) for the OpenAPI tests;
#   - Debian's chromium and chromium-driver (pinned below), a CJK font for the screenshots, and
#     selenium (tests/requirements.txt) for the portal's browser journeys (tests/browser/);
#   - Debian's PostgreSQL server (pinned below) for the shared catalog's tests, which start their
#     own server on a free port (tests/support/postgres.rs); the package's own cluster is unused.
# The disk-full tests mount small tmpfs file systems, so the suite runs as root (as CI does).
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test it flight`).
set -euo pipefail
cd "$(dirname "$0")/.."

PIP_ARGS=(--quiet --disable-pip-version-check --root-user-action=ignore)
# Not root and not in a virtualenv: install for this user instead of the system.
if [ "$(id -u)" != 0 ] && [ -z "${VIRTUAL_ENV:-}" ]; then PIP_ARGS+=(--user); fi
python3 -m pip install "${PIP_ARGS[@]}" -r tests/requirements.txt
python3 -c "import adbc_driver_flightsql, pyarrow, selenium, moto.server" # fail here, loudly, if the install did not take

if ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq openssl curl
fi

# The browser: Debian bookworm's chromium (security updates replace old builds in the archive,
# so when the pinned build is gone the current one is installed, with a warning).
CHROMIUM_VERSION="${CHROMIUM_VERSION:-156.0.8078.108-1~deb12u1}"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null \
    || ! fc-list 2>/dev/null | grep -qi "WenQuanYi Zen Hei"; then
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        "chromium=$CHROMIUM_VERSION" "chromium-driver=$CHROMIUM_VERSION" fonts-wqy-zenhei=0.9.45-8; then
        echo "warning: chromium $CHROMIUM_VERSION is no longer in the archive; installing the current build" >&2
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver fonts-wqy-zenhei
    fi
fi
chromium --version && chromedriver --version

POSTGRESQL_VERSION="${POSTGRESQL_VERSION:-15.18-0+deb12u1}"
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        "postgresql-15=$POSTGRESQL_VERSION" "postgresql-client-15=$POSTGRESQL_VERSION"; then
        echo "warning: postgresql-15 $POSTGRESQL_VERSION is no longer in the archive; installing the current build" >&2
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql-15 postgresql-client-15
    fi
fi
ls /usr/lib/postgresql/*/bin/postgres

exec cargo test --workspace "$@"
