//! The etcd driver: keeps the node's lease, reads each replicated volume's keys, runs the
//! transactions [`super::decide`] asks for and drives the engine's role machine.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockstore::{AccessState, Role};
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp,
};

use super::config::ClusterConfig;
use super::decide::{decide, Action, Local, VolumeView};
use super::in_sync::EtcdInSync;
use super::keys;
use super::view::{ClusterCell, ClusterDoc, ClusterNode, ClusterVolume};
use crate::replication::{switchover, Replicated, Replication};

/// The running agent.
pub struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Agent>,
    /// What status shows of the cluster.
    pub view: Arc<ClusterCell>,
}

impl Running {
    /// Stops the agent and revokes the node's lease.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Ok(mut a) = self.task.await {
            if let Some(id) = a.lease {
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), a.client.lease_revoke(id)).await;
            }
        }
    }
}

struct Agent {
    client: Client,
    cfg: ClusterConfig,
    node_id: String,
    replication: String,
    vols: Vec<Arc<Replicated>>,
    lease: Option<i64>,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    /// The deadline the last confirmed renewal allows (sent + TTL - margin).
    deadline: Option<Instant>,
    /// Volumes this node leads under its current lease.
    leading: BTreeSet<String>,
    /// Writes the in-sync sets (shared with the volumes' replication tasks).
    in_sync: Arc<EtcdInSync>,
    /// What each volume's keys held at the last successful read.
    views: BTreeMap<String, VolumeView>,
    /// What status shows of the cluster.
    view: Arc<ClusterCell>,
    /// Every node id seen (registered, named by a volume's keys, or met as the peer).
    known: BTreeSet<String>,
    /// The lease was lost: the in-sync sets are written again in the next term.
    forget_all: bool,
    /// Volumes whose promotion was refused locally, with the in-sync key's revision then.
    refused: BTreeMap<String, i64>,
}

/// Connects to etcd and starts the agent. Every replicated volume's lease is set to "ended"
/// first: a primary serves only once it holds the leader key.
pub async fn start(cfg: &ClusterConfig, repl: &Replication) -> Result<Running, String> {
    let vols: Vec<Arc<Replicated>> = repl.handles.values().cloned().collect();
    let now = Instant::now();
    for h in &vols {
        h.engine.set_lease(Some(now));
    }
    let node_id = vols
        .first()
        .map(|h| hex::encode(h.node_id))
        .ok_or("etcd is configured but no volume is replicated (no volume names a peer)")?;
    let client = tokio::time::timeout(
        Duration::from_secs(cfg.lease_ttl_s),
        Client::connect(&cfg.etcd, None),
    )
    .await
    .map_err(|_| format!("etcd {:?}: no answer", cfg.etcd))?
    .map_err(|e| format!("etcd {:?}: {e}", cfg.etcd))?;
    let in_sync = Arc::new(EtcdInSync::new(
        client.clone(),
        cfg.prefix.clone(),
        node_id.clone(),
        &vols,
    ));
    for h in &vols {
        h.in_sync.install(in_sync.clone());
    }
    let mut a = Agent {
        client,
        cfg: cfg.clone(),
        node_id,
        replication: repl.listening.map(|a| a.to_string()).unwrap_or_default(),
        vols,
        lease: None,
        keeper: None,
        deadline: None,
        leading: BTreeSet::new(),
        in_sync: in_sync.clone(),
        refused: BTreeMap::new(),
        forget_all: false,
        views: BTreeMap::new(),
        view: Arc::new(ClusterCell::default()),
        known: BTreeSet::new(),
    };
    tracing::info!(etcd = ?cfg.etcd, prefix = %cfg.prefix, node_id = %a.node_id, ttl_s = cfg.lease_ttl_s, "cluster: coordinating through etcd");
    // The first round before the front ends start: a primary that holds (or can take) its
    // leader key serves from the first command.
    a.tick().await;
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let view = a.view.clone();
    let task = tokio::spawn(async move {
        let every = Duration::from_millis(a.cfg.renew_interval_ms);
        loop {
            tokio::select! {
                _ = stop_rx.changed() => break,
                _ = tokio::time::sleep(every) => {}
            }
            a.tick().await;
        }
        a
    });
    Ok(Running { stop, task, view })
}

impl Agent {
    /// One round: renew the lease, decide for every volume, set the engines' leases.
    async fn tick(&mut self) {
        let limit = Duration::from_millis(self.cfg.renew_interval_ms);
        let mut reached = false;
        match tokio::time::timeout(limit, self.renew()).await {
            Ok(Ok(())) => reached = true,
            Ok(Err(e)) if lease_gone(&e) => {
                tracing::warn!(lease = ?self.lease, "cluster: the node's lease ran out in etcd; registering again");
                self.lost();
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cluster: lease not renewed");
                self.keeper = None;
            }
            Err(_) => {
                tracing::warn!("cluster: lease renewal timed out");
                self.keeper = None;
            }
        }
        if std::mem::take(&mut self.forget_all) {
            self.in_sync.forget(None).await;
        }
        for h in self.vols.clone() {
            match tokio::time::timeout(limit, self.reconcile(&h)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(volume = %h.name, error = %e, "cluster: etcd round failed")
                }
                Err(_) => tracing::warn!(volume = %h.name, "cluster: etcd round timed out"),
            }
        }
        self.apply_leases();
        self.refresh_view(reached, limit).await;
    }

    /// Reads the registered nodes and stores the round's view for status (when etcd could
    /// not be reached this round, the last view stays, marked unreachable).
    async fn refresh_view(&mut self, reached: bool, limit: Duration) {
        let mut doc = ClusterDoc {
            etcd: self.cfg.etcd.clone(),
            prefix: self.cfg.prefix.clone(),
            node_id: self.node_id.clone(),
            reachable: reached,
            lease_ttl_s: self.cfg.lease_ttl_s,
            ..Default::default()
        };
        let nodes = if reached {
            let key = format!("{}/nodes/", self.cfg.prefix);
            match tokio::time::timeout(
                limit,
                self.client.get(key, Some(GetOptions::new().with_prefix())),
            )
            .await
            {
                Ok(Ok(r)) => Some(r),
                _ => None,
            }
        } else {
            None
        };
        let Some(nodes) = nodes else {
            self.view.set(doc, false, self.deadline);
            return;
        };
        for kv in nodes.kvs() {
            if let Ok(r) = serde_json::from_slice::<keys::NodeRecord>(kv.value()) {
                doc.nodes.push(ClusterNode {
                    node_id: r.node_id,
                    replication: Some(r.replication).filter(|r| !r.is_empty()),
                    alive: true,
                });
            }
        }
        for h in &self.vols {
            let Some(v) = self.views.get(&h.name) else {
                continue;
            };
            let lag = self.leading.contains(&h.name).then(|| {
                h.engine
                    .last_lsn()
                    .saturating_sub(h.status.get().durable_lsn)
            });
            doc.volumes.push(ClusterVolume {
                name: h.name.clone(),
                leader: v.leader.as_ref().map(|(n, _)| n.clone()),
                epoch: v.epoch,
                in_sync: v.in_sync.clone(),
                lag_records: lag,
            });
        }
        // Nodes seen before, a volume names or a replication link met that hold no
        // registration now: down.
        self.known
            .extend(doc.nodes.iter().map(|n| n.node_id.clone()));
        self.known.extend(
            doc.volumes
                .iter()
                .flat_map(|v| v.leader.iter().chain(v.in_sync.iter()).cloned()),
        );
        self.known
            .extend(self.vols.iter().filter_map(|h| h.status.get().peer_node_id));
        for n in self.known.clone() {
            if !doc.nodes.iter().any(|x| x.node_id == n) {
                doc.nodes.push(ClusterNode {
                    node_id: n,
                    replication: None,
                    alive: false,
                });
            }
        }
        self.view.set(doc, true, self.deadline);
    }

    /// Renews the node's lease (granting a new one when it has none or it ran out) and
    /// records the deadline a confirmed renewal allows.
    async fn renew(&mut self) -> Result<(), etcd_client::Error> {
        let sent = Instant::now();
        let ttl = self.cfg.lease_ttl_s;
        if let (Some(_), Some((keeper, stream))) = (self.lease, self.keeper.as_mut()) {
            keeper.keep_alive().await?;
            match stream.message().await? {
                Some(r) if r.ttl() > 0 => {
                    self.confirmed(sent, (r.ttl() as u64).min(ttl));
                    return Ok(());
                }
                _ => {
                    tracing::warn!(lease = ?self.lease, "cluster: the node's lease ran out in etcd; registering again");
                    self.lost();
                }
            }
        } else if let Some(id) = self.lease {
            // The stream broke (etcd was unreachable): open a new one on the same lease.
            let (mut keeper, mut stream) = self.client.lease_keep_alive(id).await?;
            keeper.keep_alive().await?;
            match stream.message().await? {
                Some(r) if r.ttl() > 0 => {
                    self.keeper = Some((keeper, stream));
                    self.confirmed(sent, (r.ttl() as u64).min(ttl));
                    return Ok(());
                }
                _ => {
                    tracing::warn!(
                        lease = id,
                        "cluster: the node's lease ran out in etcd; registering again"
                    );
                    self.lost();
                }
            }
        }
        let sent = Instant::now();
        let g = self.client.lease_grant(ttl as i64, None).await?;
        let id = g.id();
        let record = keys::NodeRecord {
            node_id: self.node_id.clone(),
            replication: self.replication.clone(),
        };
        self.client
            .put(
                keys::node(&self.cfg.prefix, &self.node_id),
                serde_json::to_string(&record).unwrap_or_default(),
                Some(PutOptions::new().with_lease(id)),
            )
            .await?;
        self.lease = Some(id);
        self.in_sync.set_lease(Some(id));
        self.keeper = Some(self.client.lease_keep_alive(id).await?);
        self.confirmed(sent, (g.ttl() as u64).min(ttl));
        tracing::info!(lease = id, "cluster: node registered");
        Ok(())
    }

    fn confirmed(&mut self, sent: Instant, ttl_s: u64) {
        let span = Duration::from_secs(ttl_s)
            .saturating_sub(Duration::from_millis(self.cfg.safety_margin_ms));
        self.deadline = Some(sent + span);
    }

    fn lost(&mut self) {
        self.lease = None;
        self.keeper = None;
        self.deadline = None;
        self.leading.clear();
        self.in_sync.set_lease(None);
        self.forget_all = true;
    }

    /// Reads the volume's keys and acts on the decision.
    async fn reconcile(&mut self, h: &Arc<Replicated>) -> Result<(), etcd_client::Error> {
        let prefix = self.cfg.prefix.clone();
        let (lk, ek, sk) = (
            keys::leader(&prefix, &h.name),
            keys::epoch(&prefix, &h.name),
            keys::in_sync(&prefix, &h.name),
        );
        let resp = self
            .client
            .get(
                keys::volume(&prefix, &h.name),
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        let mut view = VolumeView::default();
        for kv in resp.kvs() {
            let k = kv.key();
            if k == lk.as_bytes() {
                let node = String::from_utf8_lossy(kv.value()).into_owned();
                view.leader = Some((node, kv.lease()));
            } else if k == ek.as_bytes() {
                let Some(epoch) = keys::parse_epoch(kv.value()) else {
                    // Never guessed: a node acting on a wrong epoch could fence the wrong side.
                    tracing::error!(volume = %h.name, key = %ek, value = %String::from_utf8_lossy(kv.value()), "cluster: the epoch in etcd is not a number; nothing is decided for this volume");
                    self.leading.remove(&h.name);
                    return Ok(());
                };
                view.epoch = epoch;
                view.epoch_rev = kv.mod_revision();
            } else if k == sk.as_bytes() {
                view.in_sync = keys::parse_in_sync(kv.value()).unwrap_or_default();
                view.in_sync_rev = kv.mod_revision();
            }
        }
        let st = h.engine.role_state();
        let fenced =
            st.role == Role::Primary && h.engine.role_snapshot().1 == AccessState::Unavailable;
        let local = Local {
            node_id: self.node_id.clone(),
            lease: self.lease,
            role: st.role,
            epoch: st.epoch,
            busy: st.transitioning || fenced,
        };
        self.views.insert(h.name.clone(), view.clone());
        let action = decide(&local, &view);
        let lease = self.lease.unwrap_or(0);
        match action {
            Action::Wait => {
                self.leading.remove(&h.name);
            }
            Action::Lead => {
                self.leading.insert(h.name.clone());
                self.in_sync.publish(h).await?;
            }
            Action::Fence(epoch) => {
                self.leading.remove(&h.name);
                tracing::warn!(volume = %h.name, local_epoch = st.epoch, etcd_epoch = epoch, "cluster: a newer epoch holds the volume; this primary is stale");
                let e = h.engine.clone();
                let _ = tokio::task::spawn_blocking(move || e.observe_epoch(epoch)).await;
            }
            Action::Claim(epoch) => {
                let txn = Txn::new()
                    .when([
                        Compare::create_revision(lk.clone(), CompareOp::Equal, 0),
                        Compare::mod_revision(ek.clone(), CompareOp::Equal, view.epoch_rev),
                    ])
                    .and_then([
                        TxnOp::put(
                            lk.clone(),
                            self.node_id.clone(),
                            Some(PutOptions::new().with_lease(lease)),
                        ),
                        TxnOp::put(ek.clone(), epoch.to_string(), None),
                    ]);
                if self.client.txn(txn).await?.succeeded() {
                    tracing::info!(volume = %h.name, epoch, "cluster: leader of the volume");
                    self.leading.insert(h.name.clone());
                    self.in_sync.forget(Some(&h.name)).await;
                    self.in_sync.publish(h).await?;
                }
            }
            Action::Promote(_) if self.refused.get(&h.name) == Some(&view.in_sync_rev) => {}
            Action::Promote(epoch) => {
                // The local record must agree that this standby holds every acknowledged
                // write before the key is taken; if not, it is not tried again until the
                // in-sync set changes (no epoch raised for nothing, round after round).
                if let Err(e) = switchover::check_promotable(h, false).await {
                    tracing::error!(volume = %h.name, error = ?e, "cluster: listed in sync in etcd but not by its own record; not taking the leader key");
                    self.refused.insert(h.name.clone(), view.in_sync_rev);
                    return Ok(());
                }
                let txn = Txn::new()
                    .when([
                        Compare::create_revision(lk.clone(), CompareOp::Equal, 0),
                        Compare::mod_revision(ek.clone(), CompareOp::Equal, view.epoch_rev),
                        Compare::mod_revision(sk.clone(), CompareOp::Equal, view.in_sync_rev),
                    ])
                    .and_then([
                        TxnOp::put(
                            lk.clone(),
                            self.node_id.clone(),
                            Some(PutOptions::new().with_lease(lease)),
                        ),
                        TxnOp::put(ek.clone(), epoch.to_string(), None),
                    ]);
                if !self.client.txn(txn).await?.succeeded() {
                    return Ok(());
                }
                tracing::warn!(volume = %h.name, epoch, "cluster: the leader key was gone; this in-sync standby took it and promotes");
                // Adopt the term before this one, so the role machine's promotion lands on
                // exactly the epoch etcd now holds; and serve only under the live lease.
                let e = h.engine.clone();
                let _ = tokio::task::spawn_blocking(move || e.observe_epoch(epoch - 1)).await;
                h.engine.set_lease(self.deadline.or(Some(Instant::now())));
                match switchover::promote(h, false).await {
                    Ok(_) if h.engine.role_state().epoch == epoch => {
                        self.leading.insert(h.name.clone());
                        self.in_sync.forget(Some(&h.name)).await;
                        tracing::warn!(volume = %h.name, epoch, "cluster: promoted");
                    }
                    r => {
                        let now = h.engine.role_state();
                        tracing::error!(volume = %h.name, etcd_epoch = epoch, local_epoch = now.epoch, role = now.role.name(), error = ?r.err(), "cluster: promotion failed after taking the leader key; releasing it");
                        h.engine.set_lease(Some(Instant::now()));
                        self.refused.insert(h.name.clone(), view.in_sync_rev);
                        let txn = Txn::new()
                            .when([Compare::value(
                                lk.clone(),
                                CompareOp::Equal,
                                self.node_id.clone(),
                            )])
                            .and_then([TxnOp::delete(lk.clone(), None)]);
                        self.client.txn(txn).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets every volume's engine lease: the renewal's deadline where this node leads, ended
    /// elsewhere (a standby ignores it; a primary that does not lead serves nothing).
    fn apply_leases(&self) {
        let now = Instant::now();
        for h in &self.vols {
            let current = h.engine.role_state().lease_until;
            match (self.leading.contains(&h.name), self.deadline) {
                (true, Some(d)) if current != Some(d) => h.engine.set_lease(Some(d)),
                (true, Some(_)) => {}
                // Not led here: the lease ends now unless it already ended.
                _ if current.is_some_and(|c| c <= now) => {}
                _ => h.engine.set_lease(Some(now)),
            }
        }
    }
}

/// Whether etcd answered that the lease no longer exists (it expired while this node could
/// not renew it): etcd says so as an error ("requested lease not found", gRPC NotFound), not
/// as a renewal with TTL 0.
fn lease_gone(e: &etcd_client::Error) -> bool {
    e.to_string().contains("lease not found")
}
