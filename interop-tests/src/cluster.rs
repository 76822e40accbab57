//! Two `tandem serve` nodes on the host replicating one volume, exported by both over iSCSI and
//! NVMe/TCP with one identity: what the failover tests run a guest's multipath against.
//!
//! Node A starts as the volume's primary, node B as its standby. Each node is its own path
//! group (`[node] path_group` 1 and 2), and every guest connection goes through a
//! [`PathProxy`] per node and protocol, so a test can make one node's listeners unreachable
//! without touching its process. Role changes go through the `tandem volume` commands an
//! operator runs, and the nodes' state is read with `tandem status --json`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{io_err, HarnessError, Result};
use crate::failover_guest::{GUEST_FUNCTIONS as FAILOVER_FUNCTIONS, MULTIPATH_DEFAULTS};
use crate::iscsi::TEST_IQN;
use crate::iscsi_guest::{random_file, GUEST_LIBRARY as ISCSI_LIBRARY};
use crate::nvme_guest::{GUEST_HOSTNQN, GUEST_LIBRARY as NVME_LIBRARY, TEST_NQN, TEST_SERIAL};
use crate::ports::{free_tcp_ports, wait_for_port};
use crate::proxy::PathProxy;
use crate::qemu::{Guest, GuestBuilder};
use crate::rendezvous::GUEST_FUNCTIONS;
use crate::tandem::{tandem_bin, TandemProcess};
use crate::HOST_FROM_GUEST;

/// The replicated volume's UUID (the same on both nodes, as replication requires).
pub const CLUSTER_VOLUME_UUID: &str = "3c9d4e61-2a7b-4f05-8e13-5b6a7c8d9e0f";

/// The dm-multipath device stanza for Tandem, as shipped.
pub const MULTIPATH_CONF: &str = include_str!("../../packaging/multipath/tandem.conf");

/// The open-iscsi settings for Tandem, as shipped (appended to the guest's iscsid.conf).
pub const ISCSID_CONF: &str = include_str!("../../packaging/iscsi/tandem-iscsid.conf");

/// The udev rule for Tandem's NVMe subsystems (I/O policy), as shipped.
pub const NVME_UDEV_RULE: &str = include_str!("../../packaging/nvme/71-tandem-nvme.rules");

/// The `nvme connect` wrapper with Tandem's reconnect settings, as shipped.
pub const NVME_CONNECT: &str = include_str!("../../packaging/nvme/tandem-nvme-connect");

/// The two nodes' names in messages and their index in [`Cluster::nodes`].
pub const NODE_NAMES: [&str; 2] = ["A", "B"];

/// One node of the [`Cluster`].
pub struct ClusterNode {
    /// The process (killed on drop; restart it with [`Cluster::restart`]).
    pub process: TandemProcess,
    /// Admin API address.
    pub admin: String,
    /// iSCSI portal port on the host.
    pub iscsi_port: u16,
    /// NVMe/TCP I/O portal port on the host.
    pub nvme_port: u16,
    /// The relay guests reach the iSCSI portal through.
    pub iscsi_path: PathProxy,
    /// The relay guests reach the NVMe/TCP portal through.
    pub nvme_path: PathProxy,
}

/// How to set up a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterSetup {
    /// Volume size in bytes.
    pub size: u64,
    /// `[replication] timeout_ms`.
    pub replication_timeout_ms: u64,
}

impl Default for ClusterSetup {
    fn default() -> Self {
        ClusterSetup {
            size: 128 << 20,
            replication_timeout_ms: 10_000,
        }
    }
}

/// Two nodes replicating one volume (`vol`): A primary, B standby at the start.
pub struct Cluster {
    /// Node A (index 0) and node B (index 1).
    pub nodes: Vec<ClusterNode>,
    /// The admin token file both nodes use (`[admin] token_file`).
    token: std::path::PathBuf,
    _config_dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts both nodes, waits until every port accepts and B is in sync with A.
    pub fn start(setup: &ClusterSetup) -> Result<Cluster> {
        let config_dir = tempfile::tempdir().map_err(io_err("creating the config directory"))?;
        // One admin token for both nodes (the first to start generates it): a switchover sends
        // the node's own token to its peer, and the CLI here sends it to either.
        let token = config_dir.path().join("admin-token");
        // Every node port at once (distinct: one free port after another may repeat one),
        // and the relays kept off them.
        let taken = free_tcp_ports(10)?;
        let repl = [taken[0], taken[1]];
        let mut nodes = Vec::new();
        for i in 0..2 {
            let (iscsi_port, nvme_port, disc_port, admin_port) = (
                taken[2 + 4 * i],
                taken[3 + 4 * i],
                taken[4 + 4 * i],
                taken[5 + 4 * i],
            );
            let iscsi_path = relay_to(iscsi_port, &taken)?;
            let nvme_path = relay_to(nvme_port, &taken)?;
            let admin = format!("127.0.0.1:{admin_port}");
            let toml = format!(
                r#"data_dir = "data"
[node]
path_group = {group}
[replication]
listen = "127.0.0.1:{repl}"
timeout_ms = {timeout}
[admin]
listen = "{admin}"
token_file = "{token}"
[[volume]]
name = "vol"
size = {size}
block_size = 512
wal_size = "32MiB"
role = "{role}"
peer = "127.0.0.1:{peer}"
uuid = "{CLUSTER_VOLUME_UUID}"
[iscsi]
[[iscsi.portal]]
listen = "127.0.0.1:{iscsi_port}"
advertise = "{HOST_FROM_GUEST}:{iscsi_adv}"
tpgt = {group}
[[iscsi.target]]
iqn = "{TEST_IQN}"
[[iscsi.target.lun]]
id = 0
volume = "vol"
[nvme]
discovery_listen = ["127.0.0.1:{disc_port}"]
[[nvme.portal]]
listen = "127.0.0.1:{nvme_port}"
advertise = "{HOST_FROM_GUEST}:{nvme_adv}"
[[nvme.subsystem]]
nqn = "{TEST_NQN}"
serial = "{TEST_SERIAL}"
allowed_hosts = ["{GUEST_HOSTNQN}"]
[[nvme.subsystem.namespace]]
nsid = 1
volume = "vol"
"#,
                group = i + 1,
                repl = repl[i],
                peer = repl[1 - i],
                timeout = setup.replication_timeout_ms,
                size = setup.size,
                role = if i == 0 { "primary" } else { "standby" },
                iscsi_adv = iscsi_path.port(),
                nvme_adv = nvme_path.port(),
                token = token.display(),
            );
            let cfg = config_dir
                .path()
                .join(format!("node-{}.toml", NODE_NAMES[i]));
            std::fs::write(&cfg, toml).map_err(io_err("writing a node's configuration"))?;
            let process = TandemProcess::start(
                vec![
                    "serve".to_string(),
                    "--config".into(),
                    cfg.to_string_lossy().into_owned(),
                ],
                iscsi_port,
                Duration::from_secs(60),
            )?;
            for p in [nvme_port, disc_port, admin_port] {
                if !wait_for_port(([127, 0, 0, 1], p).into(), Duration::from_secs(30)) {
                    return Err(HarnessError::Process(format!(
                        "node {} does not accept on port {p}",
                        NODE_NAMES[i]
                    )));
                }
            }
            nodes.push(ClusterNode {
                process,
                admin,
                iscsi_port,
                nvme_port,
                iscsi_path,
                nvme_path,
            });
        }
        let c = Cluster {
            nodes,
            token,
            _config_dir: config_dir,
        };
        c.wait_in_sync(1, Duration::from_secs(60))?;
        Ok(c)
    }

    /// `tandem status --json` of node `i`, the first (only) volume.
    pub fn status(&self, i: usize) -> Result<serde_json::Value> {
        let out = self.tandem(["status", "--json", "--admin", &self.nodes[i].admin])?;
        let doc: serde_json::Value = serde_json::from_str(&out).map_err(|e| {
            HarnessError::Process(format!("node {}: status is not JSON: {e}", NODE_NAMES[i]))
        })?;
        Ok(doc["volumes"][0].clone())
    }

    /// Node `i`'s role for the volume (`primary`, `standby`, `stale`, ...), or the error text
    /// when it does not answer.
    pub fn role(&self, i: usize) -> String {
        match self.status(i) {
            Ok(v) => v["role"].as_str().unwrap_or("?").to_string(),
            Err(e) => format!("unreachable ({e})"),
        }
    }

    /// Waits until node `i`'s status satisfies `ok`; the error names `what` and the last status.
    pub fn wait_status(
        &self,
        i: usize,
        what: &str,
        within: Duration,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let last = self.status(i);
            if last.as_ref().is_ok_and(&ok) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Process(format!(
                    "node {} never {what} within {within:?}: {last:?}",
                    NODE_NAMES[i]
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until node `standby` is a connected, in-sync standby (no resync running).
    pub fn wait_in_sync(&self, standby: usize, within: Duration) -> Result<()> {
        self.wait_status(standby, "became an in-sync standby", within, |v| {
            let r = &v["replication"];
            v["role"] == "standby"
                && r["connected"] == true
                && r["sync_state"] == "in_sync"
                && r["resync"].is_null()
        })
    }

    /// Planned switchover from node `from` to node `to`; returns how long the command took.
    pub fn switchover(&self, from: usize, to: usize) -> Result<Duration> {
        let t = Instant::now();
        self.tandem([
            "volume",
            "switchover",
            "vol",
            "--to",
            &self.nodes[to].admin,
            "--admin",
            &self.nodes[from].admin,
        ])?;
        Ok(t.elapsed())
    }

    /// `tandem volume promote vol` on node `i`; returns how long the command took.
    pub fn promote(&self, i: usize) -> Result<Duration> {
        let t = Instant::now();
        self.tandem(["volume", "promote", "vol", "--admin", &self.nodes[i].admin])?;
        Ok(t.elapsed())
    }

    /// `tandem volume demote vol` on node `i`.
    pub fn demote(&self, i: usize) -> Result<()> {
        self.tandem(["volume", "demote", "vol", "--admin", &self.nodes[i].admin])
            .map(drop)
    }

    /// SIGKILL to node `i`, waiting until it is gone.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        self.nodes[i]
            .process
            .signal_and_wait(libc::SIGKILL, Duration::from_secs(10))
            .map(drop)
            .ok_or_else(|| {
                HarnessError::Process(format!("node {} survived SIGKILL", NODE_NAMES[i]))
            })
    }

    /// Starts node `i` again on its data, configuration and ports.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.nodes[i].process.restart(Duration::from_secs(60))?;
        let admin: std::net::SocketAddr = self.nodes[i]
            .admin
            .parse()
            .map_err(|e| HarnessError::Process(format!("admin address: {e}")))?;
        if !wait_for_port(admin, Duration::from_secs(30)) {
            return Err(HarnessError::Process(format!(
                "node {} admin API did not come back",
                NODE_NAMES[i]
            )));
        }
        Ok(())
    }

    /// Runs the `tandem` binary with `args`; its standard output, or an error with both streams.
    fn tandem<const N: usize>(&self, args: [&str; N]) -> Result<String> {
        let out = Command::new(tandem_bin())
            .args(args)
            .env("TANDEM_TOKEN_FILE", &self.token)
            .output()
            .map_err(io_err("running tandem"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(HarnessError::Process(format!(
                "tandem {}: {}{stdout}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        if args[0] == "volume" {
            println!("[cluster] tandem {}: {}", args.join(" "), stdout.trim());
        }
        Ok(stdout)
    }
}

/// A relay to `target` on a port that is none of `taken`.
fn relay_to(target: u16, taken: &[u16]) -> Result<PathProxy> {
    let mut discarded = Vec::new();
    loop {
        let p = PathProxy::start(target)?;
        if !taken.contains(&p.port()) {
            return Ok(p);
        }
        // Held until a free port came up, so the same one is not handed out again.
        discarded.push(p);
        if discarded.len() > 10 {
            return Err(HarnessError::Process(
                "no relay port distinct from the node's ports".into(),
            ));
        }
    }
}

/// A guest set up for `cluster`: `/tandem/iscsi.sh` (the iSCSI and NVMe shell libraries and the
/// rendezvous and [`crate::failover_guest`] functions: source it), `IQN`, `NQN`, `HOSTNQN`, the ports the guest reaches each
/// node at (`PORT_A`, `PORT_B` for iSCSI, `NVME_A`, `NVME_B` for NVMe/TCP; `PORT` and
/// `NVME_PORT` name node A's for the libraries), `RV_PORT`, `/tandem/random.bin`, and the
/// shipped host files: `/tandem/host/tandem.conf` (multipath), `tandem-iscsid.conf`,
/// `71-tandem-nvme.rules`, `tandem-nvme-connect`.
pub fn cluster_guest(cluster: &Cluster, rendezvous_port: u16) -> GuestBuilder {
    let mut lib = String::from("set -u\n");
    lib.push_str(ISCSI_LIBRARY);
    lib.push_str(NVME_LIBRARY);
    lib.push_str(GUEST_FUNCTIONS);
    lib.push_str(FAILOVER_FUNCTIONS);
    let [a, b] = [&cluster.nodes[0], &cluster.nodes[1]];
    Guest::builder()
        .env("PORT", a.iscsi_path.port().to_string())
        .env("PORT_A", a.iscsi_path.port().to_string())
        .env("PORT_B", b.iscsi_path.port().to_string())
        .env("NVME_PORT", a.nvme_path.port().to_string())
        .env("NVME_A", a.nvme_path.port().to_string())
        .env("NVME_B", b.nvme_path.port().to_string())
        .env("IQN", TEST_IQN)
        .env("NQN", TEST_NQN)
        .env("HOSTNQN", GUEST_HOSTNQN)
        .env("RV_PORT", rendezvous_port.to_string())
        .env("MULTIPATH_DEFAULTS", MULTIPATH_DEFAULTS)
        .file("iscsi.sh", lib, 0o644)
        .file("random.bin", random_file(), 0o644)
        .file("host/tandem.conf", MULTIPATH_CONF, 0o644)
        .file("host/tandem-iscsid.conf", ISCSID_CONF, 0o644)
        .file("host/71-tandem-nvme.rules", NVME_UDEV_RULE, 0o644)
        .file("host/tandem-nvme-connect", NVME_CONNECT, 0o755)
}
