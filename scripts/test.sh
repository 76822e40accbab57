#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need when it is missing, so it works
# on a fresh machine (Debian packages with apt-get, run as root or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "test.sh: installing ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

# libiscsi's conformance suite and tools, qemu-img's iscsi:// driver, and the QEMU guest that
# runs the Linux kernel's own initiators.
apt_install libiscsi-bin qemu-block-extra qemu-utils qemu-system-x86 kmod cpio binutils

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo build --workspace --bins
export TANDEM_BIN="${TANDEM_BIN:-$PWD/target/debug/tandem}"
set +e
cargo test --workspace --no-fail-fast -- --nocapture 2>&1 | tee target/test-output.log
status=${PIPESTATUS[0]}
set -e
# Totals over every test binary, from cargo's own "test result:" lines only.
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' target/test-output.log | awk '{p+=$4; f+=$6} END {print p+0}')
failed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' target/test-output.log | awk '{p+=$4; f+=$6} END {print f+0}')
echo "${passed} passed, ${failed} failed"
exit "$status"
