//! One replicated volume's driver state, shared by its supervisor, the replication listener
//! and the operator's role changes.

use std::sync::Arc;
use std::time::Duration;

use blockstore::Engine;

use super::standby::StandbyVolume;
use super::state::StatusCell;

/// One replicated volume as its supervisor and the operator's commands see it.
pub struct Replicated {
    /// Volume name.
    pub name: String,
    /// The volume's engine (its role machine decides everything).
    pub engine: Arc<Engine>,
    /// The peer's replication address.
    pub peer: String,
    /// This node's id.
    pub node_id: [u8; 16],
    /// How long a flush waits for a silent standby.
    pub timeout: Duration,
    /// The full resync's rate limit, bytes per second (none: unlimited).
    pub resync_rate: Option<u64>,
    /// What status shows.
    pub status: Arc<StatusCell>,
    /// The volume as the replication listener receives it.
    pub receiver: Arc<StandbyVolume>,
    /// The paths hosts see to the volume on this node (what the link learns of the peer goes
    /// there).
    pub paths: Arc<crate::paths::PathCell>,
    /// The file holding the bearer token of the peer's admin API (a switchover asks the peer to
    /// promote through it): `[admin] peer_token_file`, else this node's own token file.
    pub peer_token_file: std::path::PathBuf,
    /// Whether the supervisor runs the shipping task now (true) or not.
    pub shipping: tokio::sync::watch::Sender<bool>,
    /// Where the etcd agent (when configured) takes a dropped standby out of the in-sync set.
    pub in_sync: Arc<super::in_sync::InSyncSlot>,
}

impl std::fmt::Debug for Replicated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicated")
            .field("name", &self.name)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}
