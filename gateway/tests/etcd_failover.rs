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

use gateway::status::{self, VolumeStatus};
use repl_common::{identify, read_span, signal, writer_from, Model, SPAN};

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

/// Waits until etcd says `leader` leads with `standby` in sync.
fn wait_led(url: &str, leader: &str, standby: &str, nodes: &[&Node]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let k = keys(url);
        if k.leader.as_deref() == Some(leader) && k.in_sync.iter().any(|s| s == standby) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "etcd never showed {leader} leading with {standby} in sync: leader {:?} in_sync {:?}\n{}",
            k.leader,
            k.in_sync,
            nodes.iter().map(|n| n.log()).collect::<Vec<_>>().join("\n-----\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the writer of round `round` on its own thread against both nodes until `stop` (its
/// write ids are its own: no two rounds write the same block content).
fn spawn_writer(
    nodes: [SocketAddr; 2],
    round: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Model> {
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(writer_from(nodes, round, round << 32, stop))
    })
}

/// Reads the writer's blocks from the node at `addr` and checks them: a block a flush of
/// this round covered holds that write or a newer one; any other block holds what it held
/// at the end of the previous round (`before`) or a write of this round. Returns the blocks.
fn check_all_flushes_present(m: &Model, addr: SocketAddr, before: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let blocks = rt.block_on(read_span(addr));
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

fn rounds() -> usize {
    std::env::var("TANDEM_ETCD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

#[test]
fn a_killed_primary_is_replaced_by_its_in_sync_standby_without_losing_a_flush() {
    let root = tempfile::tempdir().unwrap();
    let net = Net::create(1, 3);
    let (_etcd, url) = start_etcd(&net, 0, root.path());
    let mut nodes = [
        Node::start(&net, 1, 2, "primary", &url, root.path()),
        Node::start(&net, 2, 1, "standby", &url, root.path()),
    ];
    let ids = [nodes[0].node_id(), nodes[1].node_id()];
    let addrs = [nodes[0].nvme(), nodes[1].nvme()];
    let mut primary = 0;
    let mut last_epoch = 0;
    let mut content = vec![vec![0u8; repl_common::BS as usize]; SPAN as usize];
    let rounds = rounds();
    for round in 0..rounds {
        let (p, s) = (primary, 1 - primary);
        wait_led(&url, &ids[p], &ids[s], &[&nodes[0], &nodes[1]]);
        let before = keys(&url).epoch;
        assert!(before >= last_epoch, "epoch {before} after {last_epoch}");
        assert_eq!(nodes[p].vol().epoch, before);
        let stop = Arc::new(AtomicBool::new(false));
        let w = spawn_writer(addrs, round as u64, stop.clone());
        std::thread::sleep(Duration::from_millis(1500));
        let killed = Instant::now();
        assert!(signal(nodes[p].child(), "KILL"));
        nodes[p].proc = None;
        nodes[s].wait("promoted", Duration::from_secs(20), |v| {
            v.role == "primary" && v.access_state == "optimized"
        });
        let took = killed.elapsed();
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::SeqCst);
        let m = w.join().unwrap();
        assert!(m.fatal.is_empty(), "errors a host would see: {:?}", m.fatal);
        assert!(m.flushes_on[p] > 0 && m.flushes_on[s] > 0, "{m:?}");
        content = check_all_flushes_present(&m, addrs[s], &content);
        let k = keys(&url);
        assert!(k.epoch > before, "epoch {} after {before}", k.epoch);
        assert_eq!(k.leader.as_deref(), Some(ids[s].as_str()));
        assert_eq!(nodes[s].vol().epoch, k.epoch);
        last_epoch = k.epoch;
        println!(
            "round {}/{rounds}: node {p} killed, node {s} promoted after {:.1} s, epoch {before} -> {}, {} flushes acknowledged ({} retried errors)",
            round + 1,
            took.as_secs_f64(),
            k.epoch,
            m.flushes,
            m.retried.len()
        );
        // The old primary comes back: fenced by the newer epoch, then demoted by the
        // operator it follows as the next round's standby.
        nodes[p].spawn();
        nodes[p].wait("fenced", Duration::from_secs(20), |v| v.role == "stale");
        let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["volume", "demote", "default", "--admin"])
            .arg(nodes[p].admin().to_string())
            .arg("--data-dir")
            .arg(nodes[p].dir.join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "demote: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        primary = s;
    }
}

#[test]
fn a_paused_primary_acknowledges_nothing_once_its_lease_ran_out() {
    let root = tempfile::tempdir().unwrap();
    let net = Net::create(2, 3);
    let (_etcd, url) = start_etcd(&net, 0, root.path());
    let nodes = [
        Node::start(&net, 1, 2, "primary", &url, root.path()),
        Node::start(&net, 2, 1, "standby", &url, root.path()),
    ];
    let ids = [nodes[0].node_id(), nodes[1].node_id()];
    let addrs = [nodes[0].nvme(), nodes[1].nvme()];
    wait_led(&url, &ids[0], &ids[1], &[&nodes[0], &nodes[1]]);
    let before = keys(&url).epoch;
    let stop = Arc::new(AtomicBool::new(false));
    let w = spawn_writer(addrs, 7, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = Instant::now();
    assert!(signal(nodes[0].child(), "STOP"));
    nodes[1].wait("promoted", Duration::from_secs(20), |v| {
        v.role == "primary" && v.access_state == "optimized"
    });
    let took = stopped.elapsed();
    std::thread::sleep(Duration::from_millis(1000));
    let continued = Instant::now();
    assert!(signal(nodes[0].child(), "CONT"));
    nodes[0].wait("stale", Duration::from_secs(20), |v| v.role == "stale");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let m = w.join().unwrap();
    assert!(m.fatal.is_empty(), "errors a host would see: {:?}", m.fatal);
    // Its lease ended at the latest TTL - margin after the pause began.
    let lease_end = stopped + Duration::from_millis(TTL_S * 1000 - MARGIN_MS);
    let late: Vec<_> = m
        .ack_times
        .iter()
        .filter(|(node, at)| *node == 0 && *at >= lease_end)
        .map(|(_, at)| at.duration_since(stopped))
        .collect();
    assert!(
        late.is_empty(),
        "the paused primary acknowledged writes or flushes after its lease ran out (at {late:?} after the pause)\n{}",
        nodes[0].log()
    );
    assert!(m.flushes_on[1] > 0, "{m:?}");
    let zero = vec![vec![0u8; repl_common::BS as usize]; SPAN as usize];
    check_all_flushes_present(&m, addrs[1], &zero);
    let k = keys(&url);
    assert!(k.epoch > before);
    assert_eq!(k.leader.as_deref(), Some(ids[1].as_str()));
    assert!(nodes[0].vol().epoch < k.epoch || nodes[0].vol().role == "stale");
    println!(
        "paused primary: standby promoted {:.1} s after SIGSTOP, continued after {:.1} s, no write or flush acknowledged by it after its lease; epoch {before} -> {}; {} flushes",
        took.as_secs_f64(),
        continued.duration_since(stopped).as_secs_f64(),
        k.epoch,
        m.flushes
    );
}

#[test]
fn with_etcd_unreachable_the_primary_fences_itself_and_serves_again_once_it_is_back() {
    let root = tempfile::tempdir().unwrap();
    let net = Net::create(3, 3);
    let (_etcd, url) = start_etcd(&net, 0, root.path());
    let nodes = [
        Node::start(&net, 1, 2, "primary", &url, root.path()),
        Node::start(&net, 2, 1, "standby", &url, root.path()),
    ];
    let ids = [nodes[0].node_id(), nodes[1].node_id()];
    let addrs = [nodes[0].nvme(), nodes[1].nvme()];
    wait_led(&url, &ids[0], &ids[1], &[&nodes[0], &nodes[1]]);
    let before = keys(&url).epoch;
    let stop = Arc::new(AtomicBool::new(false));
    let w = spawn_writer(addrs, 11, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    let cut = Instant::now();
    net.link(0, false);
    // Past the lease (TTL) and more: the primary fenced itself, nobody was promoted.
    std::thread::sleep(Duration::from_millis(TTL_S * 1000 + 1500));
    let a = nodes[0].vol();
    let b = nodes[1].vol();
    let healed = Instant::now();
    net.link(0, true);
    assert_eq!(
        (a.role.as_str(), a.access_state.as_str()),
        ("primary", "transitioning"),
        "{}",
        nodes[0].log()
    );
    assert_eq!(b.role, "standby", "{}", nodes[1].log());
    // One node leads again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let k = keys(&url);
        let serving = (0..2).find(|i| {
            k.leader.as_deref() == Some(ids[*i].as_str())
                && nodes[*i].vol().access_state == "optimized"
        });
        if let Some(i) = serving {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "nobody leads after etcd came back\n{}\n-----\n{}",
            nodes[0].log(),
            nodes[1].log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::SeqCst);
    let m = w.join().unwrap();
    assert!(m.fatal.is_empty(), "errors a host would see: {:?}", m.fatal);
    // The last renewal was sent before the cut: the lease ended by TTL - margin after it.
    let fenced_by = cut + Duration::from_millis(TTL_S * 1000 - MARGIN_MS + 300);
    let late: Vec<_> = m
        .ack_times
        .iter()
        .filter(|(_, at)| *at >= fenced_by && *at < healed)
        .map(|(node, at)| (node, at.duration_since(cut)))
        .collect();
    assert!(
        late.is_empty(),
        "acknowledged while etcd was unreachable, after the lease had ended: {late:?}\n{}",
        nodes[0].log()
    );
    let zero = vec![vec![0u8; repl_common::BS as usize]; SPAN as usize];
    check_all_flushes_present(&m, addrs[leader], &zero);
    let k = keys(&url);
    assert!(k.epoch >= before);
    assert_eq!(nodes[leader].vol().epoch, k.epoch);
    println!(
        "etcd unreachable {:.1} s: the primary fenced itself (transitioning), nobody promoted; node {leader} leads again under epoch {} (was {before}); {} flushes",
        healed.duration_since(cut).as_secs_f64(),
        k.epoch,
        m.flushes
    );
}
