//! What the replication link carries about the paths hosts see: each node announces its own
//! port group, relative ports and access state (`PathState` frames) when a connection is ready
//! and whenever they change, and records what the other node announced in the volume's
//! [`PathCell`]. A serving primary shows its standby by how it counts it
//! ([`standby_seen_by_primary`]); every other node shows the peer's last announced state.

use std::sync::Arc;

use block_core::AccessState;
use blockstore::repl::frame::Frame;

use super::state::SyncName;
use super::wire::FrameSender;
use crate::paths::{GroupView, PathCell};

/// The peer's group state as a serving primary sees its standby: standby while it counts it
/// in sync (a degrading standby still counts), unavailable once it goes on without it.
pub fn standby_seen_by_primary(sync: SyncName) -> AccessState {
    match sync {
        SyncName::InSync | SyncName::Degrading => AccessState::Standby,
        SyncName::OutOfSync => AccessState::Unavailable,
    }
}

/// Sends this node's group to the peer whenever it changed since the last announcement on
/// the connection (a new connection starts with a new announcer, so it always gets one).
#[derive(Debug, Default)]
pub struct Announcer {
    last: Option<GroupView>,
    /// Follows the cell, so that an unchanged view costs no comparison (this runs after
    /// every wake of the shipping task).
    rx: Option<tokio::sync::watch::Receiver<crate::paths::PathView>>,
}

impl Announcer {
    /// Sends a `PathState` when this node's group differs from the last one sent.
    pub fn announce(&mut self, cell: &PathCell, epoch: u64, tx: &FrameSender) {
        let rx = self.rx.get_or_insert_with(|| cell.watch());
        if self.last.is_some() && !rx.has_changed().unwrap_or(false) {
            return;
        }
        let now = rx.borrow_and_update().local.clone();
        if self.last.as_ref() == Some(&now) {
            return;
        }
        let sent = tx.send(&Frame::PathState {
            epoch,
            path_group: now.group,
            access: now.state,
            relative_ports: now.relative_ports.clone(),
        });
        if sent {
            self.last = Some(now);
        }
    }
}

/// Takes a peer's `PathState`: its group id and ports always; its state only when `take_state`
/// (a serving primary shows its standby by its sync state instead).
pub fn learned(cell: &Arc<PathCell>, f: &Frame, take_state: bool) {
    if let Frame::PathState {
        path_group,
        access,
        relative_ports,
        ..
    } = f
    {
        cell.learn_peer(*path_group, relative_ports.clone());
        if take_state {
            cell.peer_state(*access);
        }
    }
}

/// A primary's Hello on the listener: a node ships only while it serves, so a primary whose
/// epoch is newer than this node's (or any primary, when this node is not one) serves: its
/// group (known from an earlier announcement) is active/optimized. Its own `PathState` follows,
/// but a node that is not a standby may close the link before reading it.
pub fn hello_from(cell: &PathCell, hello: &Frame, mine: blockstore::RoleState) {
    let Frame::Hello(h) = hello else { return };
    let primary = blockstore::Role::from_u8(h.role) == Some(blockstore::Role::Primary);
    if primary && (h.epoch > mine.epoch || mine.role != blockstore::Role::Primary) {
        cell.peer_state(AccessState::Optimized);
    }
}

/// The shipping task's side: the standby's group learned from its announcements, its state
/// from how this primary counts it, and this node's group announced to it.
#[derive(Debug)]
pub struct PrimaryPaths {
    cell: Arc<PathCell>,
    announcer: Announcer,
    /// The standby's sync state last shown.
    shown: Option<SyncName>,
}

impl PrimaryPaths {
    /// For the volume's paths `cell`.
    pub fn new(cell: Arc<PathCell>) -> PrimaryPaths {
        PrimaryPaths {
            cell,
            announcer: Announcer::default(),
            shown: None,
        }
    }

    /// A new connection: it gets this node's group again once ready.
    pub fn new_connection(&mut self) {
        self.announcer = Announcer::default();
    }

    /// After every wake: shows the standby by `sync`, and announces this node's group on
    /// `tx` (the ready connection, if any) when it changed.
    pub fn step(&mut self, sync: SyncName, epoch: u64, tx: Option<&FrameSender>) {
        if self.shown != Some(sync) {
            self.shown = Some(sync);
            self.cell.peer_state(standby_seen_by_primary(sync));
        }
        if let Some(tx) = tx {
            self.announcer.announce(&self.cell, epoch, tx);
        }
    }

    /// Takes a frame from the standby (only its `PathState` matters here).
    pub fn learned(&self, f: &Frame) {
        learned(&self.cell, f, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_shows_its_standby_by_sync_state() {
        assert_eq!(
            standby_seen_by_primary(SyncName::InSync),
            AccessState::Standby
        );
        assert_eq!(
            standby_seen_by_primary(SyncName::Degrading),
            AccessState::Standby
        );
        assert_eq!(
            standby_seen_by_primary(SyncName::OutOfSync),
            AccessState::Unavailable
        );
    }
}
