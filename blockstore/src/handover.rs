//! The engine's part of a planned switchover (handover) between a primary and its standby.
//!
//! A handover must lose no acknowledged write and give hosts only retryable errors. The old
//! primary stops admitting host I/O the moment the demotion begins (the role machine's
//! transition: hosts see "transitioning"), lets every write that already passed the write gate
//! finish, has the caller make the log durable on the standby, and only then persists the
//! demotion; if the standby could not be brought up to date, the demotion is abandoned and the
//! volume serves again. The new primary's term is newer than the old primary's last one
//! ([`crate::role_machine::RoleMachine::promote_after`]). Both nodes' log positions are their
//! own, so the handover also records where the new standby stands in the new primary's log
//! ([`Engine::set_applied_position`]).

use std::sync::atomic::Ordering;

use crate::engine::{lock, role_error, Engine};
use crate::error::Result;
use crate::replica_gate::{encode_applied, APPLIED_METADATA};

impl Engine {
    /// Demotes a primary for a handover: begins the demotion (host I/O is refused from now on
    /// with a retryable transitioning state), waits for every write that passed the write gate
    /// before, runs `settle` (which must make the log durable on the standby and check it), and
    /// persists the demotion (epoch + 1) only if `settle` succeeded. Otherwise the demotion is
    /// abandoned, the volume serves again, and `settle`'s error is returned.
    pub fn demote_drained(&self, settle: impl FnOnce(&Engine) -> Result<()>) -> Result<()> {
        self.check_alive()?;
        let change = lock(&self.role).demote().map_err(role_error)?;
        self.publish_access();
        // Every write takes the compare-and-write lock shared and checks the gate under it:
        // holding it exclusively once means every write admitted before the transition began
        // has finished (its FUA wait included).
        drop(self.caw.write().unwrap_or_else(|e| e.into_inner()));
        if let Err(e) = settle(self) {
            lock(&self.role).finish(change, false);
            self.publish_access();
            return Err(e);
        }
        self.persist_role(change)
    }

    /// Promotes a standby at the end of a handover in which the old primary stepped down under
    /// `seen`: the new epoch is `max(own, seen) + 1`, persisted before the volume serves.
    /// Returns the last LSN of this node's log before it serves: the new standby holds exactly
    /// this image, so it follows from there.
    pub fn promote_after(&self, seen: u64) -> Result<u64> {
        self.check_alive()?;
        // What this standby received is durable before it serves (see `Engine::promote`).
        self.sync_wal()?;
        let change = lock(&self.role).promote_after(seen).map_err(role_error)?;
        // Nothing appends between here and the end of the change: host writes are refused
        // while it is persisted, and a standby's replication applies nothing to a primary.
        let last = self.last_lsn();
        self.persist_role(change)?;
        Ok(last)
    }

    /// Role, epoch and the access state taken together (one look at the role machine), so a
    /// view never pairs a new epoch with an old state or the reverse.
    pub fn role_snapshot(&self) -> (crate::role::RoleState, crate::role::AccessState) {
        let m = lock(&self.role);
        (m.state(), m.access_state(std::time::Instant::now()))
    }

    /// Sets, durably, the position in the primary's log through which this standby holds the
    /// primary's image: after a handover (the new primary's last LSN when it took over), or
    /// 0 when the image has no known position in the primary's log (a full resync follows).
    /// Serialised with the checkpoint, which stores the same position. The origins of the
    /// records already in the log (another primary's LSNs, if any) no longer count towards it.
    pub fn set_applied_position(&self, lsn: u64) -> Result<()> {
        self.check_alive()?;
        let _only_one = lock(&self.flush_lock);
        let from = lock(&self.log).next_lsn;
        self.applied_lsn.store(lsn, Ordering::Release);
        self.applied_from.store(from, Ordering::Release);
        self.storage
            .replace(APPLIED_METADATA, &encode_applied(lsn, from))
            .map_err(|e| self.fail(e))
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::{CreateOptions, Engine, OpenOptions};
    use crate::error::Error;
    use crate::role::{AccessState, Role};
    use crate::sim::SimStorage;

    fn engine() -> std::sync::Arc<Engine> {
        let s = SimStorage::new();
        crate::engine::create(
            &s,
            &CreateOptions {
                block_size: 512,
                capacity_bytes: 1 << 20,
                wal_bytes: 256 << 10,
                role: Role::Primary,
                epoch: 3,
            },
        )
        .unwrap();
        Engine::open(&s, OpenOptions::default()).unwrap()
    }

    #[test]
    fn a_drained_demotion_refuses_io_while_settling_and_is_abandoned_when_settling_fails() {
        let e = engine();
        e.write(0, &[1u8; 512], false).unwrap();
        let r = e.demote_drained(|e| {
            assert_eq!(e.access_state(), AccessState::Transitioning);
            assert!(matches!(
                e.write(1, &[2u8; 512], false),
                Err(Error::NotServing(AccessState::Transitioning))
            ));
            e.flush()?;
            Err(Error::Invalid("the standby is not up to date".into()))
        });
        assert!(matches!(r, Err(Error::Invalid(_))));
        assert_eq!(e.access_state(), AccessState::Optimized, "serves again");
        assert_eq!(e.role_state().epoch, 3);
        e.demote_drained(|e| e.flush()).unwrap();
        assert_eq!(
            (e.role_state().role, e.role_state().epoch),
            (Role::Standby, 4)
        );
        // The peer stepped down under 4... and this node takes over under 5 (as in the
        // return trip of a switchover).
        let last = e.promote_after(4).unwrap();
        assert_eq!(last, e.last_lsn());
        assert_eq!(
            (e.role_state().role, e.role_state().epoch),
            (Role::Primary, 5)
        );
        e.set_applied_position(9).unwrap();
        assert_eq!(e.applied_lsn(), 9);
    }
}
