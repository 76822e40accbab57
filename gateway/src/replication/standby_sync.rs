//! The standby's own knowledge of whether it is in sync, persisted, and the rule for
//! promoting it.
//!
//! Only the primary knows whether it acknowledges flushes without its standby, so it tells the
//! standby (a `PeerState` frame when the connection is ready and whenever it recorded a
//! change); the standby stores the last word it had ([`STANDBY_METADATA`]) before acting on
//! it. A standby is in sync when its primary last said every acknowledged flush waits for it;
//! out of sync when the primary said it goes on without it, when it was demoted from another
//! role (its image has no position in the primary's log: a full resync must come first), or
//! when it was never told. A switchover's old primary is in sync by construction (it holds
//! exactly the new primary's image). What a disconnected standby knows is as of its last
//! contact: if the primary lives on behind a partition, only fencing (the epoch) keeps it from
//! serving once the standby is promoted.
//!
//! `promote` of a standby that is not in sync is refused; `promote --force` promotes anyway
//! and tells what may be lost ([`super::switchover::check_promotable`]).

use std::sync::Arc;

use blockstore::Engine;
use serde::{Deserialize, Serialize};

use super::state::{StatusCell, SyncName};

/// Volume metadata name of the standby's record of its own sync state.
pub const STANDBY_METADATA: &str = "meta-repl-standby";

/// The standby's persisted record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandbyRecord {
    /// "in_sync" or "out_of_sync".
    pub state: SyncName,
    /// The primary's last LSN it knew of when this was written.
    pub primary_lsn: u64,
    /// The primary's epoch then.
    pub epoch: u64,
}

impl StandbyRecord {
    /// The stored record, if any (`None`: never told, counts as out of sync).
    pub fn load(e: &Engine) -> Option<StandbyRecord> {
        e.load_metadata(STANDBY_METADATA)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// Stores it durably.
    pub fn save(&self, e: &Engine) -> blockstore::Result<()> {
        e.save_metadata(
            STANDBY_METADATA,
            &serde_json::to_vec(self).unwrap_or_default(),
        )
    }

    /// Whether the standby holds every flush its primary acknowledged, as far as it knows.
    pub fn in_sync(&self) -> bool {
        self.state == SyncName::InSync
    }
}

/// The sync state a standby shows: its record's, out of sync without one.
pub fn shown(e: &Engine) -> SyncName {
    match StandbyRecord::load(e) {
        Some(r) if r.in_sync() => SyncName::InSync,
        _ => SyncName::OutOfSync,
    }
}

/// Records (durably, when it changed) what the primary said about this standby; ignored
/// unless the volume is a standby here.
pub async fn told(
    name: &str,
    engine: &Arc<Engine>,
    status: &StatusCell,
    epoch: u64,
    in_sync: bool,
    primary_lsn: u64,
) {
    if engine.role_state().role != blockstore::Role::Standby {
        // Only a standby's record means anything (a primary's link only meets epochs).
        return;
    }
    let state = if in_sync {
        SyncName::InSync
    } else {
        SyncName::OutOfSync
    };
    let e = engine.clone();
    let r = tokio::task::spawn_blocking(move || {
        let old = StandbyRecord::load(&e);
        if old.is_some_and(|o| o.state == state && o.epoch == epoch) {
            return Ok(false);
        }
        StandbyRecord {
            state,
            primary_lsn,
            epoch,
        }
        .save(&e)
        .map(|()| true)
    })
    .await;
    match r {
        Ok(Ok(true)) => {
            tracing::info!(volume = %name, state = state.as_str(), primary_lsn, epoch, "the primary counts this standby as {}", state.as_str())
        }
        Ok(Ok(false)) => {}
        Ok(Err(e)) => {
            tracing::error!(volume = %name, error = %e, "cannot record this standby's sync state")
        }
        Err(e) => tracing::error!(volume = %name, error = %e, "recording the sync state failed"),
    }
    // Shown once recorded (a promotion reads the record); shown even if recording failed,
    // and a promotion then refuses on what is shown.
    status.update(|s| {
        s.sync_state = Some(state);
        s.primary_lsn = Some(s.primary_lsn.unwrap_or(0).max(primary_lsn));
    });
}

/// Notes the primary LSNs a frame shows (for the loss window of a forced promotion).
pub fn saw(status: &StatusCell, f: &blockstore::repl::frame::Frame) {
    use blockstore::repl::frame::Frame;
    let lsn = match f {
        Frame::Records(r) => r.records.last().map_or(r.prev_lsn, |r| r.lsn),
        Frame::Barrier { lsn, .. } => *lsn,
        _ => return,
    };
    status.update(|s| s.primary_lsn = Some(s.primary_lsn.unwrap_or(0).max(lsn)));
}
