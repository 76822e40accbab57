//! Helpers for tests of Tandem's iSCSI front end with the Linux kernel's initiator (open-iscsi and
//! `iscsi_tcp` in a QEMU guest): a shell library for the guest scripts, the guest builder with the
//! target's coordinates, and host-side views of the volume's files.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{HarnessError, Result};
use crate::iscsi::{IscsiTarget, TEST_IQN};
use crate::qemu::{Guest, GuestBuilder};
use crate::rendezvous::GUEST_FUNCTIONS;

/// Shell functions for the guest scripts, installed as `/tandem/iscsi.sh` by [`iscsi_guest`].
///
/// Needs `PORT` (the portal's port) and `IQN` in the environment. `discover` checks that
/// SendTargets sends the guest to an address it can reach; `login` waits for the SCSI disk and
/// sets `DEV` (`/dev/sdX`) and `SD` (`sdX`); `logout` waits until the disk is gone; `check WHAT
/// COMMAND...` fails the script with WHAT unless COMMAND succeeds; `has` and `disk_is` are
/// predicates for it.
pub const GUEST_LIBRARY: &str = r#"
PORTAL="$TANDEM_HOST:$PORT"
fail() { echo "FAIL: $*"; exit 1; }
check() { _d=$1; shift; if "$@"; then echo "ok: $_d"; else fail "$_d"; fi; }
# has TEXT PATTERN: TEXT contains a line matching the basic regular expression PATTERN.
has() { printf '%s\n' "$1" | grep -q -- "$2"; }
# disk_is OFFSET LENGTH FILE: LENGTH bytes of the disk at byte OFFSET, read with direct I/O, equal
# the first LENGTH bytes of FILE (OFFSET and LENGTH multiples of 4 KiB).
disk_is() {
    _bs=4096
    [ $(( $1 % 1048576 )) -eq 0 ] && [ $(( $2 % 1048576 )) -eq 0 ] && _bs=1048576
    head -c "$2" "$3" > /tmp/expect
    dd if="$DEV" bs=$_bs skip=$(( $1 / _bs )) count=$(( $2 / _bs )) iflag=direct 2>/dev/null \
        | cmp -s - /tmp/expect
}
discover() {
    _out=$(iscsiadm -m discovery -t sendtargets -p "$PORTAL") || fail "SendTargets discovery"
    echo "$_out"
    echo "$_out" | grep -qx "$PORTAL,1 $IQN" || fail "SendTargets did not list $PORTAL,1 $IQN"
}
# The SCSI disk of the (single) iSCSI session, as sdX, or nothing.
session_disk() {
    for _b in /sys/class/iscsi_session/session*/device/target*/*:*:*:0/block/*; do
        [ -e "$_b" ] && basename "$_b" && return 0
    done
    return 0
}
wait_disk() {
    _i=0
    while [ $_i -lt 200 ]; do
        SD=$(session_disk)
        if [ -n "$SD" ] && [ -b "/dev/$SD" ] && [ "$(cat /sys/block/$SD/size)" -gt 0 ]; then
            DEV=/dev/$SD
            echo "disk: $DEV ($(cat /sys/block/$SD/size) sectors)"
            return 0
        fi
        sleep 0.1
        _i=$((_i + 1))
    done
    iscsiadm -m session -P3
    fail "no SCSI disk appeared for the session"
}
login() {
    iscsiadm -m node -T "$IQN" -p "$PORTAL" --login || fail "login to $IQN at $PORTAL"
    wait_disk
}
logout() {
    iscsiadm -m node -T "$IQN" -p "$PORTAL" --logout || fail "logout"
    [ -z "$(session_disk)" ] || fail "the disk is still there after logout"
}
node_set() {
    iscsiadm -m node -T "$IQN" -p "$PORTAL" -o update -n "$1" -v "$2" || fail "setting $1"
}
"#;

/// Size of `/tandem/random.bin`.
pub const RANDOM_FILE_SIZE: usize = 8 << 20;

/// The bytes shipped to every guest as `/tandem/random.bin`: data both sides know, so a second
/// guest (or the host) can check what a first one wrote. (The guest's own /dev/urandom would make
/// the data unknown outside that guest.)
pub fn random_file() -> Vec<u8> {
    random_bytes(RANDOM_FILE_SIZE, 0x9E37_79B9_7F4A_7C15)
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A guest set up for `target`'s first portal: `PORT`, `IQN`, the rendezvous port `RV_PORT` when
/// given, and `/tandem/iscsi.sh` (source it: `. /tandem/iscsi.sh`) holding [`GUEST_LIBRARY`] and
/// the rendezvous functions, and `/tandem/random.bin` ([`random_file`]).
pub fn iscsi_guest(target: &IscsiTarget, rendezvous_port: Option<u16>) -> GuestBuilder {
    let mut lib = String::from("set -u\n");
    lib.push_str(GUEST_LIBRARY);
    lib.push_str(GUEST_FUNCTIONS);
    let mut g = Guest::builder()
        .env("PORT", target.ports[0].to_string())
        .env("IQN", TEST_IQN)
        .file("iscsi.sh", lib, 0o644)
        .file("random.bin", random_file(), 0o644);
    if let Some(p) = rendezvous_port {
        g = g.env("RV_PORT", p.to_string());
    }
    g
}

/// The directory of the target's volume (`vol`) under the process's data directory.
pub fn volume_dir(target: &IscsiTarget) -> PathBuf {
    target.process.dir().join("data").join("vol")
}

/// The volume's UUID as 32 lowercase hex digits, read from its superblock file (bytes 20..36 of
/// the valid slot: magic, version and sequence number come first).
pub fn volume_uuid_hex(target: &IscsiTarget) -> Result<String> {
    let path = volume_dir(target).join("superblock");
    let sb = std::fs::read(&path)
        .map_err(|e| HarnessError::Process(format!("reading {}: {e}", path.display())))?;
    for slot in sb.chunks(4096) {
        if slot.len() >= 36 && slot.starts_with(b"TANDEMSB") {
            return Ok(hex::encode(&slot[20..36]));
        }
    }
    Err(HarnessError::Process(format!(
        "{}: no superblock slot",
        path.display()
    )))
}

/// Bytes the volume's extent file occupies on the host's disk (`st_blocks * 512`): what trims
/// give back.
pub fn extent_allocated(target: &IscsiTarget) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let path = volume_dir(target).join("extent");
    let md = std::fs::metadata(&path)
        .map_err(|e| HarnessError::Process(format!("stat {}: {e}", path.display())))?;
    Ok(md.blocks() * 512)
}

/// Polls [`extent_allocated`] every 100 ms until `done` accepts it or `timeout` passes; returns
/// the last value and whether `done` accepted it. The flusher copies the log into the extent and
/// punches trimmed ranges in the background, so the file changes some time after the I/O.
pub fn poll_extent(
    target: &IscsiTarget,
    timeout: Duration,
    mut done: impl FnMut(u64) -> bool,
) -> Result<(u64, bool)> {
    let deadline = Instant::now() + timeout;
    loop {
        let v = extent_allocated(target)?;
        if done(v) {
            return Ok((v, true));
        }
        if Instant::now() >= deadline {
            return Ok((v, false));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until [`extent_allocated`] has not changed for `quiet` (the flusher is idle), up to
/// `timeout`; returns the settled value.
pub fn settled_extent(target: &IscsiTarget, quiet: Duration, timeout: Duration) -> Result<u64> {
    let deadline = Instant::now() + timeout;
    let mut last = extent_allocated(target)?;
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let v = extent_allocated(target)?;
        if v != last {
            last = v;
            since = Instant::now();
        } else if since.elapsed() >= quiet || Instant::now() >= deadline {
            return Ok(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_are_reproducible_and_not_constant() {
        let a = random_bytes(4096, 5);
        assert_eq!(a, random_bytes(4096, 5));
        assert_ne!(a, random_bytes(4096, 6));
        assert!(a.iter().any(|&b| b != a[0]));
    }
}
