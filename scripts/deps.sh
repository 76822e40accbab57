#!/usr/bin/env bash
# Installs what the tests need (Debian packages, with apt-get) and then checks every external
# program the tests run by what it must do, failing at once with a clear message.
#
#   scripts/deps.sh            install what is missing or mismatched, then check
#   scripts/deps.sh --check    check only (exit 1 naming the first tool that does not work)
#
# What it installs: libiscsi-bin (iscsi-test-cu, iscsi-inq, iscsi-ls, iscsi-readcapacity16),
# qemu-utils + qemu-block-extra + qemu-system-x86 at one version (qemu-img with its iscsi://
# driver, and the QEMU that boots the guest running the kernel's initiators), kmod, cpio, binutils,
# xz-utils, zstd (the backports guest kernel is zstd-compressed), chromium (the headless browser the dashboard test loads the admin page in),
# dpkg-dev (dpkg-shlibdeps, which `cargo deb` runs for the package test), systemd when
# systemd-analyze is missing (it checks the unit file) and git when missing (the build stamps the
# commit), etcd-server (the failover tests run etcd), protobuf-compiler and libprotobuf-dev (protoc
# and protobuf's well-known .proto files, which the gateway's `etcd` feature needs to build). About 450 MB of packages (chromium is 300 of them); a few minutes on a fresh machine.
#
# Why the QEMU packages are installed together at one version: qemu-img loads its iscsi:// driver
# from qemu-block-extra, and QEMU loads only modules built for its own version. A machine can start
# with a qemu-utils the registry does not offer (a fresh image has 10.0 from backports, whose
# "Breaks: qemu-system-common (<< 8.0)" makes apt remove it when Debian's qemu-system-x86 7.2 is
# installed, leaving no qemu-img at all). So unless qemu-utils and qemu-block-extra are already a
# matching pair, all three are installed at the version the registry offers for qemu-block-extra,
# downgrading qemu-utils if need be.
set -euo pipefail

APT_OPTS=(-o DPkg::Lock::Timeout=600)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
updated=0

apt_update_once() {
    if [ "$updated" -eq 0 ]; then
        $SUDO apt-get "${APT_OPTS[@]}" update -qq
        updated=1
    fi
}

installed_version() {
    { dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null || true; } |
        awk '$3 == "installed" { print $4 }'
}

apt_get_install() {
    echo "deps.sh: installing $*"
    local log
    log=$(mktemp)
    if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${APT_OPTS[@]}" install -y -qq \
        --no-install-recommends --allow-downgrades "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "deps.sh: apt-get install $* failed" >&2
        exit 1
    fi
    rm -f "$log"
}

# Plain packages: installed when absent.
install_missing() {
    local missing=()
    for pkg in "$@"; do
        [ -n "$(installed_version "$pkg")" ] || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt_update_once
        apt_get_install "${missing[@]}"
    fi
}

# qemu-utils, qemu-block-extra and qemu-system-x86 as one set at one version (see the top).
install_qemu_set() {
    local utils extra system
    utils=$(installed_version qemu-utils)
    extra=$(installed_version qemu-block-extra)
    system=$(installed_version qemu-system-x86)
    if [ -n "$utils" ] && [ "$utils" = "$extra" ] && [ -n "$system" ]; then
        return 0
    fi
    apt_update_once
    local want
    want=$(apt-cache policy qemu-block-extra | awk '/Candidate:/ { print $2 }')
    if [ -z "$want" ] || [ "$want" = "(none)" ]; then
        echo "deps.sh: the package registry offers no qemu-block-extra (qemu-img's iscsi driver)" >&2
        exit 1
    fi
    if [ -n "$utils" ] && [ "$utils" != "$want" ]; then
        echo "deps.sh: qemu-utils $utils has no matching qemu-block-extra here; installing the set at $want"
    fi
    apt_get_install "qemu-utils=$want" "qemu-block-extra=$want" "qemu-system-x86=$want"
}

fail() {
    echo "deps.sh: $1" >&2
    echo "deps.sh: the tests cannot run without it; run scripts/deps.sh (as root) to install" >&2
    exit 1
}

# Runs a probe command; fails with `what` and the probe's output when it does not succeed.
probe() {
    local what=$1
    shift
    local out
    if ! out=$("$@" 2>&1); then
        fail "$what (\`$*\` failed: $(echo "$out" | head -3))"
    fi
}

# Every external program the tests run, each checked by what the tests need of it. The list is
# kept complete by interop-tests' `every_program_the_tests_run_is_checked_by_deps_sh`.
check_tools() {
    # libiscsi's conformance suite and tools.
    probe "iscsi-test-cu must list libiscsi's SCSI tests" \
        bash -c 'iscsi-test-cu --list | grep -q "^SCSI.Read10"'
    for tool in iscsi-inq iscsi-ls iscsi-readcapacity16; do
        command -v "$tool" >/dev/null || fail "$tool (libiscsi-bin) is not on PATH"
    done
    # qemu-img, with the iscsi:// block driver loaded: asked to open a portal where nothing
    # listens, the driver itself must answer ("iSCSI: Failed to connect ..."); without it qemu-img
    # says "Unable to load module iscsi" or "Unknown protocol".
    command -v qemu-img >/dev/null || fail "qemu-img (qemu-utils) is not on PATH"
    local out
    out=$(qemu-img info 'iscsi://127.0.0.1:1/iqn.2000-01.invalid:deps-probe/0' 2>&1 || true)
    case "$out" in
    *"iSCSI: "*) ;;
    *) fail "qemu-img $(qemu-img --version | head -1 | awk '{print $3}') cannot load its iscsi driver (qemu-block-extra at its version): $out" ;;
    esac
    # The QEMU that boots the guest, with user-mode networking for the guest's host link.
    probe "qemu-system-x86_64 must offer user-mode networking" \
        bash -c 'qemu-system-x86_64 -netdev help | grep -qw user'
    # Building the guest image: kernel modules, initramfs, packages.
    probe "depmod (kmod) must run" depmod --version
    probe "modprobe (kmod) must run" modprobe --version
    probe "readelf (binutils) must run" readelf --version
    probe "xz (xz-utils) must decompress" bash -c 'echo ok | xz | xz -d | grep -q ok'
    probe "zstd must decompress" bash -c 'echo ok | zstd -q | zstd -dq | grep -q ok'
    probe "cpio must write an archive" bash -c 'echo /dev/null | cpio -o -H newc >/dev/null 2>&1'
    probe "dpkg-deb must run" dpkg-deb --version
    probe "apt-get must run" apt-get --version
    probe "apt-cache must run" apt-cache --version
    probe "kill must run" bash -c 'command -v kill'
    # The partition tests put a standby in a network namespace of their own (veth pair).
    probe "ip (iproute2) must list network namespaces" ip netns list
    probe "perl must open a socket (a stand-in server in the harness' own tests)" \
        perl -MIO::Socket::INET -e 1
    # Debian's headless Chromium, as the dashboard test runs it (as root: no sandbox): it must
    # load a page, run its script and print the resulting DOM.
    probe "chromium must run a page's script headless and dump the DOM" \
        bash -c 'd=$(mktemp -d); trap "rm -rf $d" EXIT
            chromium --headless --no-sandbox --disable-gpu --no-first-run \
                --user-data-dir="$d" --virtual-time-budget=1000 --dump-dom \
                "data:text/html,<body><script>document.body.id=\"ran\"</script></body>" \
                2>/dev/null | grep -q "id=\"ran\""'
    # The package test: `dpkg -x` unpacks the built package; cargo-deb runs dpkg-shlibdeps.
    probe "dpkg must run" dpkg --version
    probe "dpkg-shlibdeps (dpkg-dev) must run" dpkg-shlibdeps --version
    # The systemd unit's check (gateway/tests/systemd.rs) runs it offline, no systemd running.
    probe "systemd-analyze (systemd) must verify a unit file" systemd-analyze --version
    # gateway/build.rs stamps the binary with the commit it is built from (tandem_build_info).
    probe "git must report the checkout's commit" git --version
    # The gateway's `etcd` feature (which scripts/test.sh builds): etcd-client compiles etcd's
    # protobuf files at build time with protoc, importing protobuf's well-known types
    # (google/protobuf/descriptor.proto, from libprotobuf-dev); proto3 `optional` fields need
    # protoc >= 3.15.
    probe "protoc (protobuf-compiler) must compile a proto3 file importing descriptor.proto (libprotobuf-dev)" \
        bash -c 'd=$(mktemp -d); trap "rm -rf $d" EXIT
            printf "syntax = \"proto3\";\nimport \"google/protobuf/descriptor.proto\";\nmessage P { optional uint64 a = 1; google.protobuf.FieldOptions o = 2; }\n" >"$d/p.proto"
            protoc --proto_path="$d" --descriptor_set_out="$d/p.pb" "$d/p.proto" && test -s "$d/p.pb"'
    # The failover tests (gateway/tests/etcd_failover.rs) run Debian's etcd as a plain process:
    # it must start, elect itself and answer its health endpoint.
    probe "etcd (etcd-server) must start a single-member cluster and report healthy" \
        bash -c 'd=$(mktemp -d); p=$((20000 + RANDOM % 20000)); q=$((p + 1))
            etcd --data-dir "$d/data" --listen-client-urls "http://127.0.0.1:$p" \
                --advertise-client-urls "http://127.0.0.1:$p" \
                --listen-peer-urls "http://127.0.0.1:$q" \
                --initial-advertise-peer-urls "http://127.0.0.1:$q" \
                --initial-cluster "default=http://127.0.0.1:$q" >"$d/log" 2>&1 &
            pid=$!; trap "kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf $d" EXIT
            for _ in $(seq 100); do
                perl -MIO::Socket::INET -e "
                    my \$s = IO::Socket::INET->new(\"127.0.0.1:$p\") or exit 1;
                    print \$s \"GET /health HTTP/1.0\r\n\r\n\"; local \$/; my \$r = <\$s>;
                    exit(\$r =~ /\"health\":\"true\"/ ? 0 : 1)" && exit 0
                sleep 0.1
            done
            cat "$d/log" | tail -3; exit 1'
}

if [ "${1:-}" != "--check" ]; then
    install_missing libiscsi-bin kmod cpio binutils xz-utils zstd chromium dpkg-dev iproute2 \
        etcd-server protobuf-compiler libprotobuf-dev
    command -v systemd-analyze >/dev/null || install_missing systemd
    command -v git >/dev/null || install_missing git
    install_qemu_set
fi
check_tools
echo "deps.sh: every tool the tests run is present and works"
