#!/usr/bin/env bash
# CSV for spreadsheets: the cost of `bom=true` and `charset=gb18030` on a whole export, beside
# the same export in plain UTF-8 in the same run (market_entities, ROWS rows, about half its
# text Chinese). Each round asks for the three in turn; the figure is each one's median time
# over ROUNDS rounds, the ratio against plain UTF-8's. No compression (`Accept-Encoding`
# absent), so the time is the gateway's scan and encoding, not zstd's.
#   benches/csv_encodings.sh [ROWS]   (default 2,000,000; ROUNDS=5)
# Targets: the mark costs nothing (<= 1.05x); GB18030 <= 1.25x.
set -euo pipefail
cd "$(dirname "$0")/.." && . benches/lib.sh
ROWS="${1:-2000000}"
ROUNDS="${ROUNDS:-5}"
bench_build
bench_work
PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
"$BIN" gen market_entities --rows "$ROWS" --out "$WORK/entities.csv" 2>/dev/null
start_server "$PORT" DATAGATE_LIMITS__QUERY_TIMEOUT_MS=600000 DATAGATE_TIERS__ANONYMOUS__DAILY_BYTES=0
register_entities "$BASE" entities
upload_entities "$BASE" entities "$WORK/entities.csv"
rm -f "$WORK/entities.csv"
export_once() { # query → "seconds bytes"
  curl -sf -o /dev/null -w '%{time_total} %{size_download}\n' \
    "$BASE/api/v1/datasets/market/entities/export?format=csv$1"
}
export_once "" >/dev/null # the version's files read once, into the page cache
: >"$WORK/times.txt"
for _ in $(seq "$ROUNDS"); do
  for e in utf8 bom gb18030; do
    case $e in utf8) q="" ;; bom) q="&bom=true" ;; gb18030) q="&charset=gb18030" ;; esac
    echo "$e $(export_once "$q")" >>"$WORK/times.txt"
  done
done
python3 - "$WORK/times.txt" "$ROWS" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    e, s, b = line.split()
    runs.setdefault(e, []).append((float(s), int(b)))
rows = int(sys.argv[2])
base = statistics.median(s for s, _ in runs["utf8"])
print(f"CSV export of {rows:,} market_entities rows, median of {len(runs['utf8'])} rounds (alternated)")
print("| encoding | seconds | MiB | rows/s | against UTF-8 | target | met |")
print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
for e, target in (("utf8", None), ("bom", 1.05), ("gb18030", 1.25)):
    s = statistics.median(x for x, _ in runs[e])
    mib = runs[e][0][1] / 2**20
    ratio = s / base
    met = "-" if target is None else ("yes" if ratio <= target else "NO")
    print(f"| {e} | {s:.2f} | {mib:.0f} | {rows / s:,.0f} | {ratio:.2f}x | {'-' if target is None else f'<= {target}x'} | {met} |")
PY
