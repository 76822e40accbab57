//! Online resize against a real `tandem serve`, driven by `tandem volume resize`:
//!
//! - a grow while an NVMe/TCP host writes and reads: two raw iSCSI sessions (two I_T nexuses)
//!   each get unit attention 2A/09 once and READ CAPACITY answers the new size; the NVMe host,
//!   which enabled Namespace Attribute Notices, gets the AEN, the Changed Namespace List lists
//!   the namespace and Identify Namespace shows the new NSZE/NCAP/NUSE; the new blocks serve;
//! - the new size survives SIGKILL; a smaller configured size at start is refused (the volume
//!   keeps its size), a larger one grows it;
//! - shrinking: refused without --force, refused with --force on an exported volume, done on
//!   an unexported one; bad sizes and unknown volumes get clear errors and change nothing;
//! - a replicated volume is refused.

mod raw_iscsi;

use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::nvme::config::DEFAULT_NQN;
use gateway::status::{self, VolumeStatus};
use nvme_initiator::{Controller, Data, HostOptions};
use proto_nvmeof::Sqe;
use raw_iscsi::Raw;

const BS: u64 = 512;
const MIB: u64 = 1 << 20;
const IQN: &str = "iqn.2026-11.io.tandem:resize";

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A `tandem serve` process (killed on drop) with volume `default` exported over iSCSI and
/// NVMe/TCP and volume `spare` exported nowhere.
struct Daemon {
    child: Child,
    admin: SocketAddr,
    iscsi: SocketAddr,
    nvme: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(dir: tempfile::TempDir, default_size: &str, extra: &str) -> Daemon {
        let (admin, iscsi, nvme) = (free_addr(), free_addr(), free_addr());
        let cfg = dir.path().join("tandem.toml");
        std::fs::write(
            &cfg,
            format!(
                "data_dir = \"{data}\"\n\
                 [[volume]]\nname = \"default\"\nsize = \"{default_size}\"\nblock_size = 512\n\
                 wal_size = \"4MiB\"\n\
                 [[volume]]\nname = \"spare\"\nsize = \"8MiB\"\nblock_size = 512\n\
                 wal_size = \"1MiB\"\n{extra}\n\
                 [iscsi]\nenabled = true\n[[iscsi.portal]]\nlisten = \"{iscsi}\"\ntpgt = 1\n\
                 [[iscsi.target]]\niqn = \"{IQN}\"\n[[iscsi.target.lun]]\nid = 0\n\
                 volume = \"default\"\n\
                 [nvme]\nenabled = true\ndiscovery_listen = []\n[[nvme.portal]]\n\
                 listen = \"{nvme}\"\n\
                 [admin]\nlisten = \"{admin}\"\n",
                data = dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            admin,
            iscsi,
            nvme,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while status::get(d.admin, "/readyz").is_err() {
            assert!(
                Instant::now() < deadline,
                "the daemon never became ready: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// SIGKILL, then the same data directory with a new configuration.
    fn kill_and_restart(mut self, default_size: &str) -> Daemon {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().unwrap();
        let old = std::mem::replace(&mut self.dir, dir);
        drop(self);
        Daemon::start(old, default_size, "")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn volume(&self, name: &str) -> VolumeStatus {
        status::fetch(self.admin)
            .unwrap()
            .volumes
            .into_iter()
            .find(|v| v.name == name)
            .unwrap()
    }

    /// `tandem volume resize ARGS... --admin ADDR`.
    fn resize(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["volume", "resize"])
            .args(args)
            .args(["--admin", &self.admin.to_string()])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .output()
            .unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn resize(d: &Daemon, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let admin = d.admin;
    let data = d.dir.path().join("data");
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["volume", "resize"])
            .args(&args)
            .args(["--admin", &admin.to_string()])
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn rc16() -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x9E;
    c[1] = 0x10;
    c[13] = 32;
    c
}

fn read10(lba: u32) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x28;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[8] = 1;
    c
}

/// Key, ASC and ASCQ of fixed-format sense data.
fn sense_code(sense: &[u8]) -> (u8, u8, u8) {
    assert!(sense.len() >= 14, "sense {sense:?}");
    (sense[2] & 0x0F, sense[12], sense[13])
}

async fn last_lba(s: &mut Raw, itt: u32) -> u64 {
    let (st, data, sense) = s.run_sense(itt, &rc16(), 32).await;
    assert_eq!(st, 0, "READ CAPACITY (16): sense {sense:?}");
    u64::from_be_bytes(data[..8].try_into().unwrap())
}

#[test]
fn grow_under_io_reaches_every_iscsi_nexus_and_the_nvme_host() {
    // The test's future is large in a debug build: run it on a thread with room for it.
    std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(grow_under_io())
        })
        .unwrap()
        .join()
        .unwrap();
}

async fn grow_under_io() {
    let d =
        tokio::task::spawn_blocking(|| Daemon::start(tempfile::tempdir().unwrap(), "16MiB", ""))
            .await
            .unwrap();
    let old_blocks = 16 * MIB / BS;
    let new_blocks = 32 * MIB / BS;

    // Two I_T nexuses.
    let mut s1 = Raw::login(
        d.iscsi,
        IQN,
        "iqn.2026-11.test:resize-a",
        [0x80, 0, 0, 0, 0, 1],
    )
    .await;
    let mut s2 = Raw::login(
        d.iscsi,
        IQN,
        "iqn.2026-11.test:resize-b",
        [0x80, 0, 0, 0, 0, 2],
    )
    .await;
    s1.clear_unit_attentions(100).await;
    s2.clear_unit_attentions(100).await;
    assert_eq!(last_lba(&mut s1, 1).await, old_blocks - 1);

    // The NVMe host: Namespace Attribute Notices enabled, an AER outstanding.
    let c = Arc::new(
        Controller::connect(d.nvme, DEFAULT_NQN, &HostOptions::default())
            .await
            .unwrap(),
    );
    let oaes = u32::from_le_bytes(
        c.identify_raw(1, 0).await.unwrap()[92..96]
            .try_into()
            .unwrap(),
    );
    assert_ne!(
        oaes & (1 << 8),
        0,
        "OAES advertises namespace attribute notices"
    );
    let mut aec = Sqe::new(0x09, 0);
    aec.set_cdw(10, 0x0B);
    aec.set_cdw(11, 1 << 8);
    c.admin.submit(aec, Data::None).await.unwrap().ok().unwrap();
    let admin = Arc::clone(&c.admin);
    let aer = tokio::spawn(async move { admin.submit(Sqe::new(0x0C, 0), Data::None).await });
    assert_eq!(c.identify_namespace(1).await.unwrap().nsze, old_blocks);

    // A writer runs through the resize.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writer = {
        let (c, stop, done) = (Arc::clone(&c), Arc::clone(&stop), Arc::clone(&done));
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let lba = i % 1024;
                let data = Bytes::from(vec![(i % 251) as u8; BS as usize]);
                c.write(0, 1, lba, data.clone(), BS as u32, i.is_multiple_of(8))
                    .await
                    .expect("write during the resize");
                let back = c.read(0, 1, lba, 1, BS as u32).await.expect("read");
                assert_eq!(back, data);
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let out = resize(&d, &["default", "32MiB"]).await;
    assert!(out.status.success(), "{}{}", text(&out.stderr), d.log());
    assert!(
        text(&out.stdout).contains(&format!("resized from {} to {}", 16 * MIB, 32 * MIB)),
        "{}",
        text(&out.stdout)
    );
    let before = done.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // NVMe: the event, the log page, Identify, the new blocks.
    let cqe = tokio::time::timeout(Duration::from_secs(10), aer)
        .await
        .expect("no AEN within 10 s")
        .unwrap()
        .unwrap()
        .ok()
        .unwrap()
        .cqe;
    assert_eq!(
        cqe.dw0(),
        0x0004_0002,
        "notice, namespace attribute changed, log 04h"
    );
    let log = c.log_page(0x04, 0, 0, 4096).await.unwrap();
    assert_eq!(
        &log[..8],
        &[1, 0, 0, 0, 0, 0, 0, 0],
        "the Changed Namespace List lists NSID 1"
    );
    let id = c.identify_raw(0, 1).await.unwrap();
    let le = |o: usize| u64::from_le_bytes(id[o..o + 8].try_into().unwrap());
    assert_eq!((le(0), le(8), le(16)), (new_blocks, new_blocks, new_blocks));
    let tail = Bytes::from(vec![0xA5; BS as usize]);
    c.write(0, 1, new_blocks - 1, tail.clone(), BS as u32, true)
        .await
        .unwrap();
    assert_eq!(
        c.read(0, 1, new_blocks - 1, 1, BS as u32).await.unwrap(),
        tail
    );

    // iSCSI: 2A/09 once on each nexus, on whatever command comes first; then the new size.
    let (st, _, sense) = s1.run_sense(2, &[0; 6], 0).await;
    assert_eq!((st, sense_code(&sense)), (2, (6, 0x2A, 0x09)));
    assert_eq!(s1.run_sense(3, &[0; 6], 0).await.0, 0, "reported once");
    assert_eq!(last_lba(&mut s1, 4).await, new_blocks - 1);
    let (st, _, sense) = s2.run_sense(2, &read10(0), BS as u32).await;
    assert_eq!((st, sense_code(&sense)), (2, (6, 0x2A, 0x09)));
    let (st, data, _) = s2
        .run_sense(3, &read10(new_blocks as u32 - 1), BS as u32)
        .await;
    assert_eq!((st, data), (0, tail.to_vec()));

    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let total = done.load(Ordering::Relaxed);
    assert!(
        before > 0 && total > before,
        "the writer ran through the resize ({before}, {total})"
    );
    assert_eq!(d.volume("default").size_bytes, 32 * MIB);
    drop((s1, s2, c));

    // The new size survives SIGKILL; a smaller configured size does not shrink it.
    let d = tokio::task::spawn_blocking(move || {
        let d = d.kill_and_restart("16MiB");
        assert_eq!(d.volume("default").size_bytes, 32 * MIB);
        assert!(d.log().contains("shrinking is refused"), "{}", d.log());
        // A larger one grows it at start.
        let d = d.kill_and_restart("48MiB");
        assert_eq!(d.volume("default").size_bytes, 48 * MIB);
        assert!(
            d.log().contains("grown to the configured size"),
            "{}",
            d.log()
        );
        d
    })
    .await
    .unwrap();
    let mut s = Raw::login(
        d.iscsi,
        IQN,
        "iqn.2026-11.test:resize-a",
        [0x80, 0, 0, 0, 0, 3],
    )
    .await;
    s.clear_unit_attentions(100).await;
    assert_eq!(last_lba(&mut s, 1).await, 48 * MIB / BS - 1);
    let (st, data, _) = s
        .run_sense(2, &read10(new_blocks as u32 - 1), BS as u32)
        .await;
    assert_eq!(
        (st, data),
        (0, tail.to_vec()),
        "the block written past the old end is durable"
    );
}

#[test]
fn shrinking_and_bad_requests_are_refused_clearly() {
    let d = Daemon::start(tempfile::tempdir().unwrap(), "16MiB", "");

    // Exported: refused without --force, and with it.
    let out = d.resize(&["default", "8MiB"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    let out = d.resize(&["default", "8MiB", "--force"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("409") && err.contains("in use") && err.contains(IQN),
        "{err}"
    );
    assert_eq!(d.volume("default").size_bytes, 16 * MIB);

    // Bad input.
    let out = d.resize(&["default", "12XB"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("unknown size unit"));
    let out = d.resize(&["spare", "5000"]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("400") && err.contains("block size"),
        "{err}"
    );
    let out = d.resize(&["nosuch", "1GiB"]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("404"), "{err}");
    let token = gateway::token::read(&d.dir.path().join("data").join("admin-token")).unwrap();
    let e = status::post(d.admin, "/v1/volumes/spare/resize", Some(&token))
        .unwrap_err()
        .to_string();
    assert!(e.contains("400") && e.contains("size="), "{e}");
    // A size the file system cannot hold: refused, and the volume serves on at its size.
    let out = d.resize(&["spare", "16777215TiB"]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("409") && err.contains("refuses"),
        "{err}"
    );
    assert_eq!(d.volume("spare").size_bytes, 8 * MIB);

    // Unexported: shrunk with --force, then grown again (zeros past the old end).
    let out = d.resize(&["spare", "4MiB"]);
    assert!(!out.status.success());
    let out = d.resize(&["spare", "4MiB", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(d.volume("spare").size_bytes, 4 * MIB);
    let out = d.resize(&["spare", "4MiB", "--force"]);
    assert!(
        text(&out.stdout).contains("already"),
        "{}",
        text(&out.stdout)
    );
    let out = d.resize(&["spare", "6MiB"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let d = d.kill_and_restart("16MiB");
    // The configuration still says 8 MiB for `spare`: it grows back to that at start.
    assert_eq!(d.volume("spare").size_bytes, 8 * MIB);
}

#[test]
fn a_replicated_volume_grows_but_never_shrinks() {
    let peer = free_addr();
    let extra = format!(
        "[[volume]]\nname = \"mirrored\"\nsize = \"8MiB\"\nblock_size = 512\nwal_size = \"1MiB\"\n\
         peer = \"{peer}\"\nuuid = \"6c1f7a52-8a5e-4a8e-9d43-0b7f5d2e1c11\"\nrole = \"primary\"\n\
         [replication]\nlisten = \"{}\"\n",
        free_addr()
    );
    let d = Daemon::start(tempfile::tempdir().unwrap(), "16MiB", &extra);
    let out = d.resize(&["mirrored", "4MiB", "--force"]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("409") && err.contains("replicated"),
        "{err}"
    );
    assert_eq!(d.volume("mirrored").size_bytes, 8 * MIB);
    // Its standby is not there (never connected, so out of sync): the grow does not wait
    // for it, and reaches it from the log or the primary's Hello when it connects.
    let out = d.resize(&["mirrored", "16MiB"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(d.volume("mirrored").size_bytes, 16 * MIB);
}
