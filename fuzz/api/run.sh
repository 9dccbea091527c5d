#!/usr/bin/env bash
# Black-box fuzzing of the running gateway through its public doors (HTTP API and Flight SQL),
# beside the libFuzzer targets of fuzz/ (which fuzz parsers in-process). Starts a gateway on
# the sample catalog with a fresh data directory, runs each script of fuzz/api/ for COUNT
# random requests from SEED, and fails if any script reports a finding or the gateway logged a
# panic or an internal error. On demand, not in .ci/run:
#
#   fuzz/api/run.sh [COUNT] [SEED] [SCRIPT...]      (default 300 1, every script)
#
# The gateway is target/debug/datagate unless DATAGATE_BIN says otherwise; the scripts need
# Python 3 with pyarrow (installed by scripts/test.sh for the Flight SQL tests).
set -euo pipefail
cd "$(dirname "$0")"
COUNT="${1:-300}"; SEED="${2:-1}"; shift 2 || shift $# || true
SCRIPTS=("$@")
[ ${#SCRIPTS[@]} -gt 0 ] || SCRIPTS=(requests uploads registrations filters params sql applications flight)
BIN="${DATAGATE_BIN:-${CARGO_TARGET_DIR:-../../target}/debug/datagate}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export FUZZ_PORT FUZZ_FLIGHT_PORT FUZZ_ADMIN_KEY
FUZZ_PORT=$(free_port); FUZZ_FLIGHT_PORT=$(free_port)
FUZZ_ADMIN_KEY="dg_fuzz_$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
WORK=$(mktemp -d /tmp/datagate-apifuzz.XXXX)
# From the repository root, so the sample catalog loads; limits opened for one fast client.
(cd ../.. && DATAGATE_LISTEN="127.0.0.1:$FUZZ_PORT" DATAGATE_FLIGHT_LISTEN="127.0.0.1:$FUZZ_FLIGHT_PORT" \
    DATAGATE_DATA_DIR="$WORK/data" DATAGATE_ADMIN_KEY="$FUZZ_ADMIN_KEY" DATAGATE_LOG__LEVEL=warn \
    DATAGATE_TIERS__ANONYMOUS__REQUESTS=100000000 DATAGATE_TIERS__ANONYMOUS__BURST=100000000 \
    DATAGATE_TIERS__ANONYMOUS__DAILY_BYTES=0 exec "$BIN" serve) >"$WORK/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 300); do curl -sf "127.0.0.1:$FUZZ_PORT/healthz" >/dev/null && break; sleep 0.1; done
failed=()
for s in "${SCRIPTS[@]}"; do
    echo "== $s ($COUNT from seed $SEED)"
    python3 "$s.py" "$SEED" "$COUNT" || failed+=("$s")
done
if grep -E "panicked|ERROR" "$WORK/server.log" | head -20; then
    failed+=("the gateway's log")
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "findings in: ${failed[*]}" >&2
    exit 1
fi
echo "no finding"
