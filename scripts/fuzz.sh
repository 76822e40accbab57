#!/usr/bin/env bash
# Runs every cargo-fuzz target of the workspace for a bounded time, starting from its committed
# seed corpus.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     default 60; .ci/run uses a few seconds each
#
# Targets: blockstore/fuzz (repl_frame), proto-iscsi/fuzz (pdu_decode, login_negotiate,
# scsi_command, session: a logged-in session driven with R2T, Data-Out, task management, NOP,
# Text, logout and timers), proto-nvmeof/fuzz (pdu_decode, connection: admin and I/O queues,
# R2T/H2CData; auth_messages: DH-HMAC-CHAP). Seeds are in <crate>/fuzz/seeds/<target> (small, committed); what the fuzzer
# finds beyond them goes to target/fuzz-corpus (not committed).
#
# Needs a nightly toolchain (`cargo +nightly`); installs cargo-fuzz with cargo when missing.
# A crash stops the script with the input in <crate>/fuzz/artifacts/<target>/: reproduce it
# with `cd <crate> && cargo +nightly fuzz run <target> <file>`, add it as a unit test with that
# input (a regression test), and fix it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${1:-60}
case "$secs" in
    '' | *[!0-9]*) echo "fuzz.sh: SECONDS_PER_TARGET must be a whole number, got $secs" >&2; exit 2 ;;
esac

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

for crate in blockstore proto-iscsi proto-nvmeof; do
    for target in $(cd "$crate" && cargo +nightly fuzz list); do
        corpus="$root/target/fuzz-corpus/$crate/$target"
        seeds="$root/$crate/fuzz/seeds/$target"
        mkdir -p "$corpus"
        dirs=("$corpus")
        [ -d "$seeds" ] && dirs+=("$seeds")
        echo "fuzz.sh: $crate $target for ${secs}s"
        log="$root/target/fuzz-corpus/$crate/$target.log"
        if ! (cd "$crate" && cargo +nightly fuzz run "$target" "${dirs[@]}" -- \
            -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1) \
            >"$log" 2>&1; then
            tail -n 60 "$log" >&2
            echo "fuzz.sh: $crate $target failed (a crash leaves its input in $crate/fuzz/artifacts/$target/; full log $log)" >&2
            exit 1
        fi
        grep -E '^stat::number_of_executed_units|^INFO: seed corpus' "$log" | sed 's/^/  /' || true
    done
done
echo "fuzz.sh: every target ran ${secs}s without a crash"
