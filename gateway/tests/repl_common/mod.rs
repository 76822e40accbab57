//! Two real `tandem serve` processes replicating one volume on loopback, a writer that follows
//! the primary across role changes, and the model of what it was told.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::nvme::config::DEFAULT_NQN;
use gateway::status::{self, VolumeStatus, VolumesDoc};
use nvme_initiator::{Controller, HostOptions};
use rand::{Rng, SeedableRng};

/// Block size of the test volume.
pub const BS: u32 = 512;
/// Blocks the writer uses (the volume is larger).
pub const SPAN: u64 = 256;
const UUID: &str = "0b5e2c8a-51d4-4f0e-a1c3-3d6b2f9e7a42";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// One `tandem serve` process, killed (and continued first, if stopped) when dropped.
pub struct Node {
    pub child: Child,
    cfg_path: std::path::PathBuf,
    pub admin: SocketAddr,
    pub nvme: SocketAddr,
    pub repl: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = signal(&self.child, "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `sig` (a name for kill(1)) to `child`.
pub fn signal(child: &Child, sig: &str) -> bool {
    Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

fn spawn(dir: &std::path::Path, cfg_path: &std::path::Path, nvme: SocketAddr) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("serve")
        .arg("--config")
        .arg(cfg_path)
        .args([
            "--nvme-listen",
            &nvme.to_string(),
            "--nvme-discovery-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

impl Node {
    /// Starts a node holding the test volume, created as `role`, replicating with the node
    /// whose replication listener is `peer`.
    pub fn start(role: &str, repl: SocketAddr, peer: SocketAddr, timeout_ms: u64) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (admin, nvme) = (addr(), addr());
        let config = format!(
            r#"
data_dir = "{data}"
[replication]
listen = "{repl}"
timeout_ms = {timeout_ms}
[admin]
listen = "{admin}"
[iscsi]
enabled = false
[[volume]]
name = "default"
size = "16MiB"
wal_size = "4MiB"
role = "{role}"
peer = "{peer}"
uuid = "{UUID}"
"#,
            data = dir.path().join("data").display(),
        );
        let cfg_path = dir.path().join("tandem.toml");
        std::fs::write(&cfg_path, config).unwrap();
        let child = spawn(dir.path(), &cfg_path, nvme);
        let node = Node {
            child,
            cfg_path,
            admin,
            nvme,
            repl,
            dir,
        };
        node.wait_up();
        node
    }

    fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while status::fetch(self.admin).is_err() {
            assert!(Instant::now() < deadline, "did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the killed process again on the same data, ports and configuration.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self.dir.path(), &self.cfg_path, self.nvme);
        self.wait_up();
    }

    /// Kills the process and removes its data directory (a node whose disk was replaced); the
    /// next `restart` creates the volume afresh from the configuration.
    pub fn wipe_data(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::remove_dir_all(self.dir.path().join("data")).unwrap();
    }

    /// Reads the volume offline, the process killed first (a standby is promoted in that
    /// offline copy, which one whose rebuild did not complete refuses), and returns blocks
    /// `0..SPAN`.
    pub fn image(&mut self, promote: bool) -> Vec<u8> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = self.dir.path().join("data").join("default");
        let e = blockstore::Engine::open(
            &blockstore::DirStorage::new(&dir),
            blockstore::OpenOptions::default(),
        )
        .unwrap_or_else(|e| panic!("open {}: {e}", dir.display()));
        if promote {
            e.promote().expect("the standby's image is whole");
        }
        let out = e.read(0, SPAN).unwrap();
        e.close().unwrap();
        out
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The test volume as `GET /v1/volumes` shows it.
    pub fn vol(&self) -> VolumeStatus {
        let doc: VolumesDoc = status::fetch(self.admin).unwrap();
        doc.volumes[0].clone()
    }

    /// The replication sync state shown for the volume.
    pub fn sync_state(&self) -> Option<String> {
        let r = self.vol().replication?;
        r.sync_state.map(|s| s.as_str().to_string())
    }

    /// Waits until `ok` holds for the volume's status.
    pub fn wait(&self, what: &str, within: Duration, ok: impl Fn(&VolumeStatus) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let v = self.vol();
            if ok(&v) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never {what}: {v:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs `tandem volume ARGS... --admin <this node>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("volume")
            .args(args)
            .arg("--admin")
            .arg(self.admin.to_string())
            .output()
            .unwrap()
    }

    /// `tandem volume switchover default --to <other>` on this node; panics when it fails.
    pub fn switchover_to(&self, other: &Node) -> String {
        let out = self.cli(&["switchover", "default", "--to", &other.admin.to_string()]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "switchover: {text} {}\n--- from:\n{}\n--- to:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log(),
            other.log()
        );
        text
    }
}

/// A primary and its standby on fresh ports and data directories, the standby in sync.
pub fn pair(timeout_ms: u64) -> (Node, Node) {
    let (prepl, srepl) = (addr(), addr());
    let standby = Node::start("standby", srepl, prepl, timeout_ms);
    let primary = Node::start("primary", prepl, srepl, timeout_ms);
    primary.wait("in sync", Duration::from_secs(30), |v| {
        v.replication
            .as_ref()
            .is_some_and(|r| r.sync_state.is_some_and(|s| s.as_str() == "in_sync"))
    });
    (primary, standby)
}

/// A block holding write `id` at `lba`: recognisable and self-describing.
pub fn block(id: u64, lba: u64) -> Vec<u8> {
    let mut b = vec![(id % 251) as u8; BS as usize];
    b[..8].copy_from_slice(&lba.to_le_bytes());
    b[8..16].copy_from_slice(&id.to_le_bytes());
    b
}

/// Which write a block holds (0 for a never written block), or why it is none.
pub fn identify(b: &[u8], lba: u64) -> Result<u64, String> {
    if b.iter().all(|&x| x == 0) {
        return Ok(0);
    }
    let id = u64::from_le_bytes(b[8..16].try_into().unwrap());
    if b[..] != block(id, lba)[..] {
        return Err(format!("block {lba} is not a whole write (id {id}?)"));
    }
    Ok(id)
}

/// What the writer was told: every block's writes in order (whether they succeeded or not),
/// and per block the index of the last write a successful flush covered.
#[derive(Default, Debug)]
pub struct Model {
    pub history: std::collections::HashMap<u64, Vec<u64>>,
    pub acked: std::collections::HashMap<u64, usize>,
    /// Flushes acknowledged.
    pub flushes: u64,
    /// Flushes acknowledged per node index.
    pub flushes_on: [u64; 2],
    /// When each successful write's or flush's answer arrived, and from which node index.
    pub ack_times: Vec<(usize, Instant)>,
    /// Retryable errors seen (ANA / connection), by description.
    pub retried: Vec<String>,
    /// Errors that would have reached a filesystem.
    pub fatal: Vec<String>,
}

impl Model {
    /// Checks block `lba` as read from a node holding every acknowledged flush.
    pub fn check(&self, lba: u64, b: &[u8]) {
        let id = identify(b, lba).unwrap();
        let hist = &self.history[&lba];
        let acked = *self.acked.get(&lba).unwrap_or(&0);
        assert!(
            hist[acked..].contains(&id),
            "block {lba} holds write {id}, but write {} was acknowledged by a flush (history {hist:?})",
            hist[acked]
        );
    }
}

/// Connects the initiator to `addr`.
pub async fn connect(addr: SocketAddr) -> nvme_initiator::Result<Controller> {
    Controller::connect(addr, DEFAULT_NQN, &HostOptions::default()).await
}

/// Whether an initiator error is one a host retries (on this or another path): an ANA
/// status (path related, DNR clear) or a lost or refused connection.
fn retryable(e: &nvme_initiator::Error) -> bool {
    match e {
        nvme_initiator::Error::Status { status, .. } => status.sct() == 3 && !status.is_dnr(),
        nvme_initiator::Error::Io(_)
        | nvme_initiator::Error::Closed(_)
        | nvme_initiator::Error::Timeout(_) => true,
        _ => false,
    }
}

/// Writes and flushes until `stop`, over NVMe/TCP, on whichever of `nodes` serves: on a
/// retryable error it moves to the other node (as multipath would) and goes on. Gives up
/// (recording a fatal error) when no node served for 30 s.
pub async fn writer(nodes: [SocketAddr; 2], seed: u64, stop: Arc<AtomicBool>) -> Model {
    writer_from(nodes, seed, 0, stop).await
}

/// [`writer`] whose write ids start after `first_id`, so several writers over one volume
/// (one after the other) never write the same block content.
pub async fn writer_from(
    nodes: [SocketAddr; 2],
    seed: u64,
    first_id: u64,
    stop: Arc<AtomicBool>,
) -> Model {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut m = Model::default();
    let mut id = first_id;
    let mut at = 0usize;
    let mut conn: Option<Controller> = None;
    let mut pending: Vec<(u64, usize)> = Vec::new();
    let mut last_ok = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if last_ok.elapsed() > Duration::from_secs(30) {
            m.fatal.push("no node served for 30 s".into());
            break;
        }
        let c = match &conn {
            Some(c) => c,
            None => match connect(nodes[at]).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    m.retried.push(format!("connect to node {at}: {e}"));
                    at = 1 - at;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let mut failed = None;
        for _ in 0..rng.gen_range(1..8) {
            let lba = rng.gen_range(0..SPAN);
            id += 1;
            let h = m.history.entry(lba).or_insert_with(|| vec![0]);
            h.push(id);
            let idx = h.len() - 1;
            match c
                .write(0, 1, lba, Bytes::from(block(id, lba)), BS, false)
                .await
            {
                Ok(()) => {
                    m.ack_times.push((at, Instant::now()));
                    pending.push((lba, idx));
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none() {
            match c.flush(0, 1).await {
                Ok(()) => {
                    m.flushes += 1;
                    m.flushes_on[at] += 1;
                    m.ack_times.push((at, Instant::now()));
                    for (lba, idx) in pending.drain(..) {
                        let a = m.acked.entry(lba).or_insert(0);
                        *a = (*a).max(idx);
                    }
                    last_ok = Instant::now();
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            // Writes not covered by a flush are not owed; the host moves to the other path.
            pending.clear();
            if retryable(&e) {
                m.retried.push(format!("node {at}: {e}"));
            } else {
                m.fatal.push(format!("node {at}: {e}"));
            }
            conn = None;
            at = 1 - at;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    m
}

/// Reads blocks `0..SPAN` from the node at `addr` (which must serve).
pub async fn read_span(addr: SocketAddr) -> Vec<Vec<u8>> {
    let c = connect(addr).await.unwrap();
    let mut out = Vec::new();
    for lba in 0..SPAN {
        out.push(c.read(0, 1, lba, 1, BS).await.unwrap().to_vec());
    }
    out
}
