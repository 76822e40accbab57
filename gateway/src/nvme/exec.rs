//! Running NVMe I/O operations on the volume behind a namespace, and the one place volume
//! errors become NVMe results.

use blockstore::Error as VolError;
use bytes::Bytes;
use proto_iscsi::scsi::PortId;
use proto_nvmeof::{AnaState, IoOp, IoResult};

use super::subsys::ana_state;
use crate::counters::IoCounters;
use crate::lu::LuHandle;
use crate::reservations;

/// Counts `op` for the host that sent it.
fn count(counters: &IoCounters, op: &IoOp, block_size: u32) {
    match op {
        IoOp::Read { blocks, .. } => counters.read(u64::from(*blocks) * u64::from(block_size)),
        IoOp::Write { data, .. } => counters.write(data.len() as u64),
        _ => counters.other(),
    }
}

/// Carries out one operation from NVMe host `who` on the volume behind `lu`: reservation
/// commands act on the volume's shared reservation state, and every other command first
/// passes the reservation check (Reservation Conflict when the state excludes the host).
pub(super) async fn run(lu: &LuHandle, who: &PortId, op: IoOp, counters: &IoCounters) -> IoResult {
    let vol = &lu.volume.volume;
    count(counters, &op, vol.block_size());
    if !reservations::allows(lu, who, &op) {
        return IoResult::ReservationConflict;
    }
    let r = match op {
        IoOp::Read { lba, blocks } => {
            return match vol.read(lba, u64::from(blocks)).await {
                Ok(d) => IoResult::Data(Bytes::from(d)),
                Err(e) => io_error(e),
            }
        }
        IoOp::Write { lba, data, fua } => vol.write(lba, Vec::from(data), fua).await,
        IoOp::Flush => vol.flush().await,
        IoOp::WriteZeroes {
            lba,
            blocks,
            deallocate,
            fua,
        } => {
            // DLFEAT promises deallocated blocks read as zeros, so a trim is a valid way to
            // zero when the host allows deallocation.
            if deallocate {
                vol.trim(lba, u64::from(blocks)).await
            } else {
                vol.write_zeroes(lba, u64::from(blocks), fua).await
            }
        }
        IoOp::Deallocate { ranges } => {
            for (lba, blocks) in ranges {
                if let Err(e) = vol.trim(lba, u64::from(blocks)).await {
                    return io_error(e);
                }
            }
            Ok(())
        }
        IoOp::Reservation(req) => return reservations::apply(lu, who, req).await,
    };
    match r {
        Ok(()) => IoResult::Ok,
        Err(e) => io_error(e),
    }
}

/// The one place volume errors become NVMe results (and so statuses): a role that cannot
/// serve is an ANA path status with DNR clear (0x302 inaccessible, 0x303 change) so the host
/// retries on another path; a range error is LBA Out of Range; storage failures are media
/// errors (Unrecovered Read Error / Write Fault); anything else is an internal error.
pub(super) fn io_error(e: VolError) -> IoResult {
    match e {
        VolError::NotServing(s) => IoResult::Ana(ana_state(s)),
        // Closing for shutdown: the path is about to go away, the host should retry elsewhere.
        VolError::Closed => IoResult::Ana(AnaState::Change),
        VolError::OutOfRange { .. } => IoResult::OutOfRange,
        VolError::Io(_) | VolError::Failed | VolError::LogFull { .. } => {
            tracing::error!(error = %e, "volume I/O failed");
            IoResult::MediumError
        }
        other => {
            tracing::error!(error = %other, "volume request failed");
            IoResult::Internal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockstore::AccessState;

    #[test]
    fn roles_map_to_retryable_ana_results() {
        assert_eq!(
            io_error(VolError::NotServing(AccessState::Standby)),
            IoResult::Ana(AnaState::Inaccessible)
        );
        assert_eq!(
            io_error(VolError::NotServing(AccessState::Unavailable)),
            IoResult::Ana(AnaState::Inaccessible)
        );
        assert_eq!(
            io_error(VolError::NotServing(AccessState::Transitioning)),
            IoResult::Ana(AnaState::Change)
        );
        // and those are the statuses of the role table, DNR clear
        let s = AnaState::Inaccessible.io_status().unwrap();
        assert_eq!((s.sct(), s.sc(), s.is_dnr()), (3, 0x02, false));
        let s = AnaState::Change.io_status().unwrap();
        assert_eq!((s.sct(), s.sc(), s.is_dnr()), (3, 0x03, false));
        assert_eq!(io_error(VolError::Failed), IoResult::MediumError);
    }
}
