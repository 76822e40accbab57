//! Running NVMe I/O commands on the volume behind a namespace: the reservation check, the
//! reservation commands on the volume's one reservation state, and every media operation
//! through the volume target's one executor.

use block_core::{Access, BlockOp, BlockResult, Registrant};
use proto_nvmeof::reservation;
use proto_nvmeof::{IoOp, IoResult, ReservationRequest};

use crate::counters::IoCounters;
use crate::target::VolumeTarget;

/// Counts `op` for the host that sent it.
fn count(counters: &IoCounters, op: &IoOp, block_size: u32) {
    match op {
        IoOp::Read { blocks, .. } => counters.read(u64::from(*blocks) * u64::from(block_size)),
        IoOp::Write { data, .. } => counters.write(data.len() as u64),
        _ => counters.other(),
    }
}

/// Carries out one operation from NVMe host `who` on volume target `t`: reservation commands
/// act on the volume's shared reservation state, and every other command first passes the
/// reservation check (Reservation Conflict when the state excludes the host). Reads are Read
/// and Compare; everything else that touches the medium (Write, Write Zeroes, Dataset
/// Management, Flush) is in the write group of the NVMe base specification.
pub(super) async fn run(
    t: &VolumeTarget,
    who: &Registrant,
    op: IoOp,
    counters: &IoCounters,
) -> IoResult {
    count(counters, &op, t.volume.volume.block_size());
    let access = match &op {
        IoOp::Read { .. } => Access::Read,
        IoOp::Reservation(_) => Access::Allowed,
        _ => Access::Write,
    };
    if !t.reservations().lock().allows(who, access) {
        return IoResult::ReservationConflict;
    }
    let op = match op {
        IoOp::Read { lba, blocks } => BlockOp::Read { lba, blocks },
        IoOp::Write { lba, data, fua } => BlockOp::Write { lba, data, fua },
        IoOp::Flush => BlockOp::Flush,
        IoOp::WriteZeroes {
            lba,
            blocks,
            deallocate,
            fua,
        } => BlockOp::WriteZeroes {
            lba,
            blocks,
            deallocate,
            fua,
        },
        IoOp::Deallocate { ranges } => BlockOp::Deallocate { ranges },
        IoOp::Reservation(req) => return reserve(t, who, req).await,
    };
    io_result(t.execute(op).await)
}

/// Applies an NVMe reservation request from host `who` to the volume's state, persisting the
/// state before answering when it changed (a failure to persist is a write fault: the host must
/// not believe a change that would not survive a restart).
async fn reserve(t: &VolumeTarget, who: &Registrant, req: ReservationRequest) -> IoResult {
    let (outcome, fx) = reservation::apply(&mut t.reservations().lock(), who, req);
    if fx.changed && t.execute(BlockOp::PersistReservations).await != BlockResult::Ok {
        return IoResult::MediumError;
    }
    IoResult::Reservation(outcome)
}

/// The NVMe result of a block result (the NVMe core turns it into a status).
fn io_result(r: BlockResult) -> IoResult {
    match r {
        BlockResult::Ok => IoResult::Ok,
        BlockResult::Data(d) => IoResult::Data(d),
        BlockResult::OutOfRange => IoResult::OutOfRange,
        BlockResult::AccessState(s) => IoResult::Ana(s.into()),
        BlockResult::MediumError => IoResult::MediumError,
        BlockResult::ReservationConflict => IoResult::ReservationConflict,
        BlockResult::Miscompare { .. } | BlockResult::LbaStatus(_) | BlockResult::Internal => {
            IoResult::Internal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use block_core::AccessState;
    use proto_nvmeof::AnaState;

    #[test]
    fn roles_map_to_retryable_ana_results() {
        assert_eq!(
            io_result(BlockResult::AccessState(AccessState::Standby)),
            IoResult::Ana(AnaState::Inaccessible)
        );
        assert_eq!(
            io_result(BlockResult::AccessState(AccessState::Unavailable)),
            IoResult::Ana(AnaState::Inaccessible)
        );
        assert_eq!(
            io_result(BlockResult::AccessState(AccessState::Transitioning)),
            IoResult::Ana(AnaState::Change)
        );
        // and those are the statuses of the role table, DNR clear
        let s = AnaState::Inaccessible.io_status().unwrap();
        assert_eq!((s.sct(), s.sc(), s.is_dnr()), (3, 0x02, false));
        let s = AnaState::Change.io_status().unwrap();
        assert_eq!((s.sct(), s.sc(), s.is_dnr()), (3, 0x03, false));
        assert_eq!(io_result(BlockResult::MediumError), IoResult::MediumError);
    }
}
