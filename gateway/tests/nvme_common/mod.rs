//! A Tandem node started in-process on free loopback ports, for the NVMe/TCP tests.
#![allow(dead_code)]

use std::net::SocketAddr;

use gateway::config::Config;
use gateway::frontends::Frontends;
use gateway::nvme::config::{NamespaceConfig, NvmePortalConfig, SubsystemConfig};
use gateway::volumes::Volumes;

/// A host NQN the tests connect with.
pub const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000aa";
/// Another host NQN.
pub const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000bb";
/// A configured subsystem that only admits HOST_A.
pub const LOCKED_NQN: &str = "nqn.2026-11.io.tandem:locked";

/// A running node.
pub struct Node {
    pub cfg: Config,
    pub vols: Volumes,
    pub fronts: Option<Frontends>,
    pub shutdown: gateway::shutdown::Shutdown,
    pub io: Vec<SocketAddr>,
    pub discovery: SocketAddr,
    _dir: tempfile::TempDir,
}

/// The default configuration on free ports, with `portals` I/O portals, a small volume, no
/// iSCSI, plus a subsystem exporting the same volume to HOST_A only.
pub fn config(dir: &std::path::Path, portals: usize) -> Config {
    let mut cfg = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    cfg.volumes[0].size = gateway::config::Size(64 << 20);
    cfg.volumes[0].wal_size = gateway::config::Size(16 << 20);
    cfg.iscsi.enabled = false;
    cfg.nvme.portals = (0..portals)
        .map(|_| NvmePortalConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise: None,
        })
        .collect();
    cfg.nvme.discovery_listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.nvme.subsystems.push(SubsystemConfig {
        nqn: LOCKED_NQN.into(),
        serial: None,
        allowed_hosts: Some(vec![HOST_A.into()]),
        namespaces: vec![NamespaceConfig {
            nsid: 1,
            volume: "default".into(),
        }],
        any_host: false,
    });
    cfg
}

impl Node {
    /// Starts a node with `config(dir, portals)` changed by `edit`.
    pub async fn start(portals: usize, edit: impl FnOnce(&mut Config)) -> Node {
        Node::start_in(tempfile::tempdir().unwrap(), portals, edit).await
    }

    /// Starts a node keeping its volumes in `dir` (a restart of an earlier node).
    pub async fn start_in(
        dir: tempfile::TempDir,
        portals: usize,
        edit: impl FnOnce(&mut Config),
    ) -> Node {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut cfg = config(dir.path(), portals);
        edit(&mut cfg);
        cfg.validate().unwrap();
        let vols = gateway::volumes::open_all(&cfg).await.unwrap();
        let shutdown = tokio::sync::watch::channel(false).0;
        let fronts = gateway::frontends::start(&cfg, &vols, shutdown.clone())
            .await
            .unwrap();
        let n = fronts.nvme.as_ref().unwrap();
        let io = n.bound.clone();
        let discovery = n.discovery_bound[0];
        Node {
            cfg,
            vols,
            fronts: Some(fronts),
            shutdown,
            io,
            discovery,
            _dir: dir,
        }
    }

    /// The shared NVMe state.
    pub fn nvme(&self) -> &gateway::nvme::NvmeShared {
        &self.fronts.as_ref().unwrap().nvme.as_ref().unwrap().shared
    }

    /// Signals shutdown, waits for every connection and listener, closes the volumes.
    pub async fn stop(self) {
        self.stop_keeping_data().await;
    }

    /// Stops like [`Node::stop`] and hands back the data directory for a restart.
    pub async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        let _ = self.shutdown.send(true);
        if let Some(f) = self.fronts.take() {
            f.join().await;
        }
        gateway::volumes::close_all(&self.vols).await;
        self._dir
    }

    /// The logical unit (and reservation state) of volume `name`.
    pub fn lu(&self, name: &str) -> std::sync::Arc<gateway::lu::LuHandle> {
        self.fronts.as_ref().unwrap().lus[name].clone()
    }
}
