//! One `tandem serve` process for the gateway's tests that drive it through the `tandem` CLI:
//! volume `a` exported as LUN 0 of iSCSI target [`IQN_A`] and namespace 1 of NVMe subsystem
//! [`NQN_A`] (host [`HOST_A`] allowed), on its own loopback ports and data directory, killed
//! when dropped.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The iSCSI target exporting volume `a`.
pub const IQN_A: &str = "iqn.2026-11.io.tandem:a";
/// The NVMe subsystem exporting volume `a`.
pub const NQN_A: &str = "nqn.2026-11.io.tandem:a";
/// The host NQN the subsystem admits.
pub const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:0a0a0a0a-0000-4000-8000-00000000000a";

/// Runs an async test scenario to its end on a thread of its own with a 32 MiB stack and a
/// two-worker runtime (the scenarios' futures are large in a debug build), passing a panic on.
pub fn run_scenario<F, Fut>(scenario: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let t = std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(Box::pin(scenario()))
        })
        .unwrap();
    if let Err(panic) = t.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A free loopback port.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One `tandem serve` process on its own ports and data directory, killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The admin API.
    pub admin: SocketAddr,
    /// The iSCSI portal.
    pub iscsi: SocketAddr,
    /// The NVMe/TCP portal.
    pub nvme: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Daemon {
    /// Starts the daemon and waits until its admin API answers.
    pub fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let (admin, iscsi, nvme, disc) = (free_addr(), free_addr(), free_addr(), free_addr());
        let cfg = format!(
            r#"
data_dir = "{data}"
[admin]
listen = "{admin}"
[[volume]]
name = "a"
size = "16MiB"
wal_size = "4MiB"
[[iscsi.portal]]
listen = "{iscsi}"
[[iscsi.target]]
iqn = "{IQN_A}"
[[iscsi.target.lun]]
id = 0
volume = "a"
[nvme]
discovery_listen = ["{disc}"]
[[nvme.portal]]
listen = "{nvme}"
[[nvme.subsystem]]
nqn = "{NQN_A}"
allowed_hosts = ["{HOST_A}"]
[[nvme.subsystem.namespace]]
nsid = 1
volume = "a"
"#,
            data = dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("tandem.toml"), cfg).unwrap();
        let mut d = Daemon {
            child: None,
            dir,
            admin,
            iscsi,
            nvme,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("serve")
            .arg("--config")
            .arg(self.dir.path().join("tandem.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while gateway::status::fetch(self.admin).is_err() {
            assert!(Instant::now() < deadline, "did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the daemon with SIGTERM and starts it again.
    pub fn restart(&mut self) {
        let mut c = self.child.take().unwrap();
        assert!(Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap()
            .success());
        let _ = c.wait();
        self.spawn();
    }

    /// Its data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// `tandem ARGS --admin <it> --data-dir <its data>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(args)
            .arg("--admin")
            .arg(self.admin.to_string())
            .arg("--data-dir")
            .arg(self.data())
            .output()
            .unwrap()
    }

    /// Runs the CLI and expects success; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "tandem {args:?} failed: {text}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        text
    }

    /// Runs the CLI and expects a failure; returns its standard error.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "tandem {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    /// `tandem volume list --json`.
    pub fn doc(&self) -> gateway::status::VolumesDoc {
        let out = self.ok(&["volume", "list", "--json"]);
        serde_json::from_str(&out).unwrap()
    }

    /// The control plane's state file as it is now (empty if there is none).
    pub fn state(&self) -> String {
        std::fs::read_to_string(self.data().join("control-state.json")).unwrap_or_default()
    }
}
