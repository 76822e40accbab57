//! One reservation state for SCSI nexuses and NVMe hosts: NVMe-style requests (the
//! host-level register/acquire/release of block-core) applied to the state a logical unit
//! shares, checked against what SCSI commands through the unit then see.

use block_core::reservation::{
    AcquireAction as PrAcquireAction, AcquireRequest as PrAcquire, Effect,
    RegisterAction as PrRegisterAction, RegisterRequest as PrRegister, ReleaseRequest as PrRelease,
    ReservationState,
};
use block_core::{Access, Registrant as PortId, ReservationError, ReservationType as PrType};
use bytes::Bytes;

use crate::scsi::task::{BlockOp, BlockResult, Nexus, Status, Step};
use crate::scsi::unit::LogicalUnit;
use crate::scsi::LuConfig;

/// Why a request was refused, as NVMe reports it: a conflict, or an invalid field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrFailure {
    Conflict,
    Invalid,
}

fn outcome(r: Result<Effect, ReservationError>) -> Result<bool, PrFailure> {
    match r {
        Ok(fx) => Ok(fx.changed),
        Err(ReservationError::Conflict) => Err(PrFailure::Conflict),
        Err(_) => Err(PrFailure::Invalid),
    }
}

/// The NVMe front end's view of the unit's shared reservation state.
trait Shared {
    fn pr_register(&mut self, who: &PortId, req: PrRegister) -> Result<bool, PrFailure>;
    fn pr_acquire(&mut self, who: &PortId, req: PrAcquire) -> Result<bool, PrFailure>;
    fn pr_release(&mut self, who: &PortId, req: PrRelease) -> Result<bool, PrFailure>;
    fn pr_allows(&self, who: &PortId, write: bool) -> bool;
    fn pr_state(&self) -> ReservationState;
}

impl Shared for LogicalUnit {
    fn pr_register(&mut self, who: &PortId, req: PrRegister) -> Result<bool, PrFailure> {
        outcome(self.reservations().lock().apply_register(who, req))
    }
    fn pr_acquire(&mut self, who: &PortId, req: PrAcquire) -> Result<bool, PrFailure> {
        outcome(self.reservations().lock().apply_acquire(who, req))
    }
    fn pr_release(&mut self, who: &PortId, req: PrRelease) -> Result<bool, PrFailure> {
        outcome(self.reservations().lock().apply_release(who, req))
    }
    fn pr_allows(&self, who: &PortId, write: bool) -> bool {
        let access = if write { Access::Write } else { Access::Read };
        self.reservations().lock().allows(who, access)
    }
    fn pr_state(&self) -> ReservationState {
        self.reservations().lock().state().clone()
    }
}

/// The 24-byte PR OUT parameter list of SPC-4 6.16.3.
fn params(res_key: u64, sa_key: u64, aptpl: bool) -> [u8; 24] {
    let mut p = [0u8; 24];
    p[0..8].copy_from_slice(&res_key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[20] = u8::from(aptpl);
    p
}

fn lu() -> LogicalUnit {
    LogicalUnit::new(LuConfig::new(512, [7; 16]), 1024)
}

fn nvme(n: u8) -> PortId {
    PortId::Nvme {
        host_nqn: format!("nqn.host{n}"),
        host_id: [n; 16],
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
    crate::scsi::pr::registrant(n)
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
    let again = lu();
    again
        .reservations()
        .lock()
        .restore(ReservationState::from_bytes(&bytes).unwrap());
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
