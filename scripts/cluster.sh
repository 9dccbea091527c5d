#!/usr/bin/env bash
# A local cluster on loopback, for a demo or a benchmark, without docker: a PostgreSQL server
# (Debian's postgresql, as scripts/test.sh installs it), an S3-compatible server (moto, from
# tests/requirements.txt) and N gateways sharing them, each with its own audit log and node id,
# all archiving to the same bucket. Ctrl-C stops everything and removes the files.
#
#   scripts/cluster.sh [N]            (default 3 gateways on ports 8081, 8082, ...)
#
# Environment: BIN (default: the release binary, built or brought up to date), PG_PORT (55432),
# S3_PORT (55900), BASE_PORT (8081), WORK (a temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-3}"
PG_PORT="${PG_PORT:-55432}"
S3_PORT="${S3_PORT:-55900}"
BASE_PORT="${BASE_PORT:-8081}"
WORK="${WORK:-$(mktemp -d /tmp/datagate-cluster.XXXXXX)}"
if [ -z "${BIN:-}" ]; then
    # Always: a release binary older than the configuration would refuse its new keys.
    cargo build --release -q -p datagate
    BIN="${CARGO_TARGET_DIR:-target}/release/datagate"
fi
. scripts/lib/services.sh
PIDS=()
trap 'stop_services "$WORK"' EXIT INT TERM

start_postgres "$WORK" "$PG_PORT" 200
"$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres datagate
start_moto "$WORK" "$S3_PORT" datagate

export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1
export AWS_ENDPOINT="http://127.0.0.1:$S3_PORT" AWS_ALLOW_HTTP=true
export DATAGATE_CATALOG_URL="postgres://postgres@127.0.0.1:$PG_PORT/datagate"
export DATAGATE_STORAGE__WAREHOUSE_URL="s3://datagate/warehouse/"
export DATAGATE_AUDIT__ARCHIVE_URL="s3://datagate/audit/"
export DATAGATE_AUDIT__SEAL_EVERY_SECS=60 DATAGATE_AUDIT__ARCHIVE_EVERY_SECS=10
export DATAGATE_ADMIN_KEY="${DATAGATE_ADMIN_KEY:-dg_admin1_$(python3 -c 'import secrets; print(secrets.token_hex(32))')}"
"$BIN" migrate --data-dir "$WORK/node-1"
for i in $(seq "$N"); do
    port=$((BASE_PORT + i - 1))
    DATAGATE_LISTEN="127.0.0.1:$port" DATAGATE_DATA_DIR="$WORK/node-$i" \
        DATAGATE_AUDIT__NODE_ID="gw$i" "$BIN" serve >"$WORK/node-$i.log" 2>&1 &
    PIDS+=($!)
    # One after the other: the first registers the sample catalog, the others find it there.
    for _ in $(seq 300); do
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
        kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "gateway gw$i stopped:"; tail -5 "$WORK/node-$i.log"; exit 1; }
        sleep 0.2
    done
    echo "gateway gw$i: http://127.0.0.1:$port/"
done
echo "admin key: $DATAGATE_ADMIN_KEY"
echo "catalog: $DATAGATE_CATALOG_URL; bucket: s3://datagate/ at $AWS_ENDPOINT; logs in $WORK"
echo "verify every gateway's audit chain: AWS_ENDPOINT=$AWS_ENDPOINT AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1 $BIN audit verify --archive s3://datagate/audit/"
if [ -n "${CLUSTER_READY_FILE:-}" ]; then echo ready >"$CLUSTER_READY_FILE"; fi
wait
