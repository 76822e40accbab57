//! The live control plane end to end: a real `tandem serve` process changed only through the
//! `tandem` CLI (volume create|list|delete, export add|remove, host allow|deny, chap set|clear)
//! while hosts do I/O: the Rust NVMe/TCP initiator and a bare iSCSI session on volume `a` run
//! the whole time and must see no reconnect and no error while other volumes, exports, host
//! lists and credentials change; a host taken off a list is refused at its next login; a wrong
//! token is 401 and bad input a clear 4xx, both changing nothing; after a restart everything
//! set is still in place.

mod cli_daemon;
#[path = "iscsi_common/mod.rs"]
mod iscsi_common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cli_daemon::{Daemon, HOST_A, IQN_A, NQN_A};
use iscsi_common::RawSession;
use nvme_initiator::{Controller, HostOptions};

const IQN_B: &str = "iqn.2026-11.io.tandem:b";
const NQN_B: &str = "nqn.2026-11.io.tandem:b";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:0b0b0b0b-0000-4000-8000-00000000000b";
const INIT_1: &str = "iqn.2026-11.test:initiator-1";
const INIT_2: &str = "iqn.2026-11.test:initiator-2";

fn host(nqn: &str) -> HostOptions {
    HostOptions {
        hostnqn: nqn.into(),
        ..HostOptions::default()
    }
}

/// Host A's I/O on volume `a` over NVMe/TCP and an iSCSI session's reads of it, until told to
/// stop; any error or reconnect fails the test.
struct Background {
    stop: Arc<AtomicBool>,
    nvme_ops: Arc<AtomicU64>,
    iscsi_ops: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Background {
    async fn start(d: &Daemon) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let (nvme_ops, iscsi_ops) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let c = Controller::connect(d.nvme, NQN_A, &host(HOST_A))
            .await
            .unwrap();
        let (s, ops) = (Arc::clone(&stop), Arc::clone(&nvme_ops));
        let nvme = tokio::spawn(async move {
            let mut i = 0u64;
            while !s.load(Ordering::Acquire) {
                let lba = i % 64;
                let data = Bytes::from(vec![(i % 251) as u8; 512]);
                c.write(0, 1, lba, data.clone(), 512, false)
                    .await
                    .map_err(|e| format!("host A write: {e}"))?;
                let back = c
                    .read(0, 1, lba, 1, 512)
                    .await
                    .map_err(|e| format!("host A read: {e}"))?;
                if back != data {
                    return Err(format!("host A read back other data at {lba}"));
                }
                i += 1;
                ops.store(i, Ordering::Release);
            }
            Ok(())
        });
        let mut session = RawSession::login(d.iscsi, IQN_A, INIT_1).await;
        // The first command of a new nexus may report its power-on unit attention.
        let _ = session.read_block().await;
        let (s, ops) = (Arc::clone(&stop), Arc::clone(&iscsi_ops));
        let iscsi = tokio::spawn(async move {
            let mut i = 0;
            while !s.load(Ordering::Acquire) {
                let status = session.read_block().await;
                if status != 0 {
                    return Err(format!("iSCSI read {i} of volume a: status {status:#x}"));
                }
                i += 1;
                ops.store(i, Ordering::Release);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(())
        });
        Background {
            stop,
            nvme_ops,
            iscsi_ops,
            tasks: vec![nvme, iscsi],
        }
    }

    /// Waits until both hosts have done more I/O than when called.
    async fn progresses(&self) {
        let (n, i) = (
            self.nvme_ops.load(Ordering::Acquire),
            self.iscsi_ops.load(Ordering::Acquire),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.nvme_ops.load(Ordering::Acquire) <= n + 5
            || self.iscsi_ops.load(Ordering::Acquire) <= i + 5
        {
            assert!(
                Instant::now() < deadline,
                "the background hosts' I/O stalled"
            );
            for t in &self.tasks {
                assert!(!t.is_finished(), "a background host stopped early");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Release);
        for t in self.tasks {
            t.await.unwrap().unwrap();
        }
    }
}

/// Which volumes the node serves, by name.
fn names(d: &Daemon) -> Vec<String> {
    d.doc().volumes.into_iter().map(|v| v.name).collect()
}

#[test]
fn every_operation_applies_live_touches_no_other_host_and_survives_a_restart() {
    cli_daemon::run_scenario(scenario);
}

async fn scenario() {
    let mut d = Daemon::start();
    // The token was generated on first start, readable by the daemon's user only.
    let token_file = d.data().join("admin-token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let bg = Background::start(&d).await;
    bg.progresses().await;

    // A new volume, exported over both protocols on new targets and as a second namespace of
    // the subsystem host A is using.
    let out = d.ok(&["volume", "create", "b", "--size", "8MiB"]);
    assert!(out.contains("8388608"), "{out}");
    d.ok(&[
        "export",
        "add",
        "b",
        "--protocol",
        "iscsi",
        "--target",
        IQN_B,
    ]);
    d.ok(&[
        "export",
        "add",
        "b",
        "--protocol",
        "nvme",
        "--target",
        NQN_B,
    ]);
    let out = d.ok(&[
        "export",
        "add",
        "b",
        "--protocol",
        "nvme",
        "--target",
        NQN_A,
        "--id",
        "2",
    ]);
    assert!(out.contains(NQN_A) && out.contains(" 2"), "{out}");
    d.ok(&[
        "host",
        "allow",
        HOST_B,
        "--protocol",
        "nvme",
        "--target",
        NQN_B,
    ]);
    bg.progresses().await;
    let v = d.doc().volumes.into_iter().find(|v| v.name == "b").unwrap();
    assert_eq!(v.exports.iscsi.len(), 1);
    assert_eq!(v.exports.nvme.len(), 2);

    // Host B reaches volume b over NVMe/TCP; an initiator logs in to target b.
    let b = Controller::connect(d.nvme, NQN_B, &host(HOST_B))
        .await
        .unwrap();
    let data = Bytes::from(vec![0xB5u8; 512]);
    b.write(0, 1, 9, data.clone(), 512, true).await.unwrap();
    assert_eq!(b.read(0, 1, 9, 1, 512).await.unwrap(), data);
    b.shutdown().await.ok();
    drop(b);
    let mut s = RawSession::login(d.iscsi, IQN_B, INIT_2).await;
    let _ = s.read_block().await;
    assert_eq!(s.read_block().await, 0);
    drop(s);
    // Host A is not allowed on subsystem b.
    assert!(Controller::connect(d.nvme, NQN_B, &host(HOST_A))
        .await
        .is_err());

    // Initiator lists: target b admits initiator 2 only once 1 is denied; SendTargets follows.
    d.ok(&[
        "host",
        "allow",
        INIT_1,
        "--protocol",
        "iscsi",
        "--target",
        IQN_B,
    ]);
    d.ok(&[
        "host",
        "allow",
        INIT_2,
        "--protocol",
        "iscsi",
        "--target",
        IQN_B,
    ]);
    RawSession::login(d.iscsi, IQN_B, INIT_1).await;
    d.ok(&[
        "host",
        "deny",
        INIT_1,
        "--protocol",
        "iscsi",
        "--target",
        IQN_B,
    ]);
    let refused = RawSession::try_login(d.iscsi, IQN_B, INIT_1).await.err();
    assert_eq!(
        refused,
        Some((0x02, 0x02)),
        "initiator 1 is refused at its next login"
    );
    RawSession::login(d.iscsi, IQN_B, INIT_2).await;
    // The last initiator cannot be denied (the target would admit anyone).
    let e = d.fails(&[
        "host",
        "deny",
        INIT_2,
        "--protocol",
        "iscsi",
        "--target",
        IQN_B,
    ]);
    assert!(e.contains("409") && e.contains("last initiator"), "{e}");
    // NVMe: host B denied on subsystem b cannot connect again.
    d.ok(&[
        "host",
        "deny",
        HOST_B,
        "--protocol",
        "nvme",
        "--target",
        NQN_B,
    ]);
    assert!(Controller::connect(d.nvme, NQN_B, &host(HOST_B))
        .await
        .is_err());
    d.ok(&[
        "host",
        "allow",
        HOST_B,
        "--protocol",
        "nvme",
        "--target",
        NQN_B,
    ]);
    bg.progresses().await;

    // CHAP on target b: a login without it is refused; cleared, it is admitted again.
    d.ok(&[
        "chap",
        "set",
        "--target",
        IQN_B,
        "--username",
        "u",
        "--secret",
        "chap-secret-0123",
    ]);
    assert!(RawSession::try_login(d.iscsi, IQN_B, INIT_2).await.is_err());
    d.ok(&["chap", "clear", "--target", IQN_B]);
    RawSession::login(d.iscsi, IQN_B, INIT_2).await;
    // DH-HMAC-CHAP for host B: without the secret it cannot connect, with it it can.
    let secret = proto_nvmeof::auth::DhchapSecret {
        transform: None,
        key: vec![0x42; 32],
    }
    .to_text();
    d.ok(&["chap", "set", "--host", HOST_B, "--dhchap-secret", &secret]);
    assert!(Controller::connect(d.nvme, NQN_B, &host(HOST_B))
        .await
        .is_err());
    let with = HostOptions {
        dhchap_secret: Some(secret.clone()),
        ..host(HOST_B)
    };
    let b = Controller::connect(d.nvme, NQN_B, &with).await.unwrap();
    assert_eq!(b.read(0, 1, 9, 1, 512).await.unwrap(), data);

    // Removing an export of a volume host A does not use, from the subsystem it uses.
    d.ok(&[
        "export",
        "remove",
        "b",
        "--protocol",
        "nvme",
        "--target",
        NQN_A,
    ]);
    bg.progresses().await;

    // Snapshots of volume b: taken while host B is attached, rollback refused while it is.
    d.ok(&["snapshot", "create", "b", "s1"]);
    let later = Bytes::from(vec![0xC6u8; 512]);
    b.write(0, 1, 9, later.clone(), 512, true).await.unwrap();
    let list = d.ok(&["snapshot", "list", "b", "--json"]);
    let snaps: Vec<gateway::control::snapshots::SnapshotStatus> =
        serde_json::from_str(&list).unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(
        (snaps[0].name.as_str(), snaps[0].size_bytes),
        ("s1", 8 << 20)
    );
    let e = d.fails(&["snapshot", "rollback", "b", "s1"]);
    assert!(e.contains("409") && e.contains("attached"), "{e}");
    b.shutdown().await.ok();
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d
        .doc()
        .volumes
        .iter()
        .any(|v| v.name == "b" && !v.hosts.nvme.is_empty())
    {
        assert!(Instant::now() < deadline, "host B never left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A clone of s1 (taken before the later write) holds the old block, and diverges from its
    // origin without touching it.
    d.ok(&["clone", "b", "s1", "c"]);
    d.ok(&[
        "export",
        "add",
        "c",
        "--protocol",
        "nvme",
        "--target",
        NQN_B,
        "--id",
        "3",
    ]);
    let c = Controller::connect(d.nvme, NQN_B, &with).await.unwrap();
    assert_eq!(
        c.read(0, 3, 9, 1, 512).await.unwrap(),
        data,
        "the clone is the snapshot"
    );
    let own = Bytes::from(vec![0xD7u8; 512]);
    c.write(0, 3, 9, own.clone(), 512, true).await.unwrap();
    assert_eq!(c.read(0, 3, 9, 1, 512).await.unwrap(), own);
    assert_eq!(
        c.read(0, 1, 9, 1, 512).await.unwrap(),
        later,
        "the origin is untouched"
    );
    c.shutdown().await.ok();
    drop(c);
    let e = d.fails(&["snapshot", "delete", "b", "s1"]);
    assert!(e.contains("409"), "a snapshot with a clone: {e}");
    d.ok(&["snapshot", "rollback", "b", "s1"]);
    let b = Controller::connect(d.nvme, NQN_B, &with).await.unwrap();
    assert_eq!(b.read(0, 1, 9, 1, 512).await.unwrap(), data, "rolled back");
    assert_eq!(
        b.read(0, 3, 9, 1, 512).await.unwrap(),
        own,
        "the clone keeps its own"
    );
    b.shutdown().await.ok();
    drop(b);
    let e = d.fails(&["snapshot", "create", "b", "s 1"]);
    assert!(e.contains("400") && e.contains("snapshot name"), "{e}");
    let e = d.fails(&["snapshot", "create", "nope", "s1"]);
    assert!(e.contains("404"), "{e}");
    bg.progresses().await;

    // A wrong token is 401 and changes nothing.
    let before = d.state();
    let bad = d.data().with_file_name("bad-token");
    std::fs::write(&bad, "not-the-token\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["volume", "create", "x", "--size", "1MiB", "--admin"])
        .arg(d.admin.to_string())
        .arg("--token-file")
        .arg(&bad)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("401"), "{e}");
    // Bad input: a clear 4xx each, nothing changed.
    for (args, code, words) in [
        (
            &["volume", "create", "bad name", "--size", "1MiB"][..],
            "400",
            "volume name",
        ),
        (
            &["volume", "create", "x", "--size", "1000"][..],
            "400",
            "multiple",
        ),
        (
            &["volume", "create", "b", "--size", "1MiB"][..],
            "409",
            "exists already",
        ),
        (
            &["volume", "delete", "b"][..],
            "409",
            "clones of its snapshots",
        ),
        (&["volume", "delete", "nope"][..], "404", "no volume"),
        (
            &["export", "add", "nope", "--protocol", "iscsi"][..],
            "404",
            "no volume",
        ),
        (
            &[
                "export",
                "add",
                "b",
                "--protocol",
                "nvme",
                "--target",
                NQN_A,
                "--id",
                "1",
            ][..],
            "409",
            "already",
        ),
        (
            &[
                "host",
                "allow",
                "host1",
                "--protocol",
                "iscsi",
                "--target",
                IQN_B,
            ][..],
            "400",
            "not an iqn",
        ),
        (
            &[
                "chap",
                "set",
                "--host",
                HOST_B,
                "--dhchap-secret",
                "DHHC-1:09:AAAA:",
            ][..],
            "400",
            "dhchap_secret",
        ),
    ] {
        let e = d.fails(args);
        assert!(e.contains(code) && e.contains(words), "{args:?}: {e}");
    }
    assert_eq!(
        d.state(),
        before,
        "refused requests changed the saved state"
    );
    assert_eq!(names(&d), ["a", "b", "c"]);
    bg.progresses().await;
    bg.finish().await;

    // A restart keeps everything.
    d.restart();
    let doc = d.doc();
    let b_status = doc.volumes.iter().find(|v| v.name == "b").unwrap();
    assert_eq!(b_status.size_bytes, 8 << 20);
    assert_eq!(b_status.exports.iscsi[0].target, IQN_B);
    assert_eq!(b_status.exports.nvme.len(), 1);
    assert_eq!(names(&d), ["a", "b", "c"]);
    assert_eq!(b_status.exports.nvme[0].subsystem, NQN_B);
    assert_eq!(
        RawSession::try_login(d.iscsi, IQN_B, INIT_1).await.err(),
        Some((0x02, 0x02))
    );
    RawSession::login(d.iscsi, IQN_B, INIT_2).await;
    assert!(Controller::connect(d.nvme, NQN_B, &host(HOST_B))
        .await
        .is_err());
    let b = Controller::connect(d.nvme, NQN_B, &with).await.unwrap();
    assert_eq!(
        b.read(0, 1, 9, 1, 512).await.unwrap(),
        data,
        "volume b's data"
    );
    b.shutdown().await.ok();
    drop(b);

    // The clone opened on its origin at start: its own block, and then it goes; only then
    // can its snapshot go.
    let c = Controller::connect(d.nvme, NQN_B, &with).await.unwrap();
    assert_eq!(
        c.read(0, 3, 9, 1, 512).await.unwrap(),
        own,
        "the clone after the restart"
    );
    c.shutdown().await.ok();
    drop(c);
    let e = d.fails(&["volume", "delete", "b", "--force"]);
    assert!(e.contains("409") && e.contains("clones"), "{e}");
    d.ok(&["volume", "delete", "c", "--force"]);
    // The clone's hold on the snapshot ends with its last user (a closing connection may
    // still hold it for a moment).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.cli(&["snapshot", "delete", "b", "s1"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "snapshot s1 never freed by its deleted clone"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(d.ok(&["snapshot", "list", "b", "--json"]).trim() == "[]");

    // Deleting: forced, with its exports; its files go too.
    let out = d.ok(&["volume", "delete", "b", "--force"]);
    assert!(out.contains("exports removed"), "{out}");
    assert!(!d.data().join("b").exists());
    assert_eq!(names(&d), ["a"]);
    assert!(
        RawSession::try_login(d.iscsi, IQN_B, INIT_2).await.is_ok(),
        "the target stays, empty"
    );
    d.restart();
    assert_eq!(names(&d), ["a"]);
    let table = d.ok(&["volume", "list"]);
    assert!(table.contains("VOLUME") && table.contains(IQN_A), "{table}");
}

#[test]
fn the_cli_finds_no_token_and_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "volume",
            "delete",
            "x",
            "--admin",
            "127.0.0.1:9",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains(
            &Path::new(dir.path())
                .join("admin-token")
                .display()
                .to_string()
        ),
        "{e}"
    );
}
