//! Persistent reservation operations without CDBs, for registrants that are not SCSI I_T
//! nexuses.
//!
//! A volume exported over iSCSI and NVMe/TCP has ONE reservation state: the NVMe base
//! specification defines its reservation types as the SCSI ones (section 8.19, "Reservations"),
//! so an NVMe host's registration and reservation are entries of the logical unit's
//! [`PrState`] next to the SCSI nexuses'. An NVMe host is a registrant identified by a
//! [`PortId`] the caller derives from its Host Identifier; these methods apply the NVMe
//! Reservation Register/Acquire/Release semantics to that shared state by way of the SPC-4
//! service actions of [`pr_cmd::pr_out`], so both protocols see the same rules (the conflict
//! table, PREEMPT, CLEAR, unit attentions for the SCSI nexuses affected).

use super::opcodes::PrClass;
use super::pr::{PortId, PrType};
use super::pr_cmd::{self, PrOutError};
use super::unit::LogicalUnit;

/// Why a reservation operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrFailure {
    /// Key mismatch, not a registrant, or the reservation is held otherwise (NVMe status
    /// Reservation Conflict).
    Conflict,
    /// A field is invalid for the current state, e.g. a zero key or a release of the wrong
    /// type (NVMe status Invalid Field in Command).
    Invalid,
}

/// What a register operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrRegisterAction {
    /// Register with this key; registering again with the same key is a no-op.
    Register {
        /// The new reservation key (non-zero).
        new_key: u64,
    },
    /// Remove the registration (and the reservation it holds).
    Unregister,
    /// Replace the registered key.
    Replace {
        /// The new reservation key (non-zero).
        new_key: u64,
    },
}

/// A register, unregister or replace request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrRegister {
    /// What to do.
    pub action: PrRegisterAction,
    /// The key the requester believes it holds (checked unless `ignore_key`).
    pub current_key: u64,
    /// Ignore Existing Key: skip the current-key check.
    pub ignore_key: bool,
    /// New Persist Through Power Loss state, when the request changes it.
    pub ptpl: Option<bool>,
}

/// What an acquire operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrAcquireAction {
    /// Create the reservation (or confirm the one held, same type).
    Acquire,
    /// Remove the registrants holding `key`, taking their reservation.
    Preempt {
        /// Key of the registrants to preempt.
        key: u64,
    },
    /// Preempt, and abort the victims' commands.
    PreemptAndAbort {
        /// Key of the registrants to preempt.
        key: u64,
    },
}

/// An acquire or preempt request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrAcquire {
    /// What to do.
    pub action: PrAcquireAction,
    /// Reservation type to hold.
    pub kind: PrType,
    /// The requester's key (checked unless `ignore_key`).
    pub current_key: u64,
    /// Ignore Existing Key: skip the current-key check (the requester must be registered).
    pub ignore_key: bool,
}

/// A release or clear request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrRelease {
    /// Clear the reservation and every registration instead of releasing.
    pub clear: bool,
    /// Type of the reservation being released (must match the one held).
    pub kind: Option<PrType>,
    /// The requester's key (checked unless `ignore_key`).
    pub current_key: u64,
    /// Ignore Existing Key: skip the current-key check (the requester must be registered).
    pub ignore_key: bool,
}

/// The 24-byte PR OUT parameter list of SPC-4 6.16.3.
fn params(res_key: u64, sa_key: u64, aptpl: bool) -> [u8; 24] {
    let mut p = [0u8; 24];
    p[0..8].copy_from_slice(&res_key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[20] = u8::from(aptpl);
    p
}

impl LogicalUnit {
    /// Runs one SPC-4 service action for `who` and delivers its unit attentions to the SCSI
    /// nexuses concerned. Returns whether the state changed (and so must be persisted).
    fn pr_apply(
        &mut self,
        who: &PortId,
        sa: u8,
        scope_type: u8,
        p: [u8; 24],
    ) -> Result<bool, PrFailure> {
        let fx = match pr_cmd::pr_out(&mut self.pr, who, sa, scope_type, &p) {
            Ok(fx) => fx,
            Err(PrOutError::Conflict) => return Err(PrFailure::Conflict),
            Err(PrOutError::Check(_)) => return Err(PrFailure::Invalid),
        };
        for (port, asc) in &fx.unit_attentions {
            self.raise_for_port(port, *asc);
        }
        Ok(fx.changed)
    }

    /// The registered key of `who`, checked against `current_key` unless `ignore_key`.
    fn pr_key(&self, who: &PortId, current_key: u64, ignore_key: bool) -> Result<u64, PrFailure> {
        match self.pr.registration(who) {
            Some(r) if ignore_key || r.key == current_key => Ok(r.key),
            _ => Err(PrFailure::Conflict),
        }
    }

    /// Registers, unregisters or replaces the key of `who` (NVMe Reservation Register).
    /// Returns whether the reservation state changed.
    pub fn pr_register(&mut self, who: &PortId, req: PrRegister) -> Result<bool, PrFailure> {
        let aptpl = req.ptpl.unwrap_or(self.pr.aptpl);
        let mine = self.pr.registration(who).map(|r| r.key);
        let new_key = match req.action {
            PrRegisterAction::Register { new_key } => {
                if new_key == 0 {
                    return Err(PrFailure::Invalid);
                }
                match mine {
                    Some(k) if k == new_key => {
                        return self.pr_set_ptpl(aptpl);
                    }
                    Some(_) => return Err(PrFailure::Conflict),
                    None => new_key,
                }
            }
            PrRegisterAction::Unregister => {
                self.pr_key(who, req.current_key, req.ignore_key)?;
                0
            }
            PrRegisterAction::Replace { new_key } => {
                self.pr_key(who, req.current_key, req.ignore_key)?;
                if new_key == 0 {
                    return Err(PrFailure::Invalid);
                }
                new_key
            }
        };
        let p = params(0, new_key, aptpl);
        self.pr_apply(who, pr_cmd::SA_REGISTER_AND_IGNORE, 0, p)
    }

    fn pr_set_ptpl(&mut self, aptpl: bool) -> Result<bool, PrFailure> {
        let changed = self.pr.aptpl != aptpl;
        self.pr.aptpl = aptpl;
        Ok(changed)
    }

    /// Acquires or preempts on behalf of `who` (NVMe Reservation Acquire). Returns whether
    /// the reservation state changed. Preempt-and-abort preempts; aborting the victims'
    /// commands is the caller's business.
    pub fn pr_acquire(&mut self, who: &PortId, req: PrAcquire) -> Result<bool, PrFailure> {
        let key = self.pr_key(who, req.current_key, req.ignore_key)?;
        let (sa, victim) = match req.action {
            PrAcquireAction::Acquire => (pr_cmd::SA_RESERVE, 0),
            PrAcquireAction::Preempt { key } => (pr_cmd::SA_PREEMPT, key),
            PrAcquireAction::PreemptAndAbort { key } => (pr_cmd::SA_PREEMPT_AND_ABORT, key),
        };
        let p = params(key, victim, false);
        self.pr_apply(who, sa, req.kind.code(), p)
    }

    /// Releases or clears on behalf of `who` (NVMe Reservation Release). Releasing a
    /// reservation one does not hold succeeds without effect. Returns whether the reservation
    /// state changed.
    pub fn pr_release(&mut self, who: &PortId, req: PrRelease) -> Result<bool, PrFailure> {
        let key = self.pr_key(who, req.current_key, req.ignore_key)?;
        let sa = if req.clear {
            pr_cmd::SA_CLEAR
        } else {
            pr_cmd::SA_RELEASE
        };
        let code = req.kind.map_or(0, PrType::code);
        self.pr_apply(who, sa, code, params(key, 0, false))
    }

    /// Whether a media access by `who` (a read, or a write when `write`) is allowed under the
    /// current reservations: false means the command completes with a reservation conflict.
    /// A SCSI RESERVE(6) excludes every registrant that is not a SCSI nexus.
    pub fn pr_allows(&self, who: &PortId, write: bool) -> bool {
        let class = if write { PrClass::Write } else { PrClass::Read };
        self.reserve6.is_none() && !self.pr.conflicts(who, class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::task::{BlockOp, BlockResult, Nexus, Status, Step};
    use crate::scsi::LuConfig;
    use bytes::Bytes;

    fn lu() -> LogicalUnit {
        LogicalUnit::new(LuConfig::new(512, [7; 16]), 1024)
    }

    fn nvme(n: u8) -> PortId {
        PortId {
            initiator_port: format!("nqn.host{n},hostid=0{n}"),
            relative_port: 0,
        }
    }

    fn scsi_nexus(id: u64) -> Nexus {
        Nexus {
            id,
            initiator_port: format!("iqn.2026-01.test:i{id},i,0x00023d000001"),
            target_port_group: 1,
            relative_port: 1,
        }
    }

    fn scsi_port(n: &Nexus) -> PortId {
        PortId {
            initiator_port: n.initiator_port.clone(),
            relative_port: n.relative_port,
        }
    }

    fn register(key: u64) -> PrRegister {
        PrRegister {
            action: PrRegisterAction::Register { new_key: key },
            current_key: 0,
            ignore_key: false,
            ptpl: None,
        }
    }

    fn acquire(key: u64, kind: PrType) -> PrAcquire {
        PrAcquire {
            action: PrAcquireAction::Acquire,
            kind,
            current_key: key,
            ignore_key: false,
        }
    }

    fn release(key: u64, kind: PrType) -> PrRelease {
        PrRelease {
            clear: false,
            kind: Some(kind),
            current_key: key,
            ignore_key: false,
        }
    }

    /// Runs a SCSI command through the LU, clearing the initial power-on UA first.
    fn scsi(lu: &mut LogicalUnit, n: &Nexus, cdb: &[u8], data: &[u8]) -> Status {
        let mut step = lu.start(n, cdb, data.len() as u32);
        loop {
            match step {
                Step::Done(c) => return c.status,
                Step::NeedDataOut { task, .. } => {
                    step = lu.data_out(n, task, Bytes::copy_from_slice(data))
                }
                Step::Io { op, task } => {
                    let result = match op {
                        BlockOp::Read { blocks, .. } => {
                            BlockResult::Data(Bytes::from(vec![0; blocks as usize * 512]))
                        }
                        _ => BlockResult::Ok,
                    };
                    return lu.io_done(task, result).status;
                }
            }
        }
    }

    fn write10() -> [u8; 10] {
        [0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0]
    }

    fn pr_out(sa: u8, kind: u8, res: u64, sa_key: u64) -> ([u8; 10], [u8; 24]) {
        let cdb = [0x5F, sa, kind, 0, 0, 0, 0, 0, 24, 0];
        (cdb, params(res, sa_key, false))
    }

    #[test]
    fn register_rules_follow_nvme() {
        let mut u = lu();
        let h = nvme(1);
        assert_eq!(u.pr_register(&h, register(0)), Err(PrFailure::Invalid));
        assert_eq!(u.pr_register(&h, register(5)), Ok(true));
        assert_eq!(u.pr_register(&h, register(5)), Ok(false), "same key again");
        assert_eq!(u.pr_register(&h, register(6)), Err(PrFailure::Conflict));
        let replace = |cur, new, ignore| PrRegister {
            action: PrRegisterAction::Replace { new_key: new },
            current_key: cur,
            ignore_key: ignore,
            ptpl: Some(true),
        };
        assert_eq!(
            u.pr_register(&h, replace(9, 7, false)),
            Err(PrFailure::Conflict)
        );
        assert_eq!(u.pr_register(&h, replace(9, 7, true)), Ok(true));
        assert_eq!(u.pr_state().registration(&h).map(|r| r.key), Some(7));
        assert!(u.pr_state().aptpl);
        assert_eq!(
            u.pr_register(&nvme(2), replace(0, 3, true)),
            Err(PrFailure::Conflict),
            "a non-registrant cannot replace"
        );
        let unreg = PrRegister {
            action: PrRegisterAction::Unregister,
            current_key: 7,
            ignore_key: false,
            ptpl: None,
        };
        let gen = u.pr_state().generation;
        assert_eq!(u.pr_register(&h, unreg), Ok(true));
        assert!(u.pr_state().registrations.is_empty());
        assert_eq!(u.pr_state().generation, gen + 1);
    }

    #[test]
    fn scsi_reservation_excludes_nvme_writes_not_reads() {
        let mut u = lu();
        let n = scsi_nexus(1);
        // clear the power-on unit attention
        assert_eq!(scsi(&mut u, &n, &[0; 6], &[]), Status::CheckCondition);
        let (cdb, p) = pr_out(0, 0, 0, 0xAB);
        assert_eq!(scsi(&mut u, &n, &cdb, &p), Status::Good);
        let (cdb, p) = pr_out(1, 1, 0xAB, 0); // RESERVE, Write Exclusive
        assert_eq!(scsi(&mut u, &n, &cdb, &p), Status::Good);
        let h = nvme(1);
        assert!(!u.pr_allows(&h, true));
        assert!(u.pr_allows(&h, false));
        // a registered NVMe host may not acquire what the SCSI nexus holds
        u.pr_register(&h, register(1)).unwrap();
        assert_eq!(
            u.pr_acquire(&h, acquire(1, PrType::WriteExclusive)),
            Err(PrFailure::Conflict)
        );
        // release over SCSI lifts it
        let (cdb, p) = pr_out(2, 1, 0xAB, 0);
        assert_eq!(scsi(&mut u, &n, &cdb, &p), Status::Good);
        assert!(u.pr_allows(&h, true));
    }

    #[test]
    fn nvme_reservation_excludes_scsi_writes_until_released() {
        let mut u = lu();
        let n = scsi_nexus(1);
        assert_eq!(scsi(&mut u, &n, &[0; 6], &[]), Status::CheckCondition);
        let h = nvme(1);
        u.pr_register(&h, register(0x11)).unwrap();
        assert_eq!(
            u.pr_acquire(&h, acquire(0x12, PrType::WriteExclusive)),
            Err(PrFailure::Conflict)
        );
        assert_eq!(
            u.pr_acquire(&h, acquire(0x11, PrType::WriteExclusive)),
            Ok(true)
        );
        assert_eq!(
            u.pr_acquire(&h, acquire(0x11, PrType::WriteExclusive)),
            Ok(false)
        );
        assert!(u.pr_allows(&h, true));
        assert_eq!(
            scsi(&mut u, &n, &write10(), &[0; 512]),
            Status::ReservationConflict
        );
        let read10 = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(scsi(&mut u, &n, &read10, &[]), Status::Good);
        assert!(!u.pr_allows(&nvme(2), true));
        // releasing with the wrong type is refused, the right one lifts the conflict
        assert_eq!(
            u.pr_release(&h, release(0x11, PrType::ExclusiveAccess)),
            Err(PrFailure::Invalid)
        );
        assert_eq!(
            u.pr_release(&h, release(0x11, PrType::WriteExclusive)),
            Ok(true)
        );
        assert_eq!(scsi(&mut u, &n, &write10(), &[0; 512]), Status::Good);
        // and the persisted form carries the NVMe registrant
        let bytes = u.pr_state().to_bytes();
        let mut again = lu();
        again.load_pr_state(&bytes).unwrap();
        assert_eq!(again.pr_state().registration(&h).map(|r| r.key), Some(0x11));
    }

    #[test]
    fn registrants_only_admits_registered_scsi_nexus_and_preempt_moves_it() {
        let mut u = lu();
        let n = scsi_nexus(1);
        assert_eq!(scsi(&mut u, &n, &[0; 6], &[]), Status::CheckCondition);
        let (cdb, p) = pr_out(0, 0, 0, 0xAB);
        assert_eq!(scsi(&mut u, &n, &cdb, &p), Status::Good);
        let h = nvme(1);
        u.pr_register(&h, register(0x11)).unwrap();
        u.pr_acquire(&h, acquire(0x11, PrType::WriteExclusiveRegistrantsOnly))
            .unwrap();
        assert_eq!(scsi(&mut u, &n, &write10(), &[0; 512]), Status::Good);
        assert!(!u.pr_allows(&nvme(3), true));
        // the SCSI nexus preempts the NVMe host's registration and reservation
        let (cdb, p) = pr_out(4, 1, 0xAB, 0x11);
        assert_eq!(scsi(&mut u, &n, &cdb, &p), Status::Good);
        assert!(u.pr_state().registration(&h).is_none());
        assert!(u.pr_state().is_holder(&scsi_port(&n)));
        assert!(!u.pr_allows(&h, true));
        // an NVMe preempt in return raises REGISTRATIONS PREEMPTED on the nexus
        u.pr_register(&h, register(0x22)).unwrap();
        let pre = PrAcquire {
            action: PrAcquireAction::Preempt { key: 0xAB },
            kind: PrType::ExclusiveAccess,
            current_key: 0x22,
            ignore_key: false,
        };
        assert_eq!(u.pr_acquire(&h, pre), Ok(true));
        assert!(u.pr_state().is_holder(&h));
        assert_eq!(scsi(&mut u, &n, &[0; 6], &[]), Status::CheckCondition, "UA");
        let read10 = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(scsi(&mut u, &n, &read10, &[]), Status::ReservationConflict);
    }

    #[test]
    fn clear_drops_everything_and_scsi_reserve6_excludes_nvme() {
        let mut u = lu();
        let h = nvme(1);
        u.pr_register(&h, register(1)).unwrap();
        u.pr_acquire(&h, acquire(1, PrType::ExclusiveAccess))
            .unwrap();
        assert_eq!(
            u.pr_release(&nvme(2), release(1, PrType::ExclusiveAccess)),
            Err(PrFailure::Conflict),
            "non-registrant"
        );
        let clear = PrRelease {
            clear: true,
            kind: None,
            current_key: 1,
            ignore_key: false,
        };
        assert_eq!(u.pr_release(&h, clear), Ok(true));
        assert_eq!(u.pr_state().registrations.len(), 0);
        assert!(u.pr_state().reservation.is_none());
        let n = scsi_nexus(4);
        assert_eq!(scsi(&mut u, &n, &[0; 6], &[]), Status::CheckCondition);
        assert_eq!(scsi(&mut u, &n, &[0x16, 0, 0, 0, 0, 0], &[]), Status::Good);
        assert!(!u.pr_allows(&h, false));
    }
}
