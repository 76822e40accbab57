//! The in-sync set in etcd, written only by the volume's leader and always in a transaction
//! guarded by its leadership (its node id and lease on the leader key).
//!
//! Two writers share it on a node: the agent's round publishes the set from the replication
//! status (the standby comes back once it caught up), and a primary's replication task drops
//! a silent standby before any flush is acknowledged without it ([`InSyncStore`]). One lock per
//! node serialises them and the set is computed under it, so a round that read "in sync" just
//! before the drop cannot put the standby back after it: the task marks the status degrading
//! before it asks for the drop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

use super::keys;
use crate::replication::in_sync::{InSyncStore, StoreFuture};
use crate::replication::state::SyncName;
use crate::replication::Replicated;

/// The node's writer of in-sync sets.
pub struct EtcdInSync {
    client: Client,
    prefix: String,
    node_id: String,
    /// The node's live lease (none while it has none).
    lease: Mutex<Option<i64>>,
    /// The volumes' replication handles, by name.
    vols: BTreeMap<String, Arc<Replicated>>,
    /// The set last written per volume; the lock serialises the writes.
    published: tokio::sync::Mutex<BTreeMap<String, String>>,
}

impl EtcdInSync {
    /// A writer for `vols` through `client`.
    pub fn new(
        client: Client,
        prefix: String,
        node_id: String,
        vols: &[Arc<Replicated>],
    ) -> EtcdInSync {
        EtcdInSync {
            client,
            prefix,
            node_id,
            lease: Mutex::new(None),
            vols: vols.iter().map(|h| (h.name.clone(), h.clone())).collect(),
            published: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// The node's lease changed (`None`: it has none).
    pub fn set_lease(&self, lease: Option<i64>) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = lease;
    }

    fn lease(&self) -> Option<i64> {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets what was written for `volume` (or every volume), so the next round writes it
    /// again (a new term: another leader may have written in between).
    pub async fn forget(&self, volume: Option<&str>) {
        let mut p = self.published.lock().await;
        match volume {
            Some(v) => {
                p.remove(v);
            }
            None => p.clear(),
        }
    }

    /// Publishes who holds every acknowledged write of `h`: this node, and its standby while
    /// the replication status says it is in sync (read under the lock).
    pub async fn publish(&self, h: &Replicated) -> Result<(), etcd_client::Error> {
        let mut published = self.published.lock().await;
        let st = h.status.get();
        let mut set = vec![self.node_id.clone()];
        if st.sync_state == Some(SyncName::InSync) {
            if let Some(peer) = st.peer_node_id.clone() {
                set.push(peer);
            }
        }
        let value = keys::encode_in_sync(&set);
        if published.get(&h.name) == Some(&value) {
            return Ok(());
        }
        let Some(lease) = self.lease() else {
            return Ok(());
        };
        if self.guarded_put(&h.name, lease, &value).await? {
            tracing::info!(volume = %h.name, in_sync = %value, "cluster: in-sync set published");
            published.insert(h.name.clone(), value);
        }
        Ok(())
    }

    /// Puts `value` as `volume`'s in-sync set if this node holds the leader key under
    /// `lease`; whether it did.
    async fn guarded_put(
        &self,
        volume: &str,
        lease: i64,
        value: &str,
    ) -> Result<bool, etcd_client::Error> {
        let lk = keys::leader(&self.prefix, volume);
        let txn = Txn::new()
            .when([
                Compare::value(lk.clone(), CompareOp::Equal, self.node_id.clone()),
                Compare::lease(lk, CompareOp::Equal, lease),
            ])
            .and_then([TxnOp::put(
                keys::in_sync(&self.prefix, volume),
                value.to_string(),
                None,
            )]);
        Ok(self.client.clone().txn(txn).await?.succeeded())
    }

    async fn drop_now(&self, volume: &str) -> Result<(), String> {
        let mut published = self.published.lock().await;
        if !self.vols.contains_key(volume) {
            return Err(format!("volume {volume} is not coordinated through etcd"));
        }
        let lease = self
            .lease()
            .ok_or("this node holds no lease in etcd (it cannot reach etcd)")?;
        let value = keys::encode_in_sync(std::slice::from_ref(&self.node_id));
        match self.guarded_put(volume, lease, &value).await {
            Ok(true) => {
                published.insert(volume.to_string(), value);
                Ok(())
            }
            Ok(false) => Err("this node does not hold the volume's leader key in etcd".into()),
            Err(e) => Err(format!("etcd: {e}")),
        }
    }
}

impl InSyncStore for EtcdInSync {
    fn drop_standby<'a>(&'a self, volume: &'a str) -> StoreFuture<'a> {
        Box::pin(self.drop_now(volume))
    }
}
