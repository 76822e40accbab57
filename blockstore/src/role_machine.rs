//! The role rules of one volume on one node as a pure state machine.
//!
//! Role, epoch, lease and fencing decide whether this node may serve the volume. The rules live
//! here and nowhere else, with no clock, thread or runtime inside: callers pass the time, and the
//! machine answers with what to persist. The engine keeps the write gate and the persistence
//! (the superblock): it starts a change with [`RoleMachine::begin`] (hosts see the volume as
//! transitioning from that moment), stores the new role and epoch durably, then completes it
//! with [`RoleMachine::finish`]. A replication link or a coordinator (etcd, later) drives the
//! same machine: [`RoleMachine::promote`] / [`RoleMachine::demote`] raise the epoch, and
//! [`RoleMachine::observe_epoch`] fences a primary that meets a newer epoch at once.

use std::time::Instant;

use crate::role::{access_state, AccessState, Role, RoleState};

/// A role change the machine has started: persist `role` and `epoch`, then call
/// [`RoleMachine::finish`] with the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a started change must be persisted and finished"]
pub struct Change {
    /// The role to persist.
    pub role: Role,
    /// The epoch to persist.
    pub epoch: u64,
}

/// Why the machine refused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// The request carries an epoch older than the volume's: it comes from a fenced-off node.
    #[error("stale epoch {presented} (current {current})")]
    StaleEpoch {
        /// The volume's epoch.
        current: u64,
        /// The epoch presented.
        presented: u64,
    },
    /// Another change is being persisted; retry once it finished.
    #[error("a role change is already in progress")]
    Busy,
}

/// The role state machine of one volume on this node.
#[derive(Debug, Clone)]
pub struct RoleMachine {
    st: RoleState,
    /// A newer epoch this node met while primary: it serves nothing from then on.
    fenced_by: Option<u64>,
}

impl RoleMachine {
    /// The machine for a volume whose persisted role and epoch are `role` and `epoch`.
    pub fn new(role: Role, epoch: u64) -> Self {
        RoleMachine {
            st: RoleState {
                role,
                epoch,
                lease_until: None,
                transitioning: false,
            },
            fenced_by: None,
        }
    }

    /// Role, epoch, lease and transition flag.
    pub fn state(&self) -> RoleState {
        self.st
    }

    /// The newer epoch that fenced this node, if one did.
    pub fn fenced_by(&self) -> Option<u64> {
        self.fenced_by
    }

    /// The access state hosts see at `now`: the one rule both protocols derive ALUA and ANA
    /// states from (the role table of docs/architecture.md).
    pub fn access_state(&self, now: Instant) -> AccessState {
        if self.fenced_by.is_some() {
            return AccessState::Unavailable;
        }
        access_state(&self.st, now)
    }

    /// When the access state next changes by itself (the end of a lease), if it will.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.st.role {
            Role::Primary if !self.st.transitioning && self.fenced_by.is_none() => {
                self.st.lease_until
            }
            _ => None,
        }
    }

    /// Refuses a request carrying an epoch older than the volume's.
    pub fn check_epoch(&self, presented: u64) -> Result<(), RoleError> {
        if presented < self.st.epoch {
            return Err(RoleError::StaleEpoch {
                current: self.st.epoch,
                presented,
            });
        }
        Ok(())
    }

    /// Starts changing to `role` under `epoch` (not older than the current one). Hosts see the
    /// volume as transitioning until [`RoleMachine::finish`].
    pub fn begin(&mut self, role: Role, epoch: u64) -> Result<Change, RoleError> {
        self.check_epoch(epoch)?;
        if self.st.transitioning {
            return Err(RoleError::Busy);
        }
        self.st.transitioning = true;
        Ok(Change { role, epoch })
    }

    /// Starts serving as primary under a new epoch (every role change raises the epoch).
    pub fn promote(&mut self) -> Result<Change, RoleError> {
        self.begin(Role::Primary, self.st.epoch + 1)
    }

    /// Becomes primary after a planned handover in which the old primary stepped down under
    /// `seen`: the new term is newer than both (`max(epoch, seen) + 1`), so anything of the old
    /// primary's term is stale here.
    pub fn promote_after(&mut self, seen: u64) -> Result<Change, RoleError> {
        self.begin(Role::Primary, self.st.epoch.max(seen) + 1)
    }

    /// Becomes a standby. A serving primary ends its term: the epoch rises by one, so nothing of
    /// that term is accepted any more. Any other role (a standby, a stale or fenced old
    /// primary) keeps the newest epoch it knows: a standby's epoch follows its primary's, and
    /// one raised above it would fence the primary it is to follow.
    pub fn demote(&mut self) -> Result<Change, RoleError> {
        if self.st.role == Role::Primary && self.fenced_by.is_none() {
            return self.begin(Role::Standby, self.st.epoch + 1);
        }
        let epoch = self.st.epoch.max(self.fenced_by.unwrap_or(0));
        self.begin(Role::Standby, epoch)
    }

    /// Completes `change` once it is durable (`persisted`), or abandons it when persisting
    /// failed (the old role and epoch stay). A change to a new epoch lifts a fence by an older
    /// or equal one: the node has been given its new role knowingly.
    pub fn finish(&mut self, change: Change, persisted: bool) {
        self.st.transitioning = false;
        if persisted {
            self.st.role = change.role;
            self.st.epoch = change.epoch;
            if self.fenced_by.is_some_and(|e| e <= change.epoch) {
                self.fenced_by = None;
            }
        }
    }

    /// Grants (or with `None` removes) a lease: a primary serves only until it ends.
    pub fn set_lease(&mut self, until: Option<Instant>) {
        self.st.lease_until = until;
    }

    /// This node met `seen` (in a handshake, a reply, a coordinator): a primary that meets a
    /// newer epoch stops serving at once and must persist that it is stale under that epoch;
    /// any other role adopts the newer epoch. Returns the change to persist, if any.
    pub fn observe_epoch(&mut self, seen: u64) -> Option<Change> {
        if seen <= self.st.epoch {
            return None;
        }
        let role = match self.st.role {
            Role::Primary => {
                self.fenced_by = Some(seen);
                Role::Stale
            }
            other => other,
        };
        if self.st.transitioning {
            // The change in progress finishes first; the fence already holds.
            return None;
        }
        self.st.transitioning = true;
        Some(Change { role, epoch: seen })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_role_table() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        let mut m = RoleMachine::new(Role::Primary, 1);
        assert_eq!(m.access_state(now), AccessState::Optimized);
        m.set_lease(Some(later));
        assert_eq!(m.access_state(now), AccessState::Optimized);
        assert_eq!(m.poll_timeout(), Some(later));
        assert_eq!(m.access_state(later), AccessState::Transitioning);
        for (role, want) in [
            (Role::Standby, AccessState::Standby),
            (Role::None, AccessState::Unavailable),
            (Role::Rebuilding, AccessState::Unavailable),
            (Role::Stale, AccessState::Unavailable),
        ] {
            let m = RoleMachine::new(role, 1);
            assert_eq!(m.access_state(now), want, "{role:?}");
            assert_eq!(m.poll_timeout(), None);
        }
    }

    #[test]
    fn a_change_is_transitioning_until_persisted_and_raises_the_epoch() {
        let now = Instant::now();
        let mut m = RoleMachine::new(Role::Standby, 4);
        let c = m.promote().unwrap();
        assert_eq!(
            c,
            Change {
                role: Role::Primary,
                epoch: 5
            }
        );
        assert_eq!(m.access_state(now), AccessState::Transitioning);
        assert_eq!(m.demote(), Err(RoleError::Busy), "one change at a time");
        m.finish(c, true);
        assert_eq!(m.access_state(now), AccessState::Optimized);
        assert_eq!(m.state().epoch, 5);
        let c = m.demote().unwrap();
        m.finish(c, true);
        assert_eq!((m.state().role, m.state().epoch), (Role::Standby, 6));
        // A failed persist keeps the old role and epoch.
        let c = m.promote().unwrap();
        m.finish(c, false);
        assert_eq!((m.state().role, m.state().epoch), (Role::Standby, 6));
        assert_eq!(m.access_state(now), AccessState::Standby);
    }

    #[test]
    fn older_epochs_are_refused() {
        let mut m = RoleMachine::new(Role::Primary, 7);
        assert_eq!(
            m.begin(Role::Standby, 6),
            Err(RoleError::StaleEpoch {
                current: 7,
                presented: 6
            })
        );
        assert!(m.check_epoch(6).is_err());
        assert!(m.check_epoch(7).is_ok());
        assert_eq!(m.access_state(Instant::now()), AccessState::Optimized);
    }

    #[test]
    fn a_primary_meeting_a_newer_epoch_stops_serving_at_once() {
        let now = Instant::now();
        let mut m = RoleMachine::new(Role::Primary, 3);
        assert_eq!(m.observe_epoch(3), None, "the same epoch fences nothing");
        let c = m.observe_epoch(4).expect("a fence to persist");
        assert_eq!(
            c,
            Change {
                role: Role::Stale,
                epoch: 4
            }
        );
        // Before the fence is even persisted, nothing is served.
        assert_eq!(m.access_state(now), AccessState::Unavailable);
        m.finish(c, false);
        assert_eq!(
            m.access_state(now),
            AccessState::Unavailable,
            "a failed persist does not lift the fence"
        );
        assert_eq!(m.fenced_by(), Some(4));
        // Only a knowing change under the new epoch (or later) lifts it.
        let c = m.begin(Role::Standby, 4).unwrap();
        m.finish(c, true);
        assert_eq!(m.fenced_by(), None);
        assert_eq!(m.access_state(now), AccessState::Standby);
    }

    #[test]
    fn only_a_serving_primary_raises_the_epoch_when_demoted() {
        // A fenced old primary follows under the epoch that fenced it, not a newer one (which
        // would fence the primary it is to follow).
        let mut m = RoleMachine::new(Role::Primary, 1);
        let c = m.observe_epoch(2).unwrap();
        m.finish(c, true);
        assert_eq!(m.state().role, Role::Stale);
        let c = m.demote().unwrap();
        assert_eq!(
            c,
            Change {
                role: Role::Standby,
                epoch: 2
            }
        );
        m.finish(c, true);
        assert_eq!(m.access_state(Instant::now()), AccessState::Standby);
        // The same when persisting the fence had failed.
        let mut m = RoleMachine::new(Role::Primary, 1);
        let c = m.observe_epoch(3).unwrap();
        m.finish(c, false);
        let c = m.demote().unwrap();
        assert_eq!(c.epoch, 3);
        m.finish(c, true);
        assert_eq!(m.fenced_by(), None);
        // A standby demoted again keeps its epoch.
        let c = m.demote().unwrap();
        assert_eq!(c.epoch, 3);
        m.finish(c, true);
        // A handover: the old primary stepped down to 4; the new term is 5.
        let c = m.promote_after(4).unwrap();
        assert_eq!(
            c,
            Change {
                role: Role::Primary,
                epoch: 5
            }
        );
    }

    #[test]
    fn a_standby_adopts_a_newer_epoch() {
        let mut m = RoleMachine::new(Role::Standby, 2);
        let c = m.observe_epoch(5).unwrap();
        assert_eq!(
            c,
            Change {
                role: Role::Standby,
                epoch: 5
            }
        );
        m.finish(c, true);
        assert_eq!(m.state().epoch, 5);
        assert_eq!(m.fenced_by(), None);
    }
}
