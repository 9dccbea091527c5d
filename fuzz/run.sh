#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) with libFuzzer (cargo-fuzz), starting from the
# committed seed corpus in fuzz/corpus/<target>/seed-*; inputs it finds that reach new code are
# added there too (ignored by git: commit one with `git add -f` when it is worth keeping).
# A crash stops the run and leaves its input in fuzz/artifacts/<target>/ — fix it and turn the
# input into a regression test beside the code. On demand, not in .ci/run:
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (installed here if missing, pinned). Runs on the stable toolchain without a
# sanitizer (`-s none`; coverage instrumentation only): panics, aborts, stack overflows,
# timeouts and out-of-memory are what it catches.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${1:-60}"
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.1 --locked
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || mapfile -t TARGETS < <(cargo fuzz list)
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/datagate-fuzz-target}"
cargo fuzz build -s none --release
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t"
    echo "== $t: ${SECONDS_PER_TARGET}s"
    cargo fuzz run -s none --release "$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 2>&1 | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|==|.*(panicked|ERROR|SUMMARY|crash-|timeout-|oom-))" || true
    if compgen -G "artifacts/$t/crash-*" >/dev/null || compgen -G "artifacts/$t/timeout-*" >/dev/null \
        || compgen -G "artifacts/$t/oom-*" >/dev/null; then
        echo "$t: failing inputs in fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
echo "all targets ran ${SECONDS_PER_TARGET}s without a crash"
