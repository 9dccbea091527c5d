# Shared by scripts/cluster.sh and benches/cluster.sh (sourced, not run): a throwaway PostgreSQL
# server (Debian's postgresql, as scripts/test.sh installs it) and an S3-compatible server (moto,
# from tests/requirements.txt) on loopback, their files under a work directory.
#
#   start_postgres WORK PORT MAX_CONNECTIONS     data in WORK/pg, socket there too
#   stop_postgres WORK
#   start_moto WORK PORT BUCKET                  appends moto's pid to PIDS; creates BUCKET
#   stop_services WORK                           kills PIDS, stops PostgreSQL, removes WORK

PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
AS_PG=()
if [ "$(id -u)" = 0 ]; then AS_PG=(runuser -u postgres --); fi

start_postgres() {
    local work=$1 port=$2 max=$3
    [ -n "$PG_BIN" ] || { echo "PostgreSQL is missing: scripts/test.sh installs it" >&2; return 1; }
    mkdir -p "$work/pg"
    chmod 755 "$work"
    if [ "$(id -u)" = 0 ]; then chown postgres "$work/pg"; fi
    "${AS_PG[@]}" "$PG_BIN/initdb" -D "$work/pg" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" start -D "$work/pg" -l "$work/pg/server.log" -w \
        -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1 -c max_connections=$max" >/dev/null
}

stop_postgres() {
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" stop -D "$1/pg" -m fast >/dev/null 2>&1 || true
}

start_moto() {
    local work=$1 port=$2 bucket=$3
    python3 -m moto.server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
    curl -sf -X PUT "http://127.0.0.1:$port/$bucket" >/dev/null
}

stop_services() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    stop_postgres "$1"
    rm -rf "$1"
}
