//! Replication between two real `tandem serve` processes on loopback: a primary and a standby
//! of one volume. A writer on the primary (the Rust NVMe/TCP initiator) writes recognisable
//! blocks and flushes; the primary is killed with SIGKILL at a random moment; the standby is
//! promoted with `tandem volume promote`; every flush the writer saw acknowledged must be on
//! it. And a flush while the standby is stopped (SIGSTOP) completes only after the replication
//! timeout, once the primary recorded the standby out of sync (shown by the admin API).
//!
//! `TANDEM_REPL_ROUNDS` sets the number of kill -9 rounds (default 10; one process pair each).

mod repl_common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::status::{self, VolumesDoc};
use nvme_initiator::Controller;
use rand::{Rng, SeedableRng};
use repl_common::{block, identify, signal, Model, Node, BS, SPAN};

/// The admin API's view of `node`.
fn doc(node: &Node) -> VolumesDoc {
    status::fetch(node.admin).unwrap()
}

/// Waits until the admin API shows the volume's replication sync state `want`.
fn wait_sync_state(node: &Node, want: &str, within: Duration) {
    node.wait(want, within, |v| {
        v.replication
            .as_ref()
            .and_then(|r| r.sync_state)
            .is_some_and(|s| s.as_str() == want)
    });
}

/// A primary and its standby on fresh ports and data directories, the standby in sync, as
/// the admin API describes them.
fn pair(timeout_ms: u64) -> (Node, Node) {
    let (primary, standby) = repl_common::pair(timeout_ms);
    let d = doc(&primary);
    let r = d.volumes[0]
        .replication
        .as_ref()
        .expect("replication status");
    assert_eq!(r.peer, standby.repl.to_string());
    assert_eq!(r.mode, "sync");
    assert_eq!(doc(&standby).volumes[0].role, "standby");
    (primary, standby)
}

async fn connect(addr: std::net::SocketAddr) -> Controller {
    repl_common::connect(addr).await.unwrap()
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
        .arg("--token-file")
        .arg(&node.token)
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
        let doc = doc(&standby);
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
fn a_write_waits_for_a_stopped_standby_until_the_timeout_then_goes_on_out_of_sync() {
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
        // A plain write completes only once the standby received it: it waits out the
        // timeout (a flush would too), until the standby is recorded out of sync.
        let t = Instant::now();
        c.write(0, 1, 4, Bytes::from(block(2, 4)), BS, false)
            .await
            .unwrap();
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(1000),
            "the write completed after {waited:?}, before the replication timeout"
        );
        assert!(waited < Duration::from_secs(10), "waited {waited:?}");
        assert_eq!(primary.sync_state().as_deref(), Some("out_of_sync"));
        let metrics = status::get(primary.admin, "/metrics").unwrap();
        assert!(
            metrics.contains("tandem_volume_replication_in_sync{volume=\"default\"} 0"),
            "{metrics}"
        );
        // Out of sync, writes and flushes no longer wait for it.
        let t = Instant::now();
        c.write(0, 1, 5, Bytes::from(block(3, 5)), BS, false)
            .await
            .unwrap();
        c.flush(0, 1).await.unwrap();
        assert!(t.elapsed() < Duration::from_millis(1000));
        // Continued, the standby catches up and counts again.
        assert!(signal(&standby.child, "CONT"));
    });
    wait_sync_state(&primary, "in_sync", Duration::from_secs(30));
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
    // Operator errors are JSON with a 4xx status; without the token nothing changes (401).
    let token = gateway::token::read(&standby.token).unwrap();
    let e = status::post(standby.admin, "/v1/volumes/nope/promote", Some(&token))
        .unwrap_err()
        .to_string();
    assert!(e.contains("404") && e.contains("no volume"), "{e}");
    let e = status::post(standby.admin, "/v1/volumes/default/demote", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("401") && e.contains("bearer token"), "{e}");
    let e = status::post(standby.admin, "/v1/volumes/default/demote", Some("wrong"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("401"), "{e}");
    assert_eq!(
        doc(&standby).volumes[0].role,
        "primary",
        "a refused demote changes nothing"
    );
    primary.restart();
    // Its handshake meets epoch 2: it stops serving and persists that it is stale.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = doc(&primary).volumes[0].clone();
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

/// A standby that holds records past the end of its primary's log (the primary lost them: here
/// its whole data directory, as after a disk replacement, so it starts again at LSN 1 with the
/// same volume) must not be taken as caught up: the LSNs the primary writes next name other
/// data, and a standby skipping them as already held would silently miss acknowledged writes.
/// The primary rebuilds it by full resync; both images end equal.
#[test]
fn a_standby_ahead_of_its_primarys_log_is_rebuilt_not_trusted() {
    let (mut primary, mut standby) = pair(10_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = connect(primary.nvme).await;
        for lba in 0..64 {
            c.write(0, 1, lba, Bytes::from(block(1, lba)), BS, false)
                .await
                .unwrap();
        }
        c.flush(0, 1).await.unwrap();
    });
    primary.wipe_data();
    primary.restart();
    rt.block_on(async {
        let c = connect(primary.nvme).await;
        for lba in 0..8 {
            c.write(0, 1, lba, Bytes::from(block(2, lba)), BS, false)
                .await
                .unwrap();
        }
        c.flush(0, 1).await.unwrap();
    });
    wait_sync_state(&primary, "in_sync", Duration::from_secs(30));
    // One more flush once in sync, so the standby's last barrier covers the whole log.
    rt.block_on(async {
        let c = connect(primary.nvme).await;
        c.write(0, 1, 100, Bytes::from(block(3, 100)), BS, false)
            .await
            .unwrap();
        c.flush(0, 1).await.unwrap();
    });
    assert!(
        primary.log().contains("its image diverged"),
        "{}",
        primary.log()
    );
    let (p, s) = (primary.image(false), standby.image(true));
    for lba in 0..SPAN {
        let at = |img: &[u8]| img[(lba * u64::from(BS)) as usize..][..BS as usize].to_vec();
        assert_eq!(
            identify(&at(&s), lba),
            identify(&at(&p), lba),
            "block {lba}: the standby differs from its primary"
        );
    }
}
