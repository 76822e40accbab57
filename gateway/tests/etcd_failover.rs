//! Automatic failover through etcd, with real processes in network namespaces.
//!
//! etcd and each `tandem serve` node run in a network namespace of their own (`ip netns
//! exec`), each joined by a veth pair to a bridge in the test's namespace, where the client
//! (the Rust NVMe/TCP initiator, writing and flushing the whole time) runs. The nodes hold
//! a lease of 3 s, renewed every 500 ms, and fence themselves 1 s before it could end.
//!
//! - `a_killed_primary_is_replaced_by_its_in_sync_standby_without_losing_a_flush`: kill -9
//!   of the primary under the writer; the standby takes the leader key and is promoted with
//!   no command from the test; every acknowledged flush is on it; the epoch in etcd grows
//!   and is the new primary's. The old primary, restarted, is fenced by the newer epoch and,
//!   demoted, becomes the standby of the next round. Two rounds by default,
//!   `TANDEM_ETCD_ROUNDS` for more.
//! - `a_paused_primary_acknowledges_nothing_once_its_lease_ran_out`: SIGSTOP of the primary
//!   past its TTL; the standby is promoted; after SIGCONT the old primary acknowledges no
//!   write and no flush (the command waiting since the pause included) and turns stale.
//! - `with_etcd_unreachable_the_primary_fences_itself_and_serves_again_once_it_is_back`:
//!   etcd's link taken down under the writer: the primary stops acknowledging anything once
//!   TTL minus the margin after its last renewal passed (transitioning), nobody is promoted
//!   while etcd is away, and once it is back one node leads again (a newer epoch if the
//!   standby took over) with every acknowledged flush.

#![cfg(feature = "etcd")]

mod repl_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::cluster::view::ClusterDoc;
use gateway::status::{self, VolumeStatus};
use repl_common::{connect, identify, signal, writer_from, Model, BS, SPAN};

const UUID: &str = "6a0e3f52-93c1-4d4e-8b1e-55e0c2a7d913";
const TTL_S: u64 = 3;
const MARGIN_MS: u64 = 1000;

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

/// A bridge in the test's namespace and `n` namespaces, each joined to it by a veth pair;
/// all deleted when dropped.
struct Net {
    bridge: String,
    names: Vec<String>,
    host_ifs: Vec<String>,
    prefix: String,
}

impl Net {
    fn create(case: u8, n: usize) -> Net {
        let pid = std::process::id() % 100_000;
        let mut net = Net {
            bridge: format!("te{pid}b{case}"),
            names: Vec::new(),
            host_ifs: Vec::new(),
            prefix: format!("10.{}.{}", 180 + case, pid % 250),
        };
        let _ = Command::new("ip")
            .args(["link", "del", &net.bridge])
            .output();
        ip(&["link", "add", &net.bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", net.prefix),
            "dev",
            &net.bridge,
        ]);
        ip(&["link", "set", &net.bridge, "up"]);
        for i in 0..n {
            let name = format!("tandem-etcd-{pid}-{case}-{i}");
            let host_if = format!("te{pid}h{case}{i}");
            let ns_if = format!("te{pid}n{case}{i}");
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            ip(&["netns", "add", &name]);
            net.names.push(name.clone());
            ip(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ]);
            net.host_ifs.push(host_if.clone());
            ip(&["link", "set", &ns_if, "netns", &name]);
            ip(&["link", "set", &host_if, "master", &net.bridge]);
            ip(&["link", "set", &host_if, "up"]);
            let addr = format!("{}/24", net.addr(i));
            for args in [
                vec!["addr", "add", addr.as_str(), "dev", ns_if.as_str()],
                vec!["link", "set", ns_if.as_str(), "up"],
                vec!["link", "set", "lo", "up"],
            ] {
                let mut all = vec!["netns", "exec", name.as_str(), "ip"];
                all.extend(args);
                ip(&all);
            }
        }
        net
    }

    /// Takes namespace `i`'s link to the bridge down (cut off) or up.
    fn link(&self, i: usize, up: bool) {
        ip(&[
            "link",
            "set",
            &self.host_ifs[i],
            if up { "up" } else { "down" },
        ]);
    }

    /// Namespace `i`'s address.
    fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, 10 + i)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (name, host_if) in self.names.iter().zip(&self.host_ifs) {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
            let _ = Command::new("ip").args(["link", "del", host_if]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// A process killed (continued first, if stopped) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = signal(&self.0, "CONT");
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's etcd, a single member, in namespace `ns`.
fn start_etcd(net: &Net, ns: usize, dir: &Path) -> (Proc, String) {
    let url = format!("http://{}:2379", net.addr(ns));
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &net.names[ns], "etcd", "--name", "e"])
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "e=http://127.0.0.1:2380",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let p = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while etcd_get(&url, "/health-probe").is_err() {
        assert!(
            Instant::now() < deadline,
            "etcd did not start: {}",
            std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (p, url)
}

/// Reads `key` from etcd (`None`: absent).
fn etcd_get(url: &str, key: &str) -> Result<Option<String>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = tokio::time::timeout(
            Duration::from_secs(2),
            etcd_client::Client::connect([url], None),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
        let r = tokio::time::timeout(Duration::from_secs(2), c.get(key, None))
            .await
            .map_err(|_| "get timed out".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(r.kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    })
}

/// One `tandem serve` node in namespace `ns` of `net`.
struct Node {
    proc: Option<Proc>,
    ns: String,
    addr: String,
    dir: PathBuf,
}

impl Node {
    fn start(net: &Net, ns: usize, peer: usize, role: &str, etcd: &str, root: &Path) -> Node {
        let dir = root.join(format!("node{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        let addr = net.addr(ns);
        let config = format!(
            r#"
data_dir = "{data}"
[replication]
listen = "{addr}:9750"
timeout_ms = 1000
[admin]
listen = "{addr}:9740"
[iscsi]
enabled = false
[cluster]
etcd = ["{etcd}"]
prefix = "/tandem-test"
lease_ttl_s = {TTL_S}
renew_interval_ms = 500
safety_margin_ms = {MARGIN_MS}
[[volume]]
name = "default"
size = "16MiB"
wal_size = "4MiB"
role = "{role}"
peer = "{peer}:9750"
uuid = "{UUID}"
"#,
            data = dir.join("data").display(),
            peer = net.addr(peer),
        );
        std::fs::write(dir.join("tandem.toml"), config).unwrap();
        let mut n = Node {
            proc: None,
            ns: net.names[ns].clone(),
            addr,
            dir,
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, env!("CARGO_BIN_EXE_tandem")])
            .arg("serve")
            .arg("--config")
            .arg(self.dir.join("tandem.toml"))
            .args([
                "--nvme-listen",
                &format!("{}:4420", self.addr),
                "--nvme-discovery-listen",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "info")
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.proc = Some(Proc(child));
        let deadline = Instant::now() + Duration::from_secs(60);
        while status::fetch(self.admin()).is_err() {
            assert!(Instant::now() < deadline, "did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn admin(&self) -> SocketAddr {
        format!("{}:9740", self.addr).parse().unwrap()
    }

    fn nvme(&self) -> SocketAddr {
        format!("{}:4420", self.addr).parse().unwrap()
    }

    fn child(&self) -> &Child {
        &self.proc.as_ref().expect("running").0
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn vol(&self) -> VolumeStatus {
        status::fetch(self.admin()).unwrap().volumes.remove(0)
    }

    fn node_id(&self) -> String {
        self.vol().replication.expect("replicated").node_id
    }

    /// Waits until the node's volume satisfies `ok`.
    fn wait(&self, what: &str, within: Duration, ok: impl Fn(&VolumeStatus) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(mut d) = status::fetch(self.admin()) {
                if ok(&d.volumes.remove(0)) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "never {what}: {:?}\n{}",
                status::fetch(self.admin()).map(|mut d| d.volumes.remove(0)),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The volume's keys in etcd: leader, epoch, in-sync set.
#[derive(Debug)]
struct Keys {
    leader: Option<String>,
    epoch: u64,
    in_sync: Vec<String>,
}

fn keys(url: &str) -> Keys {
    let get = |k: &str| etcd_get(url, &format!("/tandem-test/volumes/default/{k}")).unwrap();
    Keys {
        leader: get("leader"),
        epoch: get("epoch").map_or(0, |e| e.parse().unwrap()),
        in_sync: get("in_sync").map_or(Vec::new(), |s| serde_json::from_str(&s).unwrap()),
    }
}

/// Runs the writer of round `round` on its own thread against both nodes until stopped (its
/// write ids are its own: no two rounds write the same block content).
struct Writer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Model>,
}

impl Writer {
    fn start(nodes: [SocketAddr; 2], round: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(writer_from(nodes, round, round << 32, s))
        });
        Writer { stop, thread }
    }

    /// Stops the writer and returns what it was told; no error reached the "filesystem".
    fn finish(self) -> Model {
        self.stop.store(true, Ordering::SeqCst);
        let m = self.thread.join().unwrap();
        assert!(m.fatal.is_empty(), "errors a host would see: {:?}", m.fatal);
        m
    }
}

/// The answers node `node` gave from `from` on (`until`: before), as times after `from`.
fn acked_by(m: &Model, node: usize, from: Instant, until: Option<Instant>) -> Vec<Duration> {
    m.ack_times
        .iter()
        .filter(|(n, at)| *n == node && *at >= from && until.is_none_or(|u| *at < u))
        .map(|(_, at)| at.duration_since(from))
        .collect()
}

/// Reads blocks `0..SPAN` from the node at `addr`. A retryable answer (the node's lease
/// lapsed for a moment on a loaded machine: it fenced itself) is retried for up to 20 s, as a
/// host would; anything else fails the test.
async fn read_serving(addr: SocketAddr) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    'again: loop {
        let c = match connect(addr).await {
            Ok(c) => c,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut out = Vec::new();
        for lba in 0..SPAN {
            match c.read(0, 1, lba, 1, BS).await {
                Ok(b) => out.push(b.to_vec()),
                Err(nvme_initiator::Error::Status { status, .. })
                    if status.sct() == 3 && !status.is_dnr() && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'again;
                }
                Err(e) => panic!("reading block {lba} from {addr}: {e}"),
            }
        }
        return out;
    }
}

/// Reads the writer's blocks from the node at `addr` and checks them: a block a flush of
/// this round covered holds that write or a newer one; any other block holds what it held
/// at the end of the previous round (`before`) or a write of this round. Returns the blocks.
fn check_all_flushes_present(m: &Model, addr: SocketAddr, before: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let blocks = rt.block_on(read_serving(addr));
    for lba in 0..SPAN {
        let b = &blocks[lba as usize];
        match m.history.get(&lba) {
            Some(_) if m.acked.get(&lba).is_some_and(|a| *a > 0) => m.check(lba, b),
            Some(hist) => {
                let id = identify(b, lba).unwrap();
                assert!(
                    b == &before[lba as usize] || hist[1..].contains(&id),
                    "block {lba} holds write {id}: neither its content before the round nor a write of it ({hist:?})"
                );
            }
            None => assert_eq!(b, &before[lba as usize], "block {lba} changed unwritten"),
        }
    }
    blocks
}

/// etcd in namespace 0 and two nodes in namespaces 1 and 2, node 0 the first primary; the
/// checks every scenario shares (epochs only grow; every acknowledged flush is on the node
/// that serves after a failover), and the count of failovers.
struct Pair {
    nodes: [Node; 2],
    ids: [String; 2],
    addrs: [SocketAddr; 2],
    url: String,
    /// The highest epoch etcd showed so far.
    epoch: std::cell::Cell<u64>,
    /// What the span held after the last checked round.
    content: Vec<Vec<u8>>,
    failovers: usize,
    _etcd: Proc,
    net: Net,
    _root: tempfile::TempDir,
}

impl Pair {
    fn start(case: u8) -> Pair {
        let root = tempfile::tempdir().unwrap();
        let net = Net::create(case, 3);
        let (etcd, url) = start_etcd(&net, 0, root.path());
        let nodes = [
            Node::start(&net, 1, 2, "primary", &url, root.path()),
            Node::start(&net, 2, 1, "standby", &url, root.path()),
        ];
        let ids = [nodes[0].node_id(), nodes[1].node_id()];
        let addrs = [nodes[0].nvme(), nodes[1].nvme()];
        let p = Pair {
            nodes,
            ids,
            addrs,
            url,
            epoch: std::cell::Cell::new(0),
            content: vec![vec![0u8; BS as usize]; SPAN as usize],
            failovers: 0,
            _etcd: etcd,
            net,
            _root: root,
        };
        p.wait_led(0);
        p
    }

    /// Both nodes' logs.
    fn logs(&self) -> String {
        format!(
            "node 0:\n{}\n-----\nnode 1:\n{}",
            self.nodes[0].log(),
            self.nodes[1].log()
        )
    }

    /// The volume's keys; the epoch never went down since the last look.
    fn keys(&self) -> Keys {
        let k = keys(&self.url);
        assert!(
            k.epoch >= self.epoch.get(),
            "the epoch in etcd went down: {} after {}",
            k.epoch,
            self.epoch.get()
        );
        self.epoch.set(k.epoch);
        k
    }

    /// Waits until etcd shows what `ok` wants.
    fn wait_keys(&self, what: &str, within: Duration, ok: impl Fn(&Keys) -> bool) -> Keys {
        let deadline = Instant::now() + within;
        loop {
            let k = self.keys();
            if ok(&k) {
                return k;
            }
            assert!(
                Instant::now() < deadline,
                "etcd never showed {what}: {k:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until etcd says node `p` leads with the other node in sync, and `p` serves at
    /// etcd's epoch.
    fn wait_led(&self, p: usize) {
        let (leader, standby) = (self.ids[p].clone(), self.ids[1 - p].clone());
        let k = self.wait_keys(
            &format!("node {p} leading with the other in sync"),
            Duration::from_secs(60),
            |k| k.leader.as_deref() == Some(&leader) && k.in_sync.contains(&standby),
        );
        self.nodes[p].wait("serving", Duration::from_secs(10), |v| {
            v.access_state == "optimized" && v.epoch == k.epoch
        });
    }

    /// Waits until node `s` was promoted on its own; the time it took from `since`.
    fn wait_promoted(&self, s: usize, since: Instant) -> Duration {
        self.nodes[s].wait("promoted", Duration::from_secs(20), |v| {
            v.role == "primary" && v.access_state == "optimized"
        });
        since.elapsed()
    }

    /// After a failover to node `s` from an epoch `before`: etcd holds a newer epoch with `s`
    /// leading at it, and every flush `m` was told of is on `s`. Counts the failover.
    fn check_failover(&mut self, m: &Model, s: usize, before: u64) -> u64 {
        let k = self.keys();
        assert!(k.epoch > before, "epoch {} after {before}", k.epoch);
        assert_eq!(k.leader.as_deref(), Some(self.ids[s].as_str()));
        assert_eq!(self.nodes[s].vol().epoch, k.epoch);
        assert!(m.flushes_on[s] > 0, "no flush on the new primary: {m:?}");
        self.content = check_all_flushes_present(m, self.addrs[s], &self.content);
        self.failovers += 1;
        k.epoch
    }

    /// Every flush `m` was told of is on node `p` (which serves), with no failover.
    fn check_present(&mut self, m: &Model, p: usize) {
        self.content = check_all_flushes_present(m, self.addrs[p], &self.content);
    }

    /// The cluster as node `i` shows it (`GET /v1/volumes`, `cluster`).
    fn cluster(&self, i: usize) -> ClusterDoc {
        status::fetch(self.nodes[i].admin())
            .unwrap()
            .cluster
            .expect("a node coordinated by etcd shows the cluster")
    }

    /// Waits until node `i` shows the cluster as `ok` wants it.
    fn wait_cluster(&self, i: usize, what: &str, ok: impl Fn(&ClusterDoc) -> bool) -> ClusterDoc {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let c = self.cluster(i);
            if ok(&c) {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} never showed {what}: {c:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What `tandem status` prints on node `i`.
    fn status_text(&self, i: usize) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["status", "--admin"])
            .arg(self.nodes[i].admin().to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn kill(&mut self, i: usize) {
        assert!(signal(self.nodes[i].child(), "KILL"));
        self.nodes[i].proc = None;
    }

    /// Restarts node `i` (killed or stopped before): an old primary is fenced by the newer
    /// epoch and demoted by the operator, so it follows as the standby.
    fn rejoin_as_standby(&mut self, i: usize) {
        self.nodes[i].spawn();
        let v = self.nodes[i].vol();
        if v.role == "standby" {
            return;
        }
        self.nodes[i].wait("fenced", Duration::from_secs(20), |v| v.role == "stale");
        let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["volume", "demote", "default", "--admin"])
            .arg(self.nodes[i].admin().to_string())
            .arg("--data-dir")
            .arg(self.nodes[i].dir.join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "demote: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Cuts (or heals) the link between node `i` and namespace `ns` only (0: etcd, 1 + j:
    /// node j), both ways, with blackhole routes; the client reaches both nodes throughout.
    fn cut(&self, i: usize, ns: usize, cut: bool) {
        let (a, b) = (1 + i, ns);
        for (from, to) in [(a, b), (b, a)] {
            ip(&[
                "-n",
                &self.net.names[from],
                "route",
                if cut { "add" } else { "del" },
                "blackhole",
                &format!("{}/32", self.net.addr(to)),
            ]);
        }
    }
}

fn rounds(default: usize) -> usize {
    std::env::var("TANDEM_ETCD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn a_killed_primary_is_replaced_by_its_in_sync_standby_without_losing_a_flush() {
    let mut pair = Pair::start(1);
    let mut primary = 0;
    let rounds = rounds(2);
    for round in 0..rounds {
        let (p, s) = (primary, 1 - primary);
        pair.wait_led(p);
        let before = pair.keys().epoch;
        let w = Writer::start(pair.addrs, round as u64);
        std::thread::sleep(Duration::from_millis(1500));
        let killed = Instant::now();
        pair.kill(p);
        let took = pair.wait_promoted(s, killed);
        std::thread::sleep(Duration::from_millis(1000));
        let m = w.finish();
        assert!(m.flushes_on[p] > 0, "{m:?}");
        let epoch = pair.check_failover(&m, s, before);
        println!(
            "round {}/{rounds}: node {p} killed, node {s} promoted after {:.1} s, epoch {before} -> {epoch}, {} flushes acknowledged ({} retried errors)",
            round + 1,
            took.as_secs_f64(),
            m.flushes,
            m.retried.len()
        );
        pair.rejoin_as_standby(p);
        primary = s;
    }
    println!("failovers: {}", pair.failovers);
}

#[test]
fn ten_rapid_forced_failovers_lose_no_flush() {
    // Alternately kill -9 (the standby waits for the lease to end in etcd) and SIGTERM (the
    // node revokes its lease on the way out: the standby takes over at its next round).
    let mut pair = Pair::start(4);
    let mut primary = 0;
    let rounds = rounds(10);
    let mut pauses = Vec::new();
    for round in 0..rounds {
        let (p, s) = (primary, 1 - primary);
        pair.wait_led(p);
        let before = pair.keys().epoch;
        let w = Writer::start(pair.addrs, 100 + round as u64);
        std::thread::sleep(Duration::from_millis(500));
        let forced = Instant::now();
        let how = if round % 2 == 0 { "KILL" } else { "TERM" };
        assert!(signal(pair.nodes[p].child(), how));
        let took = pair.wait_promoted(s, forced);
        std::thread::sleep(Duration::from_millis(500));
        let m = w.finish();
        pair.nodes[p].proc = None;
        let epoch = pair.check_failover(&m, s, before);
        println!(
            "rapid round {}/{rounds}: SIG{how} of node {p}, node {s} promoted after {:.1} s, epoch {before} -> {epoch}, {} flushes",
            round + 1,
            took.as_secs_f64(),
            m.flushes
        );
        pauses.push((how, took.as_secs_f64()));
        pair.rejoin_as_standby(p);
        primary = s;
    }
    println!(
        "rapid failovers: {} (SIG{{KILL,TERM}} alternately), promoted after {:?} s",
        pair.failovers, pauses
    );
    println!("failovers: {}", pair.failovers);
}

#[test]
fn a_paused_primary_acknowledges_nothing_once_its_lease_ran_out() {
    let mut pair = Pair::start(2);
    let before = pair.keys().epoch;
    let w = Writer::start(pair.addrs, 7);
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = Instant::now();
    assert!(signal(pair.nodes[0].child(), "STOP"));
    let took = pair.wait_promoted(1, stopped);
    std::thread::sleep(Duration::from_millis(1000));
    let continued = Instant::now();
    assert!(signal(pair.nodes[0].child(), "CONT"));
    pair.nodes[0].wait("stale", Duration::from_secs(20), |v| v.role == "stale");
    std::thread::sleep(Duration::from_millis(500));
    let m = w.finish();
    // Its lease ended at the latest TTL - margin after the pause began.
    let lease_end = stopped + Duration::from_millis(TTL_S * 1000 - MARGIN_MS);
    let late = acked_by(&m, 0, lease_end, None);
    assert!(
        late.is_empty(),
        "the paused primary acknowledged writes or flushes after its lease ran out (at {late:?} after its end)\n{}",
        pair.logs()
    );
    let epoch = pair.check_failover(&m, 1, before);
    assert!(pair.nodes[0].vol().epoch < epoch || pair.nodes[0].vol().role == "stale");
    println!(
        "paused primary: standby promoted {:.1} s after SIGSTOP, continued after {:.1} s, no write or flush acknowledged by it after its lease; epoch {before} -> {epoch}; {} flushes",
        took.as_secs_f64(),
        continued.duration_since(stopped).as_secs_f64(),
        m.flushes
    );
    println!("failovers: {}", pair.failovers);
}

#[test]
fn with_etcd_unreachable_the_primary_fences_itself_and_serves_again_once_it_is_back() {
    let mut pair = Pair::start(3);
    let before = pair.keys().epoch;
    let w = Writer::start(pair.addrs, 11);
    std::thread::sleep(Duration::from_millis(1500));
    let cut = Instant::now();
    // etcd's own link: neither node reaches it.
    pair.net.link(0, false);
    // Past the lease (TTL) and more: the primary fenced itself, nobody was promoted.
    std::thread::sleep(Duration::from_millis(TTL_S * 1000 + 1500));
    let a = pair.nodes[0].vol();
    let b = pair.nodes[1].vol();
    let c = pair.cluster(0);
    let text = pair.status_text(0);
    let healed = Instant::now();
    pair.net.link(0, true);
    assert_eq!(
        (a.role.as_str(), a.access_state.as_str()),
        ("primary", "transitioning"),
        "{}",
        pair.logs()
    );
    assert_eq!(b.role, "standby", "{}", pair.logs());
    assert!(!c.reachable && c.serve_left_ms == Some(0), "{c:?}");
    assert!(
        text.contains("UNREACHABLE") && text.contains("lease lapsed"),
        "{text}"
    );
    // One node leads again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let k = pair.keys();
        let serving = (0..2).find(|i| {
            k.leader.as_deref() == Some(pair.ids[*i].as_str())
                && pair.nodes[*i].vol().access_state == "optimized"
        });
        if let Some(i) = serving {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "nobody leads after etcd came back\n{}",
            pair.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(1000));
    let m = w.finish();
    // The last renewal was sent before the cut: the lease ended by TTL - margin after it.
    let fenced_by = cut + Duration::from_millis(TTL_S * 1000 - MARGIN_MS + 300);
    let late = [
        acked_by(&m, 0, fenced_by, Some(healed)),
        acked_by(&m, 1, fenced_by, Some(healed)),
    ];
    assert!(
        late.iter().all(|l| l.is_empty()),
        "acknowledged while etcd was unreachable, after the lease had ended: {late:?}\n{}",
        pair.logs()
    );
    let k = pair.keys();
    if leader == 1 {
        pair.check_failover(&m, 1, before);
    } else {
        pair.check_present(&m, 0);
    }
    assert_eq!(pair.nodes[leader].vol().epoch, k.epoch);
    println!(
        "etcd unreachable {:.1} s: the primary fenced itself (transitioning), nobody promoted; node {leader} leads again under epoch {} (was {before}); {} flushes",
        healed.duration_since(cut).as_secs_f64(),
        k.epoch,
        m.flushes
    );
    println!("failovers: {}", pair.failovers);
}

#[test]
fn a_primary_cut_from_its_standby_drops_it_from_the_in_sync_set_and_goes_on() {
    let mut pair = Pair::start(5);
    let before = pair.keys().epoch;
    let (id0, id1) = (pair.ids[0].clone(), pair.ids[1].clone());
    // Both nodes show the cluster from etcd: both alive, node 0 primary, both in sync.
    for i in 0..2 {
        let c = pair.wait_cluster(i, "both nodes in sync", |c| {
            c.reachable && c.volumes.first().is_some_and(|v| v.in_sync.len() == 2)
        });
        assert!(
            c.nodes.iter().all(|n| n.alive) && c.nodes.len() == 2,
            "{c:?}"
        );
        let v = &c.volumes[0];
        assert_eq!((v.leader.as_deref(), v.epoch), (Some(id0.as_str()), before));
        assert_eq!(
            v.lag_records.is_some(),
            i == 0,
            "only the leader knows the lag: {c:?}"
        );
    }
    let text = pair.status_text(0);
    let line = format!(
        "volume default  primary {}  epoch {before}  in sync [",
        &id0[..8]
    );
    assert!(text.contains(&line) && text.contains("alive"), "{text}");
    let w = Writer::start(pair.addrs, 21);
    std::thread::sleep(Duration::from_millis(1000));
    let cut = Instant::now();
    pair.cut(0, 2, true);
    // The replication timeout (1 s) later the primary takes the standby out of the set.
    pair.wait_keys(
        "the standby out of the in-sync set",
        Duration::from_secs(10),
        |k| k.in_sync == [id0.clone()],
    );
    let dropped = cut.elapsed();
    // Status shows it: the standby out of the set and behind, still alive (it reaches etcd).
    let c = pair.wait_cluster(0, "the standby out of the set and behind", |c| {
        c.volumes[0].in_sync == [id0.clone()] && c.volumes[0].lag_records.is_some_and(|l| l > 0)
    });
    assert!(c.nodes.iter().any(|n| n.node_id == id1 && n.alive), "{c:?}");
    let text = pair.status_text(0);
    assert!(
        text.contains(&format!("in sync [{}]  standby lag", &id0[..8])),
        "{text}"
    );
    // Past the TTL: the standby is not promoted, the primary leads at the same epoch and its
    // flushes go on.
    std::thread::sleep(Duration::from_millis(TTL_S * 1000 + 1000));
    let k = pair.keys();
    assert_eq!(k.leader.as_deref(), Some(pair.ids[0].as_str()));
    assert_eq!(k.epoch, before);
    assert_eq!(pair.nodes[1].vol().role, "standby", "{}", pair.logs());
    let v = pair.nodes[0].vol();
    assert_eq!(
        (v.role.as_str(), v.access_state.as_str()),
        ("primary", "optimized")
    );
    let log = pair.nodes[0].log();
    let (out, on) = (
        log.find("the standby is out of the in-sync set in etcd"),
        log.find("recorded out of sync; flushes go on without it"),
    );
    assert!(
        out.is_some() && out < on,
        "the drop in etcd must come before the flushes go on without the standby\n{log}"
    );
    // Healed: the standby catches up and is listed again; then the primary is killed and
    // the standby, holding every acknowledged flush, takes over.
    let healed = Instant::now();
    pair.cut(0, 2, false);
    pair.wait_led(0);
    let m = w.finish();
    let alone = acked_by(&m, 0, cut + Duration::from_millis(1500), Some(healed));
    assert!(
        !alone.is_empty(),
        "the primary acknowledged nothing alone: {m:?}"
    );
    pair.check_present(&m, 0);
    let w = Writer::start(pair.addrs, 22);
    std::thread::sleep(Duration::from_millis(1000));
    let killed = Instant::now();
    pair.kill(0);
    let took = pair.wait_promoted(1, killed);
    std::thread::sleep(Duration::from_millis(500));
    let m2 = w.finish();
    let epoch = pair.check_failover(&m2, 1, before);
    println!(
        "primary cut from its standby: the standby left the in-sync set {:.1} s after the cut, was not promoted, {} answers from the primary alone; healed, it was in sync again; killed primary replaced after {:.1} s, epoch {before} -> {epoch}",
        dropped.as_secs_f64(),
        alone.len(),
        took.as_secs_f64()
    );
    println!("failovers: {}", pair.failovers);
}

#[test]
fn a_primary_cut_from_etcd_but_not_its_standby_fences_itself_and_the_standby_takes_over() {
    let mut pair = Pair::start(6);
    let before = pair.keys().epoch;
    let w = Writer::start(pair.addrs, 31);
    std::thread::sleep(Duration::from_millis(1000));
    let cut = Instant::now();
    pair.cut(0, 0, true);
    let took = pair.wait_promoted(1, cut);
    std::thread::sleep(Duration::from_millis(1000));
    let m = w.finish();
    // Its last renewal was sent before the cut: nothing acknowledged TTL - margin after it.
    let lease_end = cut + Duration::from_millis(TTL_S * 1000 - MARGIN_MS);
    let late = acked_by(&m, 0, lease_end, None);
    assert!(
        late.is_empty(),
        "the primary cut from etcd acknowledged after its lease ended: {late:?}\n{}",
        pair.logs()
    );
    let epoch = pair.check_failover(&m, 1, before);
    // The old primary meets the newer epoch (from its old standby, or etcd once healed).
    pair.cut(0, 0, false);
    pair.nodes[0].wait("fenced", Duration::from_secs(20), |v| {
        v.role == "stale" || v.access_state != "optimized"
    });
    println!(
        "primary cut from etcd: standby promoted after {:.1} s, nothing acknowledged by the old primary after its lease; epoch {before} -> {epoch}; {} flushes",
        took.as_secs_f64(),
        m.flushes
    );
    println!("failovers: {}", pair.failovers);
}

#[test]
fn a_primary_cut_from_etcd_and_its_standby_acknowledges_nothing_the_promoted_standby_lacks() {
    // The primary cannot drop its silent standby from the in-sync set, so it must not go on
    // without it: the standby, still listed, is promoted once the lease ran out and holds
    // every acknowledged flush (with only the local out-of-sync record this loses flushes).
    let mut pair = Pair::start(7);
    let before = pair.keys().epoch;
    let w = Writer::start(pair.addrs, 41);
    std::thread::sleep(Duration::from_millis(1000));
    let cut = Instant::now();
    pair.cut(0, 0, true);
    pair.cut(0, 2, true);
    let took = pair.wait_promoted(1, cut);
    std::thread::sleep(Duration::from_millis(1000));
    let m = w.finish();
    let epoch = pair.check_failover(&m, 1, before);
    let late = acked_by(
        &m,
        0,
        cut + Duration::from_millis(TTL_S * 1000 - MARGIN_MS),
        None,
    );
    assert!(late.is_empty(), "acknowledged after the lease: {late:?}");
    pair.cut(0, 0, false);
    pair.cut(0, 2, false);
    println!(
        "primary cut from etcd and its standby: standby promoted after {:.1} s with every acknowledged flush; epoch {before} -> {epoch}; {} flushes",
        took.as_secs_f64(),
        m.flushes
    );
    println!("failovers: {}", pair.failovers);
}

#[test]
fn with_its_standby_down_the_primary_goes_on_and_takes_it_back_once_in_sync() {
    let mut pair = Pair::start(8);
    let before = pair.keys().epoch;
    let w = Writer::start(pair.addrs, 51);
    std::thread::sleep(Duration::from_millis(1000));
    let down = Instant::now();
    pair.kill(1);
    let id0 = pair.ids[0].clone();
    pair.wait_keys(
        "the dead standby out of the in-sync set",
        Duration::from_secs(10),
        |k| k.in_sync == [id0.clone()],
    );
    let id1 = pair.ids[1].clone();
    let c = pair.wait_cluster(0, "the dead standby down", |c| {
        c.nodes.iter().any(|n| n.node_id == id1 && !n.alive)
    });
    assert_eq!(c.volumes[0].in_sync, std::slice::from_ref(&id0));
    let text = pair.status_text(0);
    assert!(
        text.contains(&format!("node {}  DOWN (no lease)", &id1[..8])),
        "{text}"
    );
    let k = pair.keys();
    assert_eq!(k.leader.as_deref(), Some(pair.ids[0].as_str()));
    assert_eq!(k.epoch, before);
    let restarted = Instant::now();
    pair.nodes[1].spawn();
    pair.wait_led(0);
    let m = w.finish();
    let alone = acked_by(&m, 0, down + Duration::from_millis(1500), Some(restarted));
    assert!(
        !alone.is_empty(),
        "nothing acknowledged without the standby: {m:?}"
    );
    pair.check_present(&m, 0);
    // Back in sync: it holds everything, as a failover shows.
    let w = Writer::start(pair.addrs, 52);
    std::thread::sleep(Duration::from_millis(1000));
    let killed = Instant::now();
    pair.kill(0);
    let took = pair.wait_promoted(1, killed);
    std::thread::sleep(Duration::from_millis(500));
    let m2 = w.finish();
    let epoch = pair.check_failover(&m2, 1, before);
    println!(
        "standby down: the primary went on alone ({} answers), the restarted standby caught up and was listed again; then promoted after {:.1} s, epoch {before} -> {epoch}",
        alone.len(),
        took.as_secs_f64()
    );
    println!("failovers: {}", pair.failovers);
}
