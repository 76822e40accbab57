//! What a replicated volume's status shows, and what the primary persists about its standby.
//!
//! The primary records durably (volume metadata [`PEER_METADATA`]) whether its standby is in
//! sync, and from which LSN and epoch it is not, before it acknowledges any flush without it:
//! after a crash the primary must not count a standby in sync that missed acknowledged writes.

use std::sync::Mutex;

use blockstore::repl::primary::SyncState;
use serde::{Deserialize, Serialize};

/// Volume metadata name of the primary's record of its standby.
pub const PEER_METADATA: &str = "meta-repl-peer";

/// The primary's persisted record of its standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// "in_sync" or "out_of_sync".
    pub state: SyncName,
    /// The standby's last acknowledged durable LSN when it fell out of sync.
    pub since_lsn: u64,
    /// The primary's epoch then.
    pub epoch: u64,
    /// The standby's image has no known position in this node's log (this node was promoted
    /// without a handover, so the other node may hold writes this one never had): it needs a
    /// full resync before it counts, whatever position it offers.
    #[serde(default)]
    pub resync: bool,
}

/// A sync state as status and metadata spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncName {
    /// Every flush waits for the standby.
    InSync,
    /// Flushes go on without the standby until it caught up.
    OutOfSync,
    /// The standby timed out; being recorded out of sync (flushes still wait).
    Degrading,
}

impl SyncName {
    /// The name status prints (as in the JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncName::InSync => "in_sync",
            SyncName::OutOfSync => "out_of_sync",
            SyncName::Degrading => "degrading",
        }
    }
}

impl From<SyncState> for SyncName {
    fn from(s: SyncState) -> Self {
        match s {
            SyncState::InSync => SyncName::InSync,
            SyncState::OutOfSync => SyncName::OutOfSync,
            SyncState::Degrading => SyncName::Degrading,
        }
    }
}

impl PeerRecord {
    /// Parses the stored record; `None` (a new pairing, or unreadable) counts as out of sync.
    pub fn parse(bytes: &[u8]) -> Option<PeerRecord> {
        serde_json::from_slice(bytes).ok()
    }

    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The state the primary's peer starts from.
    pub fn sync_state(&self) -> SyncState {
        match self.state {
            SyncName::InSync if !self.resync => SyncState::InSync,
            _ => SyncState::OutOfSync,
        }
    }
}

/// Replication status of one volume, as `GET /v1/volumes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    /// The peer's replication address.
    pub peer: String,
    /// This node's side: "primary" (ships to the peer) or "standby" (receives).
    pub side: String,
    /// Whether a connection to the peer is up (past its handshake).
    pub connected: bool,
    /// On the primary: whether the standby counts for flushes (in_sync, out_of_sync,
    /// degrading). On a standby: what its primary last told it (in_sync, out_of_sync; out of
    /// sync when never told), persisted ([`super::standby_sync`]).
    pub sync_state: Option<SyncName>,
    /// On the primary: the standby's last acknowledged durable LSN. On a standby: the
    /// primary's LSN through which records were applied.
    pub durable_lsn: u64,
    /// "sync": flushes wait for an in-sync standby (the only mode so far).
    pub mode: String,
    /// This node's replication id (hex): what the peer's status shows as `peer_node_id`.
    #[serde(default)]
    pub node_id: String,
    /// The id of the node at the other end of the connection, once its Hello arrived: a
    /// switchover goes only to the node this primary's in-sync standby is.
    #[serde(default)]
    pub peer_node_id: Option<String>,
    /// On a standby: the primary's last LSN it knows of (from what the primary shipped and
    /// said), the other end of a forced promotion's loss window.
    #[serde(default)]
    pub primary_lsn: Option<u64>,
    /// The full resync (rebuild) running now, if one does.
    #[serde(default)]
    pub resync: Option<ResyncStatus>,
    /// Full resyncs completed since the node started (the standby rejoined after each).
    #[serde(default)]
    pub resyncs_completed: u64,
}

/// Progress of a full resync (rebuild) of the standby, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncStatus {
    /// "starting", "copying" (the volume's allocated regions are streamed) or "catching_up"
    /// (the log is shipped from where the copy began).
    pub phase: String,
    /// The primary's LSN when the copy began (the log is shipped after it).
    pub start_lsn: u64,
    /// Bytes of allocated data the copy streams (on a standby: 0, not known there).
    pub total_bytes: u64,
    /// Bytes copied so far (sent by the primary, received by a standby).
    pub done_bytes: u64,
    /// Copy rate over the last seconds, bytes per second.
    pub rate_bytes_per_s: u64,
    /// Seconds the copy needs at that rate (none while it is not known).
    pub eta_seconds: Option<u64>,
    /// The configured rate limit, bytes per second (none: unlimited).
    pub rate_limit_bytes_per_s: Option<u64>,
}

/// The live status of one replicated volume, updated by its replication task.
#[derive(Debug)]
pub struct StatusCell(Mutex<ReplicationStatus>);

impl StatusCell {
    /// A status for a volume replicating with `peer` from `side`.
    pub fn new(peer: &str, side: &str, sync_state: Option<SyncName>) -> StatusCell {
        StatusCell(Mutex::new(ReplicationStatus {
            peer: peer.to_string(),
            side: side.to_string(),
            connected: false,
            sync_state,
            durable_lsn: 0,
            mode: "sync".into(),
            node_id: String::new(),
            peer_node_id: None,
            primary_lsn: None,
            resync: None,
            resyncs_completed: 0,
        }))
    }

    /// The status now.
    pub fn get(&self) -> ReplicationStatus {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes the status.
    pub fn update(&self, f: impl FnOnce(&mut ReplicationStatus)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
