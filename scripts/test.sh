#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need when it is missing, so it works
# on a fresh machine (Debian packages with apt-get, run as root or with sudo: scripts/deps.sh).
# About 15 minutes on 2 cores, most of it in the QEMU guest tests and libiscsi's suites.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs what is missing (libiscsi-bin, qemu-utils + qemu-block-extra + qemu-system-x86 at one
# version, kmod, cpio, binutils, xz-utils) and checks every program the tests run by what it must
# do; stops here with a clear message when one does not work.
./scripts/deps.sh

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# The gateway's `etcd` feature (automatic failover, default off so that a plain `cargo run`
# needs no protoc) is built and tested here: its tests start etcd themselves.
FEATURES=(--features gateway/etcd)
cargo build --workspace --bins "${FEATURES[@]}"
export TANDEM_BIN="${TANDEM_BIN:-$PWD/target/debug/tandem}"
set +e
cargo test --workspace "${FEATURES[@]}" --no-fail-fast -- --nocapture 2>&1 | tee target/test-output.log
status=${PIPESTATUS[0]}
set -e
# Totals over every test binary, from cargo's own "test result:" lines only.
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' target/test-output.log | awk '{p+=$4; f+=$6} END {print p+0}')
failed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' target/test-output.log | awk '{p+=$4; f+=$6} END {print f+0}')
echo "${passed} passed, ${failed} failed"
exit "$status"
