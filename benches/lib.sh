# shellcheck shell=bash
# The preamble the benchmark scripts share. Each sources it from the repository root:
#   cd "$(dirname "$0")/.." && . benches/lib.sh
#
#   bench_build          builds the server (release) and sets BIN. DATAGATE_BIN=path measures
#                        another build instead (nothing is built); BENCH_PROFILE=debug builds
#                        and runs the debug binary, to try a script quickly (its figures then
#                        mean nothing).
#   bench_work [PARENT]  WORK: a new directory (under PARENT, default $TMPDIR or /tmp), removed
#                        at exit with the server and every process in PIDS (a function named
#                        in BENCH_ON_EXIT runs first); KEY: a new admin key for the server.
#   free_port            a free TCP port on 127.0.0.1.
#   new_key [PREFIX]     a random key of the gateway's form (PREFIX, default dg_bench_, + 64 hex).
#   start_server PORT [NAME=VALUE...]
#                        "$BIN serve" on 127.0.0.1:PORT, its data under $WORK/data, KEY as its
#                        admin key, warnings logged to $WORK/server.log, then the settings given
#                        (a later one wins); SERVER_WRAP may name a command to run it under.
#                        Waits for /healthz (SERVER_START_SECS, default 30) and sets
#                        SERVER_PID; if it does not come up, prints its log and exits.
#   stop_server          stops it and waits for it.
#   http_load URL CLIENTS SECS STATUS [KEY]
#                        benches/http_load.rs against URL with CLIENTS connections for SECS
#                        seconds, as KEY if given: "req/s p50_ms p99_ms errors" (an answer other
#                        than STATUS is an error). Build it first: http_load_build. It runs in
#                        the test profile (dependencies optimised): the release profile would
#                        build the test package's dependencies, DataFusion among them, once more.
#   market_columns       the columns of catalog/market/market_entities.toml as JSON (name, type).
#   register_entities BASE NAME
#                        registers the open dataset market/NAME with those columns (key `uscc`)
#                        on the gateway at BASE, as KEY.
#   upload_entities BASE NAME FILE
#                        publishes FILE (CSV, `datagate gen market_entities`) as its new version.
#   UNLIMITED_ANONYMOUS  settings (an array) giving anonymous callers a tier that never refuses,
#                        so a figure is the gateway's and not a limit's.

BIN=""
WORK=""
KEY=""
SERVER_PID=""
PIDS=()
BENCH_ON_EXIT=""
UNLIMITED_ANONYMOUS=(
  DATAGATE_TIERS__ANONYMOUS__REQUESTS=100000000 DATAGATE_TIERS__ANONYMOUS__BURST=100000000
  DATAGATE_TIERS__ANONYMOUS__MAX_CONCURRENT_QUERIES=0 DATAGATE_TIERS__ANONYMOUS__DAILY_BYTES=0
  DATAGATE_ADMISSION__MAX_IN_FLIGHT_QUERIES=1000
)

bench_build() {
  if [ -n "${DATAGATE_BIN:-}" ]; then
    BIN="$DATAGATE_BIN"
  elif [ "${BENCH_PROFILE:-release}" = debug ]; then
    cargo build -q -p datagate
    BIN="${CARGO_TARGET_DIR:-target}/debug/datagate"
  else
    cargo build --release -q -p datagate
    BIN="${CARGO_TARGET_DIR:-target}/release/datagate"
  fi
}

bench_cleanup() {
  if [ -n "$BENCH_ON_EXIT" ]; then "$BENCH_ON_EXIT" || true; fi
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
}

bench_work() {
  WORK="$(mktemp -d "${1:-${TMPDIR:-/tmp}}/datagate-bench.XXXXXX")"
  trap bench_cleanup EXIT
  KEY=$(new_key)
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

new_key() {
  echo "${1:-dg_bench_}$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
}

start_server() {
  local port=$1
  shift
  # shellcheck disable=SC2086 # SERVER_WRAP is a command and its arguments
  env DATAGATE_LISTEN="127.0.0.1:$port" DATAGATE_DATA_DIR="$WORK/data" \
    DATAGATE_ADMIN_KEY="$KEY" DATAGATE_LOG__LEVEL=warn "$@" \
    ${SERVER_WRAP:-} "$BIN" serve >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq $((${SERVER_START_SECS:-30} * 10))); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "the server did not start:" >&2
  cat "$WORK/server.log" >&2
  exit 1
}

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}

http_load_build() {
  cargo test -q -p datagate-tests --bench http_load --no-run 2>/dev/null
}

http_load() {
  AUTH_KEY="${5:-}" cargo test -q -p datagate-tests --bench http_load -- "$1" "$2" "$3" "$4" 2>/dev/null |
    sed -n 's/.*requests=\([0-9]*\) errors=\([0-9]*\) rps=\([0-9.]*\) p50_ms=\([0-9.]*\) p99_ms=\([0-9.]*\).*/\3 \4 \5 \2/p'
}

market_columns() {
  python3 - <<'PY'
import json, tomllib
m = tomllib.load(open("catalog/market/market_entities.toml", "rb"))
print(json.dumps([{"name": c["name"], "type": c["type"]} for c in m["columns"]]))
PY
}

register_entities() {
  curl -sf -H "Authorization: Bearer $KEY" -H 'content-type: application/json' "$1/api/v1/datasets" \
    -d "{\"department\":\"market\",\"name\":\"$2\",\"title\":\"bench\",\"access_level\":\"open\",\"primary_key\":[\"uscc\"],\"columns\":$(market_columns)}" >/dev/null
}

upload_entities() {
  curl -sf -X POST -H "Authorization: Bearer $KEY" -H 'content-type: text/csv' -T "$3" \
    "$1/api/v1/datasets/market/$2/versions?mode=replace" >/dev/null
}
