//! The per-volume replication supervisor: follows the volume's role as the engine's role
//! machine holds it and runs the matching side of replication.
//!
//! The role machine is the one source of truth. Every role change moves the volume's access
//! state (primary: optimized; during a change: transitioning; standby; stale or fenced:
//! unavailable), which the engine publishes to watchers, so the supervisor watches that and
//! reads the role again on every change. While the volume is a serving primary it runs the
//! shipping task ([`super::primary::PrimaryTask`]) with a fresh [`Gate`] installed in the
//! engine; when it stops being one (a demotion, a fence) the gate stands down (a flush still
//! waiting gets the retryable transitioning state, not an error) and the task stops. The
//! receiving side needs no task: the replication listener serves the volume's link whatever
//! the role, and only a standby applies records.

use std::sync::Arc;

use blockstore::repl::primary::PrimaryConfig;
use blockstore::{AccessState, Role};
use tokio::task::JoinHandle;

use super::gate::Gate;
use super::primary::PrimaryTask;
use super::state::SyncName;
use super::Replicated;

/// A running shipping task.
struct Shipping {
    gate: Arc<Gate>,
    stop: tokio::sync::watch::Sender<bool>,
    /// `None` once it ended (fenced) and was awaited.
    task: Option<JoinHandle<()>>,
}

/// The supervisor of one volume.
pub struct Supervisor {
    active: Option<Shipping>,
}

/// Whether the volume should ship: it is primary here and not fenced.
fn wants_shipping(h: &Replicated) -> bool {
    h.engine.role_state().role == Role::Primary
        && h.engine.access_state() != AccessState::Unavailable
}

async fn ended(active: &mut Option<Shipping>) {
    match active.as_mut().and_then(|s| s.task.as_mut()) {
        Some(t) => {
            let _ = t.await;
            if let Some(s) = active.as_mut() {
                s.task = None;
            }
        }
        None => std::future::pending().await,
    }
}

impl Supervisor {
    /// Makes the first decision at once (a primary's gate is installed before the front ends
    /// start, so its flushes wait for the standby from the first command on).
    pub fn start(h: Arc<Replicated>) -> Supervisor {
        let mut s = Supervisor { active: None };
        if wants_shipping(&h) {
            s.active = Some(start_shipping(&h));
        }
        if s.active.is_none() {
            let shown = super::standby_sync::shown(&h.engine);
            h.paths.set_standby_sync(shown == SyncName::InSync);
            let applied = h.engine.applied_lsn();
            h.status.update(|st| {
                st.sync_state = Some(shown);
                st.durable_lsn = applied;
            });
        }
        h.shipping.send_replace(s.active.is_some());
        s
    }

    /// Runs until `stop`, following every role change.
    pub async fn run(mut self, h: Arc<Replicated>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut access = h.engine.watch_access();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                c = access.changed() => if c.is_err() { break },
                _ = ended(&mut self.active) => {}
            }
            self.follow(&h).await;
        }
        // Shutdown: the task fails its gate (nothing is acknowledged without the standby).
        if let Some(mut s) = self.active.take() {
            let _ = s.stop.send(true);
            if let Some(t) = s.task.take() {
                let _ = t.await;
            }
        }
    }

    /// Starts or stops shipping to match the role now.
    async fn follow(&mut self, h: &Arc<Replicated>) {
        let want = wants_shipping(h);
        let finished = self.active.as_ref().is_some_and(|s| s.task.is_none());
        if self.active.is_some() && (!want || finished) {
            if let Some(mut s) = self.active.take() {
                if s.task.is_some() {
                    // Demoted (not fenced: a fence already failed the gate for good).
                    s.gate.stand_down();
                }
                h.engine.set_replica_gate(None);
                // Nothing is shipped from this log any more.
                h.engine.set_retention(None);
                let _ = s.stop.send(true);
                if let Some(t) = s.task.take() {
                    // It ends at its next wake; once it did, its connection is closed and
                    // nothing more is shipped (a switchover waits for that).
                    let _ = t.await;
                }
            }
            let role = h.engine.role_state();
            tracing::info!(volume = %h.name, role = role.role.name(), epoch = role.epoch, "replication: no longer primary here; the listener receives the volume");
            let applied = h.engine.applied_lsn();
            let shown = super::standby_sync::shown(&h.engine);
            h.paths.set_standby_sync(shown == SyncName::InSync);
            h.status.update(|s| {
                s.side = "standby".into();
                s.connected = false;
                s.sync_state = Some(shown);
                s.durable_lsn = applied;
                s.peer_node_id = None;
            });
        }
        if want && self.active.is_none() {
            self.active = Some(start_shipping(h));
        }
        h.shipping.send_replace(self.active.is_some());
    }
}

fn start_shipping(h: &Arc<Replicated>) -> Shipping {
    let engine = h.engine.clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let gate = Arc::new(Gate::new(tx));
    engine.set_replica_gate(Some(gate.clone()));
    h.status.update(|s| {
        s.side = "primary".into();
        s.connected = false;
        s.sync_state = Some(SyncName::OutOfSync);
        s.durable_lsn = 0;
        s.peer_node_id = None;
    });
    let cfg = PrimaryConfig {
        volume_uuid: engine.uuid(),
        node_id: h.node_id,
        block_size: engine.block_size(),
        capacity_blocks: engine.capacity_blocks(),
        timeout: h.timeout,
    };
    let role = engine.role_state();
    tracing::info!(volume = %h.name, epoch = role.epoch, peer = %h.peer, "replication: primary here; shipping to the peer");
    let task = PrimaryTask::new(
        h.name.clone(),
        engine,
        h.peer.clone(),
        cfg,
        gate.clone(),
        rx,
        h.status.clone(),
    )
    .with_resync_rate(h.resync_rate)
    .with_paths(h.paths.clone())
    .with_in_sync(h.in_sync.clone());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    Shipping {
        gate,
        stop,
        task: Some(tokio::spawn(task.run(stop_rx))),
    }
}
