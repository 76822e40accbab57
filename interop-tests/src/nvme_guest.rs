//! Helpers for tests of Tandem's NVMe/TCP front end with the Linux kernel's host (`nvme-tcp`
//! driven by nvme-cli in a QEMU guest), and of one volume exported over iSCSI and NVMe/TCP at
//! once: a `tandem serve` with both front ends on free ports, a shell library for the guest
//! scripts, and the volume's identifiers as a host derives them.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{HarnessError, Result};
use crate::iscsi::TEST_IQN;
use crate::iscsi_guest::{random_file, GUEST_LIBRARY as ISCSI_LIBRARY};
use crate::ports::{free_tcp_port, wait_for_port};
use crate::qemu::{Guest, GuestBuilder};
use crate::rendezvous::GUEST_FUNCTIONS;
use crate::tandem::TandemProcess;
use crate::HOST_FROM_GUEST;

/// The subsystem NQN the helpers configure.
pub const TEST_NQN: &str = "nqn.2026-11.io.tandem:guest";

/// The subsystem serial number the helpers configure (Identify Controller SN).
pub const TEST_SERIAL: &str = "TANDEMGUEST0001";

/// The host NQN guests present (written to `/etc/nvme/hostnqn` by [`GUEST_LIBRARY`]): the
/// guest's own is random per boot, and the subsystem admits only listed hosts.
pub const GUEST_HOSTNQN: &str =
    "nqn.2014-08.org.nvmexpress:uuid:6e0c5a1e-7a4d-4e51-9d1b-00000000c0de";

/// The host NQN of `nvme-initiator`'s default options: host-side checks connect with it.
pub const INITIATOR_HOSTNQN: &str =
    "nqn.2014-08.org.nvmexpress:uuid:7a3e5c10-0000-4000-8000-000000000001";

/// A Tandem serving one volume (`vol`) as iSCSI LUN 0 of [`TEST_IQN`] and as namespace 1 of
/// [`TEST_NQN`], on loopback ports that guests reach at [`HOST_FROM_GUEST`].
pub struct DualTarget {
    /// The process (killed on drop).
    pub process: TandemProcess,
    /// iSCSI portal port.
    pub iscsi_port: u16,
    /// NVMe/TCP I/O portal port (it answers discovery connects too).
    pub nvme_port: u16,
    /// NVMe/TCP discovery-only port.
    pub discovery_port: u16,
    _config_dir: tempfile::TempDir,
}

/// How to set up a [`DualTarget`].
#[derive(Debug, Clone)]
pub struct DualSetup {
    /// Volume size in bytes.
    pub size: u64,
    /// Logical block size.
    pub block_size: u32,
    /// Host NQNs the subsystem admits.
    pub allowed_hosts: Vec<String>,
    /// TOML appended to the configuration (for example `[[nvme.host]]` tables).
    pub extra: String,
}

impl Default for DualSetup {
    fn default() -> Self {
        DualSetup {
            size: 128 << 20,
            block_size: 512,
            allowed_hosts: vec![GUEST_HOSTNQN.into(), INITIATOR_HOSTNQN.into()],
            extra: String::new(),
        }
    }
}

impl DualTarget {
    /// Starts `tandem serve` with both front ends and waits until every port accepts.
    pub fn start(setup: &DualSetup) -> Result<DualTarget> {
        let (iscsi_port, nvme_port, discovery_port) =
            (free_tcp_port()?, free_tcp_port()?, free_tcp_port()?);
        let config_dir = tempfile::tempdir().map_err(|e| HarnessError::Process(e.to_string()))?;
        let hosts: Vec<String> = setup
            .allowed_hosts
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect();
        let toml = format!(
            r#"data_dir = "data"
[[volume]]
name = "vol"
size = {size}
block_size = {bs}
wal_size = "32MiB"
[iscsi]
[[iscsi.portal]]
listen = "127.0.0.1:{iscsi_port}"
advertise = "{HOST_FROM_GUEST}:{iscsi_port}"
tpgt = 1
[[iscsi.target]]
iqn = "{TEST_IQN}"
[[iscsi.target.lun]]
id = 0
volume = "vol"
[nvme]
discovery_listen = ["127.0.0.1:{discovery_port}"]
[[nvme.portal]]
listen = "127.0.0.1:{nvme_port}"
advertise = "{HOST_FROM_GUEST}:{nvme_port}"
[[nvme.subsystem]]
nqn = "{TEST_NQN}"
serial = "{TEST_SERIAL}"
allowed_hosts = [{hosts}]
[[nvme.subsystem.namespace]]
nsid = 1
volume = "vol"
{extra}
"#,
            extra = setup.extra,
            size = setup.size,
            bs = setup.block_size,
            hosts = hosts.join(", "),
        );
        let cfg = config_dir.path().join("tandem.toml");
        std::fs::write(&cfg, toml).map_err(|e| HarnessError::Process(e.to_string()))?;
        let process = TandemProcess::start(
            vec![
                "serve".to_string(),
                "--config".into(),
                cfg.to_string_lossy().into_owned(),
            ],
            iscsi_port,
            Duration::from_secs(60),
        )?;
        for p in [nvme_port, discovery_port] {
            if !wait_for_port(([127, 0, 0, 1], p).into(), Duration::from_secs(30)) {
                return Err(HarnessError::Process(format!(
                    "tandem does not accept NVMe/TCP connections on port {p}"
                )));
            }
        }
        Ok(DualTarget {
            process,
            iscsi_port,
            nvme_port,
            discovery_port,
            _config_dir: config_dir,
        })
    }

    /// The directory of the volume `vol`.
    pub fn volume_dir(&self) -> PathBuf {
        self.process.dir().join("data").join("vol")
    }

    /// The volume's UUID, read from its superblock file (bytes 20..36 of the valid slot:
    /// magic, version and sequence number come first).
    pub fn volume_uuid(&self) -> Result<[u8; 16]> {
        let path = self.volume_dir().join("superblock");
        let sb = std::fs::read(&path)
            .map_err(|e| HarnessError::Process(format!("reading {}: {e}", path.display())))?;
        sb.chunks(4096)
            .filter(|slot| slot.starts_with(b"TANDEMSB"))
            .find_map(|slot| slot.get(20..36).and_then(|u| u.try_into().ok()))
            .ok_or_else(|| HarnessError::Process(format!("{}: no superblock slot", path.display())))
    }

    /// Bytes the volume's extent file occupies on the host's disk (`st_blocks * 512`).
    pub fn extent_allocated(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let path = self.volume_dir().join("extent");
        let md = std::fs::metadata(&path)
            .map_err(|e| HarnessError::Process(format!("stat {}: {e}", path.display())))?;
        Ok(md.blocks() * 512)
    }
}

/// The identifiers a host sees for a volume, derived here from its UUID the way the design
/// documents them (an IEEE Registered Extended NAA designator with company id 0 for SCSI and
/// the NGUID; company id and the low 40 UUID bits for the EUI-64; the UUID itself), in the
/// spellings the guest tools print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeIds {
    /// 32 lowercase hex digits (the SCSI unit serial number).
    pub uuid_hex: String,
    /// `8-4-4-4-12` form (nvme-cli's `uuid` line).
    pub uuid_dashed: String,
    /// NAA 6 designator = NGUID, 32 lowercase hex digits.
    pub nguid_hex: String,
    /// EUI-64, 16 lowercase hex digits.
    pub eui64_hex: String,
}

impl VolumeIds {
    /// Identifiers of the volume with UUID `uuid`, company id 0.
    pub fn from_uuid(uuid: &[u8; 16]) -> VolumeIds {
        let uuid_hex = hex::encode(uuid);
        // NAA 6 (4 bits), company id 0 (24 bits), then the low 100 bits (25 hex digits).
        let nguid_hex = format!("6000000{}", &uuid_hex[7..]);
        // Company id 0 (24 bits), then the low 40 bits (10 hex digits).
        let eui64_hex = format!("000000{}", &uuid_hex[22..]);
        let uuid_dashed = format!(
            "{}-{}-{}-{}-{}",
            &uuid_hex[..8],
            &uuid_hex[8..12],
            &uuid_hex[12..16],
            &uuid_hex[16..20],
            &uuid_hex[20..]
        );
        VolumeIds {
            uuid_hex,
            uuid_dashed,
            nguid_hex,
            eui64_hex,
        }
    }
}

/// Shell functions for NVMe/TCP guest scripts, installed as `/tandem/nvme.sh` by
/// [`dual_guest`] after the iSCSI library (whose `fail`, `check` and `has` they use).
///
/// Needs `NVME_PORT`, `DISC_PORT` and `NQN`; writes `HOSTNQN` (if set) to `/etc/nvme/hostnqn`.
/// `nvme_discover PORT` checks that the discovery log at PORT lists the subsystem at the I/O
/// portal's address as the guest reaches it; `nvme_connect [ARGS]` connects and waits for the
/// namespace, setting `NDEV` (`/dev/nvmeXnY`, the multipath head), `NS` and `CTRL` (`nvmeX`);
/// `nvme_disconnect` waits until the namespace is gone.
pub const GUEST_LIBRARY: &str = r#"
if [ -n "${HOSTNQN:-}" ]; then echo "$HOSTNQN" > /etc/nvme/hostnqn; fi
nvme_discover() {
    _out=$(nvme discover -t tcp -a "$TANDEM_HOST" -s "$1") || fail "nvme discover at port $1"
    echo "$_out"
    echo "$_out" | awk -v nqn="$NQN" -v port="$NVME_PORT" -v addr="$TANDEM_HOST" '
        function chk() { if (s == nqn && t == port && a == addr && ty ~ /nvme subsystem/) ok = 1 }
        /^=====/ { chk(); s = t = a = ty = "" }
        /^subnqn:/ { s = $2 } /^trsvcid:/ { t = $2 } /^traddr:/ { a = $2 } /^subtype:/ { ty = $0 }
        END { chk(); exit !ok }' || fail "the discovery log at port $1 does not list $NQN at $TANDEM_HOST:$NVME_PORT"
    echo "ok: discovery at port $1 lists $NQN at $TANDEM_HOST:$NVME_PORT"
}
# The controller (nvmeX) connected over TCP to $NQN, or nothing.
nvme_ctrl() {
    for _c in /sys/class/nvme/nvme*; do
        [ -e "$_c/subsysnqn" ] || continue
        if [ "$(cat $_c/subsysnqn)" = "$NQN" ] && [ "$(cat $_c/transport)" = tcp ]; then
            basename "$_c"; return 0
        fi
    done
    return 0
}
# The namespace head disk (nvmeXnY) of $NQN, or nothing.
nvme_ns() {
    for _s in /sys/class/nvme-subsystem/nvme-subsys*; do
        [ "$(cat $_s/subsysnqn 2>/dev/null)" = "$NQN" ] || continue
        for _n in $_s/nvme*n*; do
            case "$(basename $_n)" in *c*) continue ;; esac
            [ -e "$_n" ] && basename "$_n" && return 0
        done
    done
    return 0
}
wait_ns() {
    _i=0
    while [ $_i -lt 200 ]; do
        NS=$(nvme_ns)
        if [ -n "$NS" ] && [ -b "/dev/$NS" ] && [ "$(cat /sys/block/$NS/size)" -gt 0 ]; then
            NDEV=/dev/$NS
            CTRL=$(nvme_ctrl)
            echo "namespace: $NDEV ($(cat /sys/block/$NS/size) sectors), controller $CTRL"
            return 0
        fi
        sleep 0.1
        _i=$((_i + 1))
    done
    nvme list-subsys
    fail "no namespace appeared for $NQN"
}
nvme_connect() {
    nvme connect -t tcp -a "$TANDEM_HOST" -s "$NVME_PORT" -n "$NQN" "$@" || fail "nvme connect $*"
    wait_ns
}
nvme_disconnect() {
    nvme disconnect -n "$NQN" || fail "nvme disconnect"
    _i=0
    while [ -n "$(nvme_ns)" ] || [ -n "$(nvme_ctrl)" ]; do
        sleep 0.1; _i=$((_i + 1))
        [ $_i -lt 100 ] || fail "the namespace is still there after disconnect"
    done
}
# Seconds since boot with centiseconds (busybox date has no %N).
now() { cut -d' ' -f1 /proc/uptime; }
"#;

/// A guest set up for `target`: the iSCSI variables and library (`/tandem/iscsi.sh`, which
/// also holds [`GUEST_LIBRARY`] and the rendezvous functions: source only it), `NVME_PORT`,
/// `DISC_PORT`, `NQN`, `HOSTNQN` ([`GUEST_HOSTNQN`]), `RV_PORT` when given, and
/// `/tandem/random.bin`.
pub fn dual_guest(target: &DualTarget, rendezvous_port: Option<u16>) -> GuestBuilder {
    let mut lib = String::from("set -u\n");
    lib.push_str(ISCSI_LIBRARY);
    lib.push_str(GUEST_LIBRARY);
    lib.push_str(GUEST_FUNCTIONS);
    let mut g = Guest::builder()
        .env("PORT", target.iscsi_port.to_string())
        .env("IQN", TEST_IQN)
        .env("NVME_PORT", target.nvme_port.to_string())
        .env("DISC_PORT", target.discovery_port.to_string())
        .env("NQN", TEST_NQN)
        .env("HOSTNQN", GUEST_HOSTNQN)
        .file("iscsi.sh", lib, 0o644)
        .file("random.bin", random_file(), 0o644);
    if let Some(p) = rendezvous_port {
        g = g.env("RV_PORT", p.to_string());
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_naa6_layout() {
        let uuid: [u8; 16] = core::array::from_fn(|i| 0xA0 + i as u8);
        let ids = VolumeIds::from_uuid(&uuid);
        assert_eq!(ids.uuid_hex, "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
        assert_eq!(ids.uuid_dashed, "a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf");
        // 0x6, company id 000000, low 100 bits: the last 25 hex digits of the UUID.
        assert_eq!(ids.nguid_hex, "60000003a4a5a6a7a8a9aaabacadaeaf");
        assert_eq!(ids.eui64_hex, "000000abacadaeaf");
    }
}
