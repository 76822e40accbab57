//! Replication between two `tandem serve` nodes: the I/O driver around the sans-IO state
//! machines of [`blockstore::repl`].
//!
//! A volume whose configuration names a `peer` is replicated. Each such volume runs a small
//! supervisor ([`supervisor`]) that follows the volume's role as the engine's role machine
//! holds it (the single source of truth; the supervisor watches the engine's access state,
//! which every role change moves): while the volume is primary here it runs the shipping task
//! ([`primary`]), which dials the peer and ships the log, with flushes and FUA writes waiting
//! in a [`gate::Gate`] until the standby has them durable (synchronous replication, the only
//! mode). Whatever the role, the replication listener ([`standby`]) accepts the peer's
//! primary for the volume: a standby applies what it ships; a primary or a stale old primary
//! applies nothing but still meets the other side's epoch (an older one is answered with
//! `Fenced`, a newer one fences this node). So after `promote` the promoted node ships to
//! the old primary, and a demoted node follows, with no restart.
//!
//! Roles at start: the configured `role` is the role a volume is created with (first start);
//! afterwards the role and epoch persisted in the volume's superblock decide, whatever the
//! configuration says, and a node that restarts as an old primary is fenced by the first
//! newer epoch it meets. Planned switchover: [`switchover`].

pub mod gate;
pub mod handle;
pub mod in_sync;
pub mod node;
pub mod path_link;
pub mod primary;
pub mod standby;
pub mod standby_sync;
pub mod state;
pub mod supervisor;
pub mod switchover;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::volumes::Volumes;
pub use handle::Replicated;
use state::StatusCell;

/// Replication status of every replicated volume, by name (what status and the admin API
/// show).
pub type Statuses = Arc<BTreeMap<String, Arc<StatusCell>>>;

/// Every replicated volume's driver state, by name (what the operator's commands act on).
pub type Handles = Arc<BTreeMap<String, Arc<Replicated>>>;

/// The running replication of a node.
pub struct Replication {
    /// Per-volume status.
    pub statuses: Statuses,
    /// Per-volume driver state.
    pub handles: Handles,
    /// The listener's bound address, when one runs.
    pub listening: Option<std::net::SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// Starts replication for every volume that names a peer: the listener (when any does) and a
/// supervisor per volume. Nothing runs for a single node.
pub async fn start(
    cfg: &Config,
    vols: &Volumes,
    paths: &crate::paths::Paths,
) -> Result<Replication, String> {
    let stop = tokio::sync::watch::channel(false).0;
    let mut r = Replication {
        statuses: Arc::new(BTreeMap::new()),
        handles: Arc::new(BTreeMap::new()),
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
    let mut handles = BTreeMap::new();
    let mut receivable = BTreeMap::new();
    for v in &cfg.volumes {
        let (Some(peer), Some(served), Some(path)) =
            (&v.peer, vols.get(&v.name), paths.get(&v.name))
        else {
            continue;
        };
        let engine = served.volume.engine().clone();
        path.set_standby_sync(standby_sync::shown(&engine) == state::SyncName::InSync);
        let status = Arc::new(StatusCell::new(peer, "standby", None));
        status.update(|s| s.node_id = hex::encode(node_id));
        let receiver = Arc::new(standby::StandbyVolume::new(
            v.name.clone(),
            engine.clone(),
            status.clone(),
            path.clone(),
        ));
        receivable.insert(engine.uuid(), receiver.clone());
        let h = Arc::new(Replicated {
            name: v.name.clone(),
            engine,
            peer: peer.clone(),
            node_id,
            timeout,
            resync_rate: cfg.replication.resync_rate_bytes(),
            status: status.clone(),
            receiver,
            paths: path.clone(),
            shipping: tokio::sync::watch::channel(false).0,
            in_sync: Arc::new(in_sync::InSyncSlot::new(!cfg.cluster.etcd.is_empty())),
            peer_token_file: cfg
                .admin
                .peer_token_file
                .clone()
                .unwrap_or_else(|| crate::token::path(cfg)),
        });
        // The first decision is made before anything is served: a primary's flushes wait
        // for its standby from the first command on.
        let first = supervisor::Supervisor::start(h.clone());
        r.tasks
            .push(tokio::spawn(first.run(h.clone(), r.stop.subscribe())));
        statuses.insert(v.name.clone(), status);
        handles.insert(v.name.clone(), h);
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
    r.handles = Arc::new(handles);
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
