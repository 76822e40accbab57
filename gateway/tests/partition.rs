//! A network partition between two real `tandem serve` processes, under load.
//!
//! The standby runs inside a network namespace the test creates (`ip netns exec`), reached
//! over a veth pair: its replication and admin addresses are on the namespace's end, so taking
//! the host's end down partitions the two nodes, and bringing it up heals them. The primary and
//! all host I/O stay on loopback. A writer (the Rust NVMe/TCP initiator) writes and flushes on
//! the primary the whole time.
//!
//! - `a_partitioned_standby_is_dropped_after_the_timeout_and_catches_up_from_the_log`: with the
//!   link down, the primary declares the standby out of sync after the replication timeout
//!   (status, metrics, its log), flushes go on, and once the link is back the standby catches
//!   up from the log (no full resync) and is in sync again.
//! - `a_standby_whose_records_were_recycled_during_the_partition_is_rebuilt_under_writes`: the
//!   same with a small log the writer overruns during the partition: the primary rebuilds the
//!   standby by a full resync while the writer goes on, and it rejoins.
//!
//! Both end the same way: writes stop, a last flush (waiting for the in-sync standby), both
//! processes stop, and the two volume images, opened offline, must be equal block for block
//! (the standby's promoted first: a standby whose rebuild did not complete refuses that).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockstore::{DirStorage, Engine, OpenOptions};
use bytes::Bytes;
use gateway::nvme::config::DEFAULT_NQN;
use gateway::status::{self, VolumesDoc};
use nvme_initiator::{Controller, HostOptions};

const BS: u32 = 512;
const UUID: &str = "2b6f1c0e-8d3a-4a43-9a55-7d9a0b1f0c22";
const SIZE_MIB: u64 = 16;
/// The replication timeout both nodes use: short, so the partition is noticed quickly.
const TIMEOUT_MS: u64 = 1000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `ip` with `args`; panics with its error output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with a veth pair to the test's namespace, deleted when dropped.
struct Netns {
    name: String,
    host_if: String,
    ns_if: String,
    /// The namespace's address (on its end of the pair).
    inside: String,
}

impl Netns {
    fn create(case: u8) -> Netns {
        let pid = std::process::id();
        let name = format!("tandem-part-{pid}-{case}");
        let host_if = format!("tp{}h{case}", pid % 1_000_000);
        let ns_if = format!("tp{}n{case}", pid % 1_000_000);
        let net = format!("10.{}.{}", 200 + case, pid % 250);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        // From here on the guard cleans up, also when a later step fails.
        let ns = Netns {
            name,
            host_if,
            ns_if,
            inside: format!("{net}.2"),
        };
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.ns_if,
        ]);
        ip(&["link", "set", &ns.ns_if, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{net}.1/30"), "dev", &ns.host_if]);
        ip(&["link", "set", &ns.host_if, "up"]);
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        exec(&["addr", "add", &format!("{net}.2/30"), "dev", &ns.ns_if]);
        exec(&["link", "set", &ns.ns_if, "up"]);
        exec(&["link", "set", "lo", "up"]);
        ns
    }

    /// Takes the link between the namespaces down (a partition) or up (healed).
    fn link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it ours.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// One `tandem serve` process, killed when dropped.
struct Node {
    child: Child,
    admin: SocketAddr,
    nvme: SocketAddr,
    dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct NodeSpec<'a> {
    netns: Option<&'a str>,
    role: &'a str,
    repl: String,
    peer: String,
    admin: SocketAddr,
    nvme: SocketAddr,
    wal: &'a str,
    /// Extra lines of the `[replication]` section.
    replication: &'a str,
}

fn start(dir: &Path, spec: NodeSpec<'_>) -> Node {
    std::fs::create_dir_all(dir).unwrap();
    let config = format!(
        r#"
data_dir = "{data}"
[replication]
listen = "{repl}"
timeout_ms = {TIMEOUT_MS}
{replication}
[admin]
listen = "{admin}"
[iscsi]
enabled = false
[[volume]]
name = "default"
size = "{SIZE_MIB}MiB"
wal_size = "{wal}"
role = "{role}"
peer = "{peer}"
uuid = "{UUID}"
"#,
        data = dir.join("data").display(),
        repl = spec.repl,
        admin = spec.admin,
        wal = spec.wal,
        replication = spec.replication,
        role = spec.role,
        peer = spec.peer,
    );
    let cfg = dir.join("tandem.toml");
    std::fs::write(&cfg, config).unwrap();
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let tandem = env!("CARGO_BIN_EXE_tandem");
    let mut cmd = match spec.netns {
        // `ip netns exec` execs the program: the child is the daemon itself.
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, tandem]);
            c
        }
        None => Command::new(tandem),
    };
    let child = cmd
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .args([
            "--nvme-listen",
            &spec.nvme.to_string(),
            "--nvme-discovery-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let node = Node {
        child,
        admin: spec.admin,
        nvme: spec.nvme,
        dir: dir.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while status::fetch(node.admin).is_err() {
        assert!(Instant::now() < deadline, "did not start: {}", node.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    node
}

impl Node {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn doc(&self) -> VolumesDoc {
        status::fetch(self.admin).unwrap()
    }

    fn replication(&self) -> gateway::replication::state::ReplicationStatus {
        self.doc().volumes[0]
            .replication
            .clone()
            .expect("replication status")
    }

    fn sync_state(&self) -> String {
        self.replication()
            .sync_state
            .map_or("-".into(), |s| s.as_str().to_string())
    }

    /// Waits until the admin API shows `want` (and the standby connected, for in_sync).
    fn wait_sync_state(&self, want: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let r = self.replication();
            if r.sync_state.map(|s| s.as_str()) == Some(want) && (want != "in_sync" || r.connected)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never {want}: {r:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the daemon (SIGTERM: it flushes and closes its volume) and waits for it.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "did not stop: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A primary on loopback and its standby in the namespace `ns`.
fn pair(ns: &Netns, root: &Path, wal: &str, replication: &str) -> (Node, Node) {
    let srepl = format!("{}:9750", ns.inside);
    let prepl = format!("127.0.0.1:{}", free_port());
    let standby = start(
        &root.join("standby"),
        NodeSpec {
            netns: Some(&ns.name),
            role: "standby",
            repl: srepl.clone(),
            peer: prepl.clone(),
            admin: format!("{}:9740", ns.inside).parse().unwrap(),
            nvme: "127.0.0.1:4420".parse().unwrap(),
            wal,
            replication,
        },
    );
    let primary = start(
        &root.join("primary"),
        NodeSpec {
            netns: None,
            role: "primary",
            repl: prepl,
            peer: srepl,
            admin: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            nvme: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            wal,
            replication,
        },
    );
    primary.wait_sync_state("in_sync", Duration::from_secs(30));
    (primary, standby)
}

/// What the writer did.
#[derive(Debug, Default)]
struct Load {
    writes: AtomicU64,
    flushes: AtomicU64,
    bytes: AtomicU64,
    /// The longest a write or a flush took, in microseconds (both wait for the standby: a
    /// plain write until it received the data, a flush until it is durable there).
    longest_wait_us: AtomicU64,
}

/// Writes `blocks`-block chunks of changing data across the volume and flushes after every
/// few, pausing `pace` between rounds, until `stop`; then one last flush. Any error fails.
async fn writer(
    c: Controller,
    blocks: u32,
    pace: Duration,
    stop: Arc<AtomicBool>,
    load: Arc<Load>,
) {
    let span = SIZE_MIB * (1 << 20) / u64::from(BS) / u64::from(blocks);
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        for _ in 0..4 {
            n += 1;
            // A scattered, changing pattern: every chunk differs from what it overwrites.
            let slot = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % span;
            let lba = slot * u64::from(blocks);
            let mut data = vec![0u8; (blocks * BS) as usize];
            for (i, b) in data.iter_mut().enumerate() {
                *b = (n as usize).wrapping_mul(31).wrapping_add(i / 8) as u8;
            }
            data[..8].copy_from_slice(&n.to_le_bytes());
            let t = Instant::now();
            c.write(0, 1, lba, Bytes::from(data), BS, false)
                .await
                .expect("write");
            load.longest_wait_us
                .fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
            load.writes.fetch_add(1, Ordering::Relaxed);
            load.bytes
                .fetch_add(u64::from(blocks * BS), Ordering::Relaxed);
        }
        let t = Instant::now();
        c.flush(0, 1).await.expect("flush");
        load.longest_wait_us
            .fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        load.flushes.fetch_add(1, Ordering::Relaxed);
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    c.flush(0, 1).await.expect("last flush");
}

/// Reads a stopped node's volume offline (promoting a standby first, which a standby whose
/// rebuild did not complete refuses) and returns its logical content.
fn image(node: &Node, promote: bool) -> Vec<u8> {
    let dir = node.dir.join("data").join("default");
    let e = Engine::open(&DirStorage::new(&dir), OpenOptions::default())
        .unwrap_or_else(|e| panic!("open {}: {e}", dir.display()));
    if promote {
        e.promote().expect("the standby's image is whole");
    }
    let blocks = e.capacity_blocks();
    let mut out = Vec::with_capacity((blocks * u64::from(BS)) as usize);
    let step = 2048;
    let mut lba = 0;
    while lba < blocks {
        let n = step.min(blocks - lba);
        out.extend_from_slice(&e.read(lba, n).unwrap());
        lba += n;
    }
    e.close().unwrap();
    out
}

struct Case {
    case: u8,
    wal: &'static str,
    /// Blocks per write and pause between rounds: the writer's load.
    blocks: u32,
    pace: Duration,
    /// How long the link stays down.
    outage: Duration,
    /// Extra lines of both nodes' `[replication]` section.
    replication: &'static str,
}

/// What a partition run saw.
struct Outcome {
    primary_log: String,
    standby_log: String,
    /// Full resyncs the primary's status counted.
    resyncs_completed: u64,
    /// The rebuild's progress as the admin API showed it while it ran, if it was seen.
    progress_seen: Vec<gateway::replication::state::ResyncStatus>,
    /// `/metrics` once the standby rejoined.
    metrics: String,
}

/// Runs one partition under load; returns both nodes' logs and the writer's load.
fn partition(c: &Case) -> Outcome {
    let ns = Netns::create(c.case);
    let root = tempfile::tempdir().unwrap();
    let (mut primary, mut standby) = pair(&ns, root.path(), c.wal, c.replication);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    let ctrl = rt
        .block_on(Controller::connect(
            primary.nvme,
            DEFAULT_NQN,
            &HostOptions::default(),
        ))
        .unwrap();
    let w = rt.spawn(writer(ctrl, c.blocks, c.pace, stop.clone(), load.clone()));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        load.flushes.load(Ordering::Relaxed) > 0,
        "no flush before the partition"
    );

    // The partition: the primary declares the standby out of sync after the timeout.
    let cut = Instant::now();
    ns.link(false);
    primary.wait_sync_state("out_of_sync", Duration::from_secs(15));
    let noticed = cut.elapsed();
    // The write or flush that was waiting when the link went down was released only after the
    // replication timeout (it may have begun waiting a little before the cut), once the
    // primary had recorded the standby out of sync.
    let f0 = load.flushes.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while load.flushes.load(Ordering::Relaxed) <= f0 {
        assert!(Instant::now() < deadline, "no flush completed out of sync");
        std::thread::sleep(Duration::from_millis(5));
    }
    let longest = Duration::from_micros(load.longest_wait_us.load(Ordering::Relaxed));
    assert!(
        longest >= Duration::from_millis(TIMEOUT_MS),
        "out of sync {noticed:?} after the cut, but no write or flush waited the timeout (longest {longest:?})"
    );
    let metrics = status::get(primary.admin, "/metrics").unwrap();
    assert!(
        metrics.contains("tandem_volume_replication_in_sync{volume=\"default\"} 0"),
        "{metrics}"
    );
    // Flushes go on without the standby.
    let flushed = load.flushes.load(Ordering::Relaxed);
    let bytes_at_cut = load.bytes.load(Ordering::Relaxed);
    std::thread::sleep(c.outage.saturating_sub(cut.elapsed()));
    assert!(
        load.flushes.load(Ordering::Relaxed) > flushed + 10,
        "flushes stalled during the partition"
    );
    let written = load.bytes.load(Ordering::Relaxed) - bytes_at_cut;

    // Healed: the standby catches up under the same load and rejoins.
    ns.link(true);
    let healed = Instant::now();
    // Rejoining; a rebuild's progress shows in the admin API while it runs.
    let mut progress_seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let r = primary.replication();
        if let Some(p) = r.resync.clone() {
            progress_seen.push(p);
        }
        if r.connected && r.sync_state.map(|s| s.as_str()) == Some("in_sync") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never in sync again: {r:?}\n{}",
            primary.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let metrics = status::get(primary.admin, "/metrics").unwrap();
    println!(
        "case {}: out of sync {noticed:?} after the cut; {} MiB written during the partition; in sync {:?} after the heal",
        c.case,
        written >> 20,
        healed.elapsed()
    );
    let rejoined_flushes = load.flushes.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    rt.block_on(w).unwrap();
    assert!(
        load.flushes.load(Ordering::Relaxed) > rejoined_flushes,
        "no flush after the standby rejoined"
    );
    assert_eq!(primary.sync_state(), "in_sync");
    let completed = primary.replication().resyncs_completed;

    // Both stopped, the logical contents must be equal.
    primary.stop();
    standby.stop();
    let (plog, slog) = (primary.log(), standby.log());
    let a = image(&primary, false);
    let b = image(&standby, true);
    assert_eq!(a.len(), b.len());
    if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!(
            "case {}: the volumes differ first at block {} (primary crc32c {:08x}, standby {:08x})\nprimary log:\n{plog}\nstandby log:\n{slog}",
            c.case,
            i / BS as usize,
            crc32c::crc32c(&a),
            crc32c::crc32c(&b)
        );
    }
    assert!(a.iter().any(|&x| x != 0), "nothing was written");
    println!(
        "case {}: {} writes, {} flushes; both volumes crc32c {:08x}",
        c.case,
        load.writes.load(Ordering::Relaxed),
        load.flushes.load(Ordering::Relaxed),
        crc32c::crc32c(&a)
    );
    Outcome {
        primary_log: plog,
        standby_log: slog,
        resyncs_completed: completed,
        progress_seen,
        metrics,
    }
}

#[test]
fn a_partitioned_standby_is_dropped_after_the_timeout_and_catches_up_from_the_log() {
    // A paced writer and a log large enough to hold the partition's writes: a log catch-up.
    let o = partition(&Case {
        case: 1,
        wal: "64MiB",
        blocks: 8,
        pace: Duration::from_millis(5),
        outage: Duration::from_secs(5),
        replication: "",
    });
    let (plog, completed) = (o.primary_log, o.resyncs_completed);
    assert!(plog.contains("recorded out of sync"), "{plog}");
    assert!(
        !plog.contains("full resync of the standby begins"),
        "the log held what the standby missed: no full resync expected\n{plog}"
    );
    assert_eq!(completed, 0);
}

#[test]
fn a_standby_whose_records_were_recycled_during_the_partition_is_rebuilt_under_writes() {
    // An unpaced writer overruns the small log during the partition (it keeps at most half of
    // it, 4 MiB, for the standby): a full resync, with the writer going on through it.
    // The rebuild is limited to 32 MiB/s: the 16 MiB copy takes at least half a second,
    // long enough for its progress to be seen.
    let o = partition(&Case {
        case: 2,
        wal: "8MiB",
        blocks: 32,
        pace: Duration::ZERO,
        outage: Duration::from_secs(6),
        replication: "resync_rate_mib_s = 32",
    });
    let (plog, slog, completed) = (o.primary_log, o.standby_log, o.resyncs_completed);
    let copying: Vec<_> = o
        .progress_seen
        .iter()
        .filter(|p| p.phase == "copying")
        .collect();
    assert!(
        !copying.is_empty(),
        "the rebuild's progress never showed: {:?}",
        o.progress_seen
    );
    for p in &copying {
        assert_eq!(p.rate_limit_bytes_per_s, Some(32 << 20));
        assert!(p.total_bytes > 0 && p.done_bytes <= p.total_bytes, "{p:?}");
    }
    assert!(
        copying
            .windows(2)
            .all(|w| w[0].start_lsn != w[1].start_lsn || w[0].done_bytes <= w[1].done_bytes),
        "progress goes forward within a copy"
    );
    assert!(
        o.metrics
            .contains("tandem_volume_replication_resyncs_completed_total{volume=\"default\"} 1"),
        "{}",
        o.metrics
    );
    assert!(o
        .metrics
        .contains("tandem_volume_replication_resync_active{volume=\"default\"} 0"));
    assert!(plog.contains("recorded out of sync"), "{plog}");
    let begun = plog.matches("full resync of the standby begins").count();
    println!(
        "case 2: {begun} full resync(s) begun, progress seen {} times",
        o.progress_seen.len()
    );
    assert!(begun >= 1, "{plog}");
    assert!(
        plog.contains("full resync complete"),
        "{plog}\nstandby log:\n{slog}"
    );
    assert!(slog.contains("full resync complete"), "{slog}");
    assert!(completed >= 1, "status counts the completed resync");
}
