//! The rules that turn what this node knows into the path states hosts see: this node's own
//! port group and the peer's. Pure functions, no clock or I/O (see docs/architecture.md,
//! "Role model", for the table).
//!
//! Linux's `scsi_dh_alua` updates the state of every port group it knows from any REPORT
//! TARGET PORT GROUPS answer, and fails I/O without sending it on a path whose group it
//! believes standby or unavailable. So the peer's group is listed only once its id is known,
//! and always with the last state learned about it, never one guessed from silence.

use block_core::AccessState;
use blockstore::Role;

/// The peer's group state: transitioning while this node hands the volume over to it,
/// otherwise the last state learned.
pub fn peer_state(l: Local, learned: AccessState) -> AccessState {
    if l.handover {
        AccessState::Transitioning
    } else {
        learned
    }
}

/// What this node knows, as the rules need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// The engine's access state (from role, lease and transition).
    pub engine: AccessState,
    /// The persisted role.
    pub role: Role,
    /// The volume is replicated (names a peer).
    pub replicated: bool,
    /// On a standby: whether its primary last said it counts it in sync.
    pub standby_in_sync: bool,
    /// A planned switchover from this node to the peer is under way (from the drain until
    /// the peer answered that it serves, or the switchover was abandoned).
    pub handover: bool,
}

/// This node's own group state: the engine's, except that a replicated standby its primary
/// does not count in sync (it may miss acknowledged writes, it cannot be promoted without
/// `--force`) is unavailable rather than standby, and that during a planned switchover's
/// handover the node is transitioning until the peer serves (hosts retry 04/0A and re-read the
/// groups instead of failing the path).
pub fn local_state(l: Local) -> AccessState {
    if l.handover {
        return AccessState::Transitioning;
    }
    match l.engine {
        AccessState::Standby if l.replicated && l.role == Role::Standby && !l.standby_in_sync => {
            AccessState::Unavailable
        }
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(engine: AccessState, role: Role, in_sync: bool) -> Local {
        Local {
            engine,
            role,
            replicated: true,
            standby_in_sync: in_sync,
            handover: false,
        }
    }

    #[test]
    fn a_standby_out_of_sync_is_unavailable() {
        let s = AccessState::Standby;
        assert_eq!(local_state(local(s, Role::Standby, true)), s);
        assert_eq!(
            local_state(local(s, Role::Standby, false)),
            AccessState::Unavailable
        );
        // A single node's state is the engine's.
        let mut single = local(s, Role::Standby, false);
        single.replicated = false;
        assert_eq!(local_state(single), s);
    }

    #[test]
    fn a_handover_shows_both_groups_transitioning() {
        let mut l = local(AccessState::Optimized, Role::Primary, false);
        l.handover = true;
        assert_eq!(local_state(l), AccessState::Transitioning);
        assert_eq!(
            peer_state(l, AccessState::Standby),
            AccessState::Transitioning
        );
        l.handover = false;
        assert_eq!(peer_state(l, AccessState::Standby), AccessState::Standby);
    }

    #[test]
    fn other_states_are_the_engines() {
        for e in [
            AccessState::Optimized,
            AccessState::Transitioning,
            AccessState::Unavailable,
        ] {
            for r in [Role::Primary, Role::Standby, Role::Stale] {
                assert_eq!(local_state(local(e, r, false)), e);
            }
        }
    }
}
