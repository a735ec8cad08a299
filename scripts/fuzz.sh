#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo fuzz, libFuzzer, AddressSanitizer)
# for a while, from the seed corpus in fuzz/seeds/, and prints executions
# and findings per target. Fails if any target finds a crash; the input is
# then in fuzz/artifacts/TARGET/ (reproduce with
# `cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-…`).
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 10         # the short run CI does
#   scripts/fuzz.sh 600 url_normalize
#
# Needs cargo-fuzz (cargo install cargo-fuzz). libFuzzer needs nightly
# compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them,
# so no second toolchain is needed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
export RUSTC_BOOTSTRAP=1

cargo fuzz build -O
failed=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log=$(mktemp)
    status=0
    # corpus/TARGET grows (and is kept between runs, git-ignored); the
    # seeds are only read.
    cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 \
        >"$log" 2>&1 || status=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    peak=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
    corpus=$(find "corpus/$target" -type f | wc -l)
    if [ "$status" -eq 0 ]; then
        echo "fuzz $target: ${seconds}s, $execs executions, coverage $cov edges, corpus $corpus inputs, peak RSS ${peak} MB, no crash"
    else
        failed=1
        echo "fuzz $target: FAILED after $execs executions (exit $status); input in fuzz/artifacts/$target/" >&2
        grep -B2 -A30 -m1 -E "panicked|ERROR: (libFuzzer|AddressSanitizer)" "$log" >&2 || tail -40 "$log" >&2
    fi
    rm -f "$log"
done
exit "$failed"
