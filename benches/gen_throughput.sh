#!/usr/bin/env bash
# Throughput of `datagate gen` (target: >= 1M rows/s) for every dataset shape, beside the
# machine's plain sequential-write speed measured in the same run (dd of the same number of
# bytes), so the figure can be read as a share of what the disk allows.
#
#   benches/gen_throughput.sh [ROWS]        (default 10,000,000 rows of each shape)
set -euo pipefail
cd "$(dirname "$0")/.." && . benches/lib.sh
ROWS="${1:-10000000}"
bench_build
bench_work
OUT="$WORK"

now() { date +%s.%N; }
printf '%-22s %-8s %12s %10s %12s %10s %14s\n' kind format rows seconds rows/s MiB/s "vs dd write"
for kind in market_entities air_quality bus_stops bus_lines legal_aid_cases mediation_cases \
            enforcement_decisions licence_types public_facilities; do
  for format in csv parquet; do
    f="$OUT/$kind.$format"
    t0=$(now); "$BIN" gen "$kind" --rows "$ROWS" --format "$format" --out "$f" 2>/dev/null; t1=$(now)
    bytes=$(stat -c %s "$f")
    # Baseline: write the same number of bytes with dd (fsync'd like neither; page cache only).
    b0=$(now); dd if=/dev/zero of="$OUT/dd" bs=1M count=$(( (bytes + 1048575) / 1048576 )) status=none; b1=$(now)
    rm -f "$OUT/dd"
    python3 - "$kind" "$format" "$ROWS" "$t0" "$t1" "$bytes" "$b0" "$b1" <<'PY'
import sys
kind, fmt, rows, t0, t1, size, b0, b1 = sys.argv[1:]
rows = int(rows); secs = float(t1) - float(t0); size = int(size); dd = float(b1) - float(b0)
print(f"{kind:<22} {fmt:<8} {rows:>12,} {secs:>10.2f} {rows/secs:>12,.0f} {size/secs/2**20:>10.1f} {dd/secs:>13.2f}x")
PY
    rm -f "$f"
  done
done
echo "rows/s >= 1,000,000 is the target; 'vs dd write' is the time dd needs for the same bytes divided by gen's time (1.00x = as fast as writing zeros)."
