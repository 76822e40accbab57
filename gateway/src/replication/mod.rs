//! Replication between two `tandem serve` nodes: the I/O driver around the sans-IO state
//! machines of [`blockstore::repl`].
//!
//! A volume whose configuration names a `peer` is replicated. On the node where it is primary,
//! a task ([`primary`]) dials the peer and ships the log; flushes and FUA writes wait in a
//! [`gate::Gate`] until the standby has them durable (synchronous replication, the only mode).
//! On the standby node the replication listener ([`standby`]) accepts the primary and applies
//! what it ships. Which side a node takes is decided by the volume's configured `role`.
//! Not here yet (later steps of issue 12): planned switchover, and the driver following a role
//! change made at run time (after `promote`, the promoted node does not start shipping to the
//! old primary).

pub mod gate;
pub mod node;
pub mod primary;
pub mod standby;
pub mod state;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use blockstore::repl::primary::PrimaryConfig;

use crate::config::{Config, VolumeRole};
use crate::volumes::Volumes;
use state::{StatusCell, SyncName};

/// Replication status of every replicated volume, by name (what status and the admin API
/// show).
pub type Statuses = Arc<BTreeMap<String, Arc<StatusCell>>>;

/// The running replication of a node.
pub struct Replication {
    /// Per-volume status.
    pub statuses: Statuses,
    /// The listener's bound address, when one runs.
    pub listening: Option<std::net::SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// Starts replication for every volume that names a peer: the listener (when any does) and a
/// shipping task per volume this node holds as primary. Nothing runs for a single node.
pub async fn start(cfg: &Config, vols: &Volumes) -> Result<Replication, String> {
    let stop = tokio::sync::watch::channel(false).0;
    let mut r = Replication {
        statuses: Arc::new(BTreeMap::new()),
        listening: None,
        tasks: Vec::new(),
        stop,
    };
    if !cfg.replicated() {
        return Ok(r);
    }
    let node_id = node::load_or_create(cfg.node.id.as_deref(), &cfg.data_dir)?;
    let timeout = Duration::from_millis(cfg.replication.timeout_ms);
    let mut statuses = BTreeMap::new();
    let mut receivable = BTreeMap::new();
    for v in &cfg.volumes {
        let (Some(peer), Some(served)) = (&v.peer, vols.get(&v.name)) else {
            continue;
        };
        let engine = served.volume.engine().clone();
        match v.role {
            VolumeRole::Primary => {
                let status = Arc::new(StatusCell::new(peer, "primary", Some(SyncName::OutOfSync)));
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let gate = Arc::new(gate::Gate::new(tx));
                engine.set_replica_gate(Some(gate.clone()));
                let pcfg = PrimaryConfig {
                    volume_uuid: engine.uuid(),
                    node_id,
                    block_size: engine.block_size(),
                    capacity_blocks: engine.capacity_blocks(),
                    timeout,
                };
                let task = primary::PrimaryTask::new(
                    v.name.clone(),
                    engine,
                    peer.clone(),
                    pcfg,
                    gate,
                    rx,
                    status.clone(),
                )
                .with_resync_rate(cfg.replication.resync_rate_bytes());
                r.tasks.push(tokio::spawn(task.run(r.stop.subscribe())));
                statuses.insert(v.name.clone(), status);
            }
            VolumeRole::Standby => {
                let status = Arc::new(StatusCell::new(peer, "standby", None));
                receivable.insert(
                    engine.uuid(),
                    Arc::new(standby::StandbyVolume::new(
                        v.name.clone(),
                        engine,
                        status.clone(),
                    )),
                );
                statuses.insert(v.name.clone(), status);
            }
        }
    }
    let listener = crate::net::bind(cfg.replication.listen)
        .map_err(|e| format!("replication listener {}: {e}", cfg.replication.listen))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%bound, node_id = %hex::encode(node_id), "replication listening");
    r.listening = Some(bound);
    r.tasks.push(tokio::spawn(standby::accept_loop(
        listener,
        Arc::new(receivable),
        node_id,
        r.stop.subscribe(),
    )));
    r.statuses = Arc::new(statuses);
    Ok(r)
}

impl Replication {
    /// Stops every replication task. Call it after the front ends drained: a flush still
    /// waiting then fails (the gates stay, failed, so nothing is acknowledged without the
    /// standby any more).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
