#!/usr/bin/env bash
# Run every cargo-fuzz target for a while and report what happened.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]        (default 60)
#
# Environment:
#   FUZZ_TARGETS="engine virtio_queue"   run only these targets (default: all)
#   FUZZ_TIME_<target>=N                 seconds for one target (e.g. FUZZ_TIME_engine=600)
#   FUZZ_SANITIZER=none|address          libFuzzer build sanitizer (default: address)
#   FUZZ_TOOLCHAIN=nightly               rustup toolchain for cargo-fuzz (needs -Z flags)
#
# One fuzzing process at a time (no -jobs/-workers). Corpora grow under fuzz/corpus/<target>
# (not tracked). A crash, hang (-timeout) or OOM stops that target; its input is copied to
# fuzz/regressions/<target>/ (tracked), where `cargo test --test fuzz_regressions` of dvext
# and duvisor replays it. Reproduce one with
#   cargo +nightly fuzz run <target> fuzz/regressions/<target>/<file>
# Exit status: 0 if no target found anything, 1 otherwise.

set -euo pipefail

cd "$(dirname "$0")/.."
SECS=${1:-60}
TOOLCHAIN=${FUZZ_TOOLCHAIN:-nightly}
SANITIZER=${FUZZ_SANITIZER:-address}
ALL_TARGETS="decode engine mmio_decode sbi virtio_queue loader cli qcow2"
TARGETS=${FUZZ_TARGETS:-$ALL_TARGETS}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi

echo "== building fuzz targets (toolchain $TOOLCHAIN, sanitizer $SANITIZER)"
(cd fuzz && cargo "+$TOOLCHAIN" fuzz build --sanitizer "$SANITIZER")

LOGDIR=fuzz/target/logs
mkdir -p "$LOGDIR"
summary=()
found=0
for t in $TARGETS; do
    var="FUZZ_TIME_$t"
    secs=${!var:-$SECS}
    corpus=fuzz/corpus/$t
    artifacts=fuzz/artifacts/$t
    regress=fuzz/regressions/$t
    mkdir -p "$corpus" "$artifacts" "$regress"
    # Saved regressions seed the corpus: the fuzzer starts from known-interesting inputs.
    before=$(ls "$artifacts" | sort)
    log=$LOGDIR/$t.log
    echo "== $t: ${secs}s (log $log)"
    set +e
    (cd fuzz && cargo "+$TOOLCHAIN" fuzz run --sanitizer "$SANITIZER" "$t" \
        "corpus/$t" "regressions/$t" -- \
        -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1) >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    [ -n "$execs" ] || execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
    [ -n "$execs" ] || execs="?"
    new=$(comm -13 <(echo "$before") <(ls "$artifacts" | sort) | grep -E '^(crash|timeout|oom|leak|slow-unit)-' || true)
    crashes=0
    for f in $new; do
        case $f in slow-unit-*) continue ;; esac
        cp "$artifacts/$f" "$regress/$f"
        crashes=$((crashes + 1))
        echo "   new $f -> $regress/$f"
    done
    if [ "$crashes" -eq 0 ] && [ "$rc" -ne 0 ]; then
        echo "   libFuzzer exited with $rc and no artifact: see $log" >&2
        crashes="?"
    fi
    [ "$crashes" = 0 ] || found=1
    corp=$(ls "$corpus" | wc -l)
    summary+=("$(printf '%-14s %6ss %12s execs %8s crashes %7s corpus' "$t" "$secs" "$execs" "$crashes" "$corp")")
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $found
