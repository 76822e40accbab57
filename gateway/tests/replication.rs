//! Replication between two real `tandem serve` processes on loopback: a primary and a standby
//! of one volume. A writer on the primary (the Rust NVMe/TCP initiator) writes recognisable
//! blocks and flushes; the primary is killed with SIGKILL at a random moment; the standby is
//! promoted with `tandem volume promote`; every flush the writer saw acknowledged must be on
//! it. And a flush while the standby is stopped (SIGSTOP) completes only after the replication
//! timeout, once the primary recorded the standby out of sync (shown by the admin API).
//!
//! `TANDEM_REPL_ROUNDS` sets the number of kill -9 rounds (default 10; one process pair each).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::nvme::config::DEFAULT_NQN;
use gateway::status::{self, VolumesDoc};
use nvme_initiator::{Controller, HostOptions};
use rand::{Rng, SeedableRng};

const BS: u32 = 512;
/// Blocks the writer uses (the volume is larger).
const SPAN: u64 = 256;
const UUID: &str = "6f1c1f0e-8d3a-4a43-9a55-7d9a0b1f0c11";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `tandem serve` process, killed when dropped.
struct Node {
    child: Child,
    cfg_path: std::path::PathBuf,
    admin: SocketAddr,
    nvme: SocketAddr,
    repl: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        // A stopped process must be continued to die promptly in every case.
        let _ = signal(&self.child, "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, sig: &str) -> bool {
    Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts a node holding the test volume as `role`, replicating with the node whose
/// replication listener is `peer`.
fn start(role: &str, repl: SocketAddr, peer: SocketAddr, timeout_ms: u64) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let nvme: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
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
        _dir: dir,
    };
    node.wait_up();
    node
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
    fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while status::fetch(self.admin).is_err() {
            assert!(Instant::now() < deadline, "did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the killed process again on the same data, ports and configuration.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self._dir.path(), &self.cfg_path, self.nvme);
        self.wait_up();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
    }

    fn doc(&self) -> VolumesDoc {
        status::fetch(self.admin).unwrap()
    }

    /// The replication sync state the admin API shows for the volume.
    fn sync_state(&self) -> Option<String> {
        let doc = self.doc();
        let r = doc.volumes[0].replication.clone()?;
        r.sync_state.map(|s| s.as_str().to_string())
    }

    fn wait_sync_state(&self, want: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.sync_state().as_deref() != Some(want) {
            assert!(
                Instant::now() < deadline,
                "never {want}: {:?}\n{}",
                self.doc().volumes[0].replication,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A primary and its standby on fresh ports and data directories.
fn pair(timeout_ms: u64) -> (Node, Node) {
    let (prepl, srepl): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    );
    let standby = start("standby", srepl, prepl, timeout_ms);
    let primary = start("primary", prepl, srepl, timeout_ms);
    let d = primary.doc();
    let r = d.volumes[0]
        .replication
        .as_ref()
        .expect("replication status");
    assert_eq!(r.peer, standby.repl.to_string());
    assert_eq!(r.mode, "sync");
    assert_eq!(standby.doc().volumes[0].role, "standby");
    // A new pairing counts the standby once it caught up.
    primary.wait_sync_state("in_sync", Duration::from_secs(30));
    (primary, standby)
}

/// A block holding write `id` at `lba`: recognisable and self-describing.
fn block(id: u64, lba: u64) -> Vec<u8> {
    let mut b = vec![(id % 251) as u8; BS as usize];
    b[..8].copy_from_slice(&lba.to_le_bytes());
    b[8..16].copy_from_slice(&id.to_le_bytes());
    b
}

/// Which write a block holds (0 for a never written block), or why it is none.
fn identify(b: &[u8], lba: u64) -> Result<u64, String> {
    if b.iter().all(|&x| x == 0) {
        return Ok(0);
    }
    let id = u64::from_le_bytes(b[8..16].try_into().unwrap());
    if b[..] != block(id, lba)[..] {
        return Err(format!("block {lba} is not a whole write (id {id}?)"));
    }
    Ok(id)
}

/// What the writer was told: every block's writes in order, and per block the index of the
/// last write covered by an acknowledged flush.
#[derive(Default)]
struct Model {
    history: std::collections::HashMap<u64, Vec<u64>>,
    acked: std::collections::HashMap<u64, usize>,
    flushes: u64,
}

impl Model {
    fn check(&self, lba: u64, b: &[u8]) {
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

async fn connect(addr: SocketAddr) -> Controller {
    Controller::connect(addr, DEFAULT_NQN, &HostOptions::default())
        .await
        .unwrap()
}

/// Writes and flushes on `c` until an error (the primary died); returns what was acknowledged.
/// `acked` counts the flushes acknowledged so far, for whoever waits for the first.
async fn writer(
    c: Controller,
    seed: u64,
    first_id: u64,
    acked: Arc<std::sync::atomic::AtomicU64>,
) -> Model {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut m = Model::default();
    let mut id = first_id;
    loop {
        for _ in 0..rng.gen_range(1..8) {
            let lba = rng.gen_range(0..SPAN);
            id += 1;
            m.history.entry(lba).or_insert_with(|| vec![0]).push(id);
            if c.write(0, 1, lba, Bytes::from(block(id, lba)), BS, false)
                .await
                .is_err()
            {
                return m;
            }
        }
        if c.flush(0, 1).await.is_err() {
            return m;
        }
        m.flushes += 1;
        for (lba, h) in &m.history {
            m.acked.insert(*lba, h.len() - 1);
        }
        acked.store(m.flushes, std::sync::atomic::Ordering::Release);
    }
}

fn promote(node: &Node) {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["volume", "promote", "default", "--admin"])
        .arg(node.admin.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("role primary"),
        "promote: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_acknowledged_flush_survives_kill_9_of_the_primary() {
    let rounds: u64 = std::env::var("TANDEM_REPL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut verified = 0;
    for round in 0..rounds {
        let (mut primary, standby) = pair(10_000);
        let c = rt.block_on(connect(primary.nvme));
        let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let w = rt.spawn(writer(c, rng.gen(), round << 32, acked.clone()));
        // The kill lands at a random point after the first acknowledged flush (however long a
        // loaded machine takes to get there), so every round has acknowledged data to lose.
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.load(std::sync::atomic::Ordering::Acquire) == 0 {
            assert!(
                Instant::now() < deadline && !w.is_finished(),
                "round {round}: no flush was acknowledged within 60 s of the writer starting\n{}",
                primary.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
        primary.child.kill().unwrap();
        let model = rt.block_on(w).unwrap();
        assert!(
            model.flushes > 0,
            "round {round}: no flush was acknowledged before the kill\n{}",
            primary.log()
        );
        promote(&standby);
        let doc = standby.doc();
        assert_eq!(doc.volumes[0].role, "primary");
        assert_eq!(doc.volumes[0].epoch, 2, "promotion raised the epoch");
        rt.block_on(async {
            let c = connect(standby.nvme).await;
            for lba in model.history.keys() {
                let b = c.read(0, 1, *lba, 1, BS).await.unwrap();
                model.check(*lba, &b);
            }
        });
        verified += model.flushes;
        drop(primary);
    }
    println!("replication kill -9: {rounds} rounds, {verified} acknowledged flushes verified");
}

#[test]
fn a_flush_waits_for_a_stopped_standby_until_the_timeout_then_goes_on_out_of_sync() {
    let (primary, standby) = pair(1000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = connect(primary.nvme).await;
        c.write(0, 1, 3, Bytes::from(block(1, 3)), BS, false)
            .await
            .unwrap();
        let t = Instant::now();
        c.flush(0, 1).await.unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "an in-sync standby answers at once"
        );
        assert!(signal(&standby.child, "STOP"));
        c.write(0, 1, 4, Bytes::from(block(2, 4)), BS, false)
            .await
            .unwrap();
        let t = Instant::now();
        c.flush(0, 1).await.unwrap();
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(1000),
            "the flush completed after {waited:?}, before the replication timeout"
        );
        assert!(waited < Duration::from_secs(10), "waited {waited:?}");
        assert_eq!(primary.sync_state().as_deref(), Some("out_of_sync"));
        let metrics = status::get(primary.admin, "/metrics").unwrap();
        assert!(
            metrics.contains("tandem_volume_replication_in_sync{volume=\"default\"} 0"),
            "{metrics}"
        );
        // Out of sync, flushes no longer wait for it.
        let t = Instant::now();
        c.flush(0, 1).await.unwrap();
        assert!(t.elapsed() < Duration::from_millis(1000));
        // Continued, the standby catches up and counts again.
        assert!(signal(&standby.child, "CONT"));
    });
    primary.wait_sync_state("in_sync", Duration::from_secs(30));
    assert!(
        primary.log().contains("recorded out of sync"),
        "{}",
        primary.log()
    );
}

#[test]
fn the_old_primary_back_after_a_failover_is_fenced_by_the_promoted_standby() {
    let (mut primary, standby) = pair(10_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = connect(primary.nvme).await;
        c.write(0, 1, 7, Bytes::from(block(1, 7)), BS, false)
            .await
            .unwrap();
        c.flush(0, 1).await.unwrap();
    });
    primary.child.kill().unwrap();
    promote(&standby);
    // Operator errors are JSON with a 4xx status.
    let e = status::post(standby.admin, "/v1/volumes/nope/promote")
        .unwrap_err()
        .to_string();
    assert!(e.contains("404") && e.contains("no volume"), "{e}");
    primary.restart();
    // Its handshake meets epoch 2: it stops serving and persists that it is stale.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = primary.doc().volumes[0].clone();
        if v.access_state == "unavailable" && v.epoch == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not fenced: {v:?}\n{}",
            primary.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.block_on(async {
        let c = connect(primary.nvme).await;
        assert!(
            c.write(0, 1, 8, Bytes::from(block(2, 8)), BS, false)
                .await
                .is_err(),
            "a fenced primary takes no writes"
        );
        let c = connect(standby.nvme).await;
        let b = c.read(0, 1, 7, 1, BS).await.unwrap();
        assert_eq!(identify(&b, 7), Ok(1));
    });
    assert!(primary.log().contains("newer epoch"), "{}", primary.log());
}
