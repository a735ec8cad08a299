#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo fuzz, libFuzzer, AddressSanitizer)
# for a while, from the seed corpus in fuzz/seeds/, and prints executions
# and findings per target. Fails if any target finds a crash; the input is
# then in fuzz/artifacts/TARGET/ (reproduce with
# `cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-…`).
#
#   scripts/fuzz.sh            # 60 s per target, exploring at random
#   scripts/fuzz.sh 600 url_normalize
#   scripts/fuzz.sh --replay   # what CI runs: deterministic, see below
#
# --replay runs every committed seed (fuzz/seeds/TARGET, regressions
# included) once, then explores a fixed number of inputs from a fixed
# random seed: the same code gives the same run, so a change that does not
# touch parsing cannot fail CI by chance. Exploration at random belongs to
# the timed mode; whatever it finds goes into fuzz/seeds/ (and a unit test)
# so every later replay checks it.
#
# Needs cargo-fuzz (cargo install cargo-fuzz). libFuzzer needs nightly
# compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them,
# so no second toolchain is needed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

replay=0
if [ "${1:-}" = "--replay" ]; then
    replay=1
    shift
fi
seconds=${1:-60}
if [ "$replay" -eq 0 ]; then
    shift || true
fi
# In --replay mode: how many generated inputs after the seeds, and from
# which random seed.
replay_runs=${FUZZ_REPLAY_RUNS:-20000}
replay_seed=${FUZZ_REPLAY_SEED:-1}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
export RUSTC_BOOTSTRAP=1

cargo fuzz build -O
failed=0
for target in "${targets[@]}"; do
    log=$(mktemp)
    status=0
    if [ "$replay" -eq 1 ]; then
        # A scratch corpus first: libFuzzer writes what it finds into the
        # first directory, and the replay must leave the tree as it was.
        scratch=$(mktemp -d)
        corpus_dir=$scratch
        cargo fuzz run -O "$target" "$scratch" "seeds/$target" -- \
            -seed="$replay_seed" -runs="$replay_runs" -print_final_stats=1 -timeout=10 \
            >"$log" 2>&1 || status=$?
        what="seeds + ${replay_runs} runs from seed ${replay_seed}"
    else
        mkdir -p "corpus/$target"
        corpus_dir=corpus/$target
        what="${seconds}s"
        # corpus/TARGET grows (and is kept between runs, git-ignored); the
        # seeds are only read.
        cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
            -max_total_time="$seconds" -print_final_stats=1 -timeout=10 \
            >"$log" 2>&1 || status=$?
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    peak=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
    corpus=$(find "$corpus_dir" "seeds/$target" -type f | wc -l)
    if [ "$status" -eq 0 ]; then
        echo "fuzz $target: $what, $execs executions, coverage $cov edges, corpus $corpus inputs, peak RSS ${peak} MB, no crash"
    else
        failed=1
        echo "fuzz $target: FAILED after $execs executions (exit $status); input in fuzz/artifacts/$target/" >&2
        grep -B2 -A30 -m1 -E "panicked|ERROR: (libFuzzer|AddressSanitizer)" "$log" >&2 || tail -40 "$log" >&2
    fi
    rm -f "$log"
    if [ "$replay" -eq 1 ]; then
        rm -rf "$scratch"
    fi
done
exit "$failed"
