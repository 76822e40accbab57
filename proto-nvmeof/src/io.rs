//! NVM command set I/O commands (Read, Write, Flush, Compare, Write Zeroes, Dataset
//! Management, reservations) turned into [`IoOp`]s for the caller, and the caller's
//! [`IoResult`] turned back into a completion.
//!
//! Checks happen in the order a host can act on: namespace, ANA state of this path (a
//! retryable path error so multipath fails over), then field and range validation.

use block_core::{Access, BlockOp, BlockResult};
use bytes::Bytes;

use crate::cqe::Response;
use crate::reservation::{self, Requester, ReservationOutcome, ReservationRequest};
use crate::sqe::Sqe;
use crate::status::Status;
use crate::subsystem::{AnaState, Namespace, Subsystem, TargetConfig};

/// NVM command set opcodes handled here.
pub mod opcode {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
    /// Compare.
    pub const COMPARE: u8 = 0x05;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// Dataset Management.
    pub const DSM: u8 = 0x09;
}

/// Identifies an in-flight command between [`crate::Event::Io`] and
/// [`crate::Connection::io_done`]: the command identifier (unique per queue while in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IoTag(pub u16);

/// What the caller must do for one I/O command. LBAs and counts are in the namespace's
/// logical blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoOp {
    /// A block operation on the volume, in the vocabulary both protocols share; answer
    /// [`IoResult::Block`].
    Block(BlockOp),
    /// Apply a reservation request to the volume's shared reservation state
    /// ([`crate::reservation::apply`]); answer [`IoResult::Reservation`].
    Reservation(ReservationRequest),
}

impl IoOp {
    /// How the command touches the medium, for the reservation check (NVMe base 2.0 figure
    /// 550): Read and Compare read; Write, Write Zeroes, Dataset Management and Flush are in
    /// the write group; reservation commands never conflict.
    pub fn access(&self) -> Access {
        match self {
            IoOp::Block(BlockOp::Read { .. }) => Access::Read,
            IoOp::Block(_) => Access::Write,
            IoOp::Reservation(_) => Access::Allowed,
        }
    }
}

/// The caller's answer to an [`IoOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoResult {
    /// The outcome of a block operation (the reservation check's conflict included).
    Block(BlockResult),
    /// Outcome of a reservation request.
    Reservation(ReservationOutcome),
}

impl From<BlockResult> for IoResult {
    fn from(r: BlockResult) -> Self {
        IoResult::Block(r)
    }
}

/// What a suspended I/O command does with its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pending {
    Read { len: usize },
    Compare { expected: Bytes },
    Write,
    Reservation { report: Option<(u64, bool)> },
    Other,
}

/// First step of an I/O command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start {
    Done(Response),
    Issue(IoOp, Pending),
}

struct Rw {
    lba: u64,
    blocks: u32,
    fua: bool,
}

fn rw_fields(sqe: &Sqe) -> Rw {
    let cdw12 = sqe.cdw(12);
    Rw {
        lba: (u64::from(sqe.cdw(11)) << 32) | u64::from(sqe.cdw(10)),
        blocks: (cdw12 & 0xFFFF) + 1,
        fua: cdw12 & (1 << 30) != 0,
    }
}

fn check_range(ns: &Namespace, lba: u64, blocks: u32) -> Result<(), Status> {
    match lba.checked_add(u64::from(blocks)) {
        Some(end) if end <= ns.blocks => Ok(()),
        _ => Err(Status::LBA_OUT_OF_RANGE.dnr()),
    }
}

/// Validates a read/write-like command and its transfer length; returns the byte length.
fn rw_len(ns: &Namespace, rw: &Rw, sqe: &Sqe, cfg: &TargetConfig) -> Result<usize, Status> {
    if (sqe.cdw(12) >> 26) & 0xF != 0 {
        return Err(Status::INVALID_FIELD.dnr()); // protection information not supported
    }
    let len = u64::from(rw.blocks) * u64::from(ns.block_size);
    if len > u64::from(cfg.max_transfer()) {
        return Err(Status::INVALID_FIELD.dnr());
    }
    if u64::from(sqe.sgl().length) != len {
        return Err(Status::SGL_INVALID_DATA.dnr());
    }
    check_range(ns, rw.lba, rw.blocks)?;
    Ok(len as usize)
}

/// Starts I/O command `sqe` with its host-to-controller `data`. With `write_through` (the
/// controller's volatile write cache is off) every write is durable before it completes.
pub(crate) fn start(
    sqe: &Sqe,
    data: Bytes,
    subsys: &Subsystem,
    requester: Requester,
    cfg: &TargetConfig,
    write_through: bool,
) -> Start {
    match start_inner(sqe, data, subsys, requester, cfg, write_through) {
        Ok(s) => s,
        Err(status) => Start::Done(Response::status(sqe.cid(), status)),
    }
}

fn start_inner(
    sqe: &Sqe,
    data: Bytes,
    subsys: &Subsystem,
    requester: Requester,
    cfg: &TargetConfig,
    write_through: bool,
) -> Result<Start, Status> {
    let cid = sqe.cid();
    let ns = subsys
        .namespace(sqe.nsid())
        .ok_or(Status::INVALID_NS.dnr())?;
    if let Some(status) = subsys.ana_state(ns.ana_group).io_status() {
        return Err(status);
    }
    // The one place write protection is decided for NVMe: nothing that would change a
    // write-protected namespace reaches the volume (a Dataset Management without the
    // deallocate attribute changes nothing and succeeds below).
    if ns.write_protected
        && (matches!(sqe.opcode(), opcode::WRITE | opcode::WRITE_ZEROES)
            || (sqe.opcode() == opcode::DSM && sqe.cdw(11) & (1 << 2) != 0))
    {
        return Err(Status::NS_WRITE_PROTECTED.dnr());
    }
    Ok(match sqe.opcode() {
        opcode::READ => {
            let rw = rw_fields(sqe);
            let len = rw_len(ns, &rw, sqe, cfg)?;
            Start::Issue(
                IoOp::Block(BlockOp::Read {
                    lba: rw.lba,
                    blocks: rw.blocks,
                }),
                Pending::Read { len },
            )
        }
        opcode::WRITE => {
            let rw = rw_fields(sqe);
            let len = rw_len(ns, &rw, sqe, cfg)?;
            if data.len() != len {
                return Err(Status::SGL_INVALID_DATA.dnr());
            }
            Start::Issue(
                IoOp::Block(BlockOp::Write {
                    lba: rw.lba,
                    data,
                    fua: rw.fua || write_through,
                }),
                Pending::Write,
            )
        }
        opcode::COMPARE => {
            let rw = rw_fields(sqe);
            let len = rw_len(ns, &rw, sqe, cfg)?;
            if data.len() != len {
                return Err(Status::SGL_INVALID_DATA.dnr());
            }
            Start::Issue(
                IoOp::Block(BlockOp::Read {
                    lba: rw.lba,
                    blocks: rw.blocks,
                }),
                Pending::Compare { expected: data },
            )
        }
        opcode::FLUSH => Start::Issue(IoOp::Block(BlockOp::Flush), Pending::Other),
        opcode::WRITE_ZEROES => {
            let rw = rw_fields(sqe);
            check_range(ns, rw.lba, rw.blocks)?;
            Start::Issue(
                IoOp::Block(BlockOp::WriteZeroes {
                    lba: rw.lba,
                    blocks: rw.blocks,
                    deallocate: sqe.cdw(12) & (1 << 25) != 0,
                    fua: rw.fua || write_through,
                }),
                Pending::Write,
            )
        }
        opcode::DSM => {
            let nr = (sqe.cdw(10) & 0xFF) as usize + 1;
            // The buffer may be longer than the NR+1 ranges in use: Linux always sends room
            // for 256 ranges (4096 bytes, nvme_setup_discard). Only a short one is an error.
            let Some(data) = data.get(..nr * 16) else {
                return Err(Status::SGL_INVALID_DATA.dnr());
            };
            if sqe.cdw(11) & (1 << 2) == 0 {
                return Ok(Start::Done(Response::status(cid, Status::SUCCESS)));
            }
            let mut ranges = Vec::with_capacity(nr);
            for r in data.chunks_exact(16) {
                let blocks = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
                let mut l = [0u8; 8];
                l.copy_from_slice(&r[8..16]);
                let lba = u64::from_le_bytes(l);
                if blocks == 0 {
                    continue;
                }
                check_range(ns, lba, blocks)?;
                ranges.push((lba, blocks));
            }
            if ranges.is_empty() {
                return Ok(Start::Done(Response::status(cid, Status::SUCCESS)));
            }
            Start::Issue(IoOp::Block(BlockOp::Deallocate { ranges }), Pending::Write)
        }
        reservation::opcode::REPORT
        | reservation::opcode::REGISTER
        | reservation::opcode::ACQUIRE
        | reservation::opcode::RELEASE
            if !subsys.reservations =>
        {
            return Err(Status::INVALID_OPCODE.dnr())
        }
        reservation::opcode::REPORT => {
            let (len, extended) = reservation::report_params(sqe);
            if !extended {
                return Err(Status::HOST_ID_INCONSISTENT.dnr());
            }
            if len > u64::from(cfg.max_transfer()) {
                return Err(Status::INVALID_FIELD.dnr());
            }
            let req = reservation::decode(sqe, &data, requester)?;
            Start::Issue(
                IoOp::Reservation(req),
                Pending::Reservation {
                    report: Some((len, extended)),
                },
            )
        }
        reservation::opcode::REGISTER
        | reservation::opcode::ACQUIRE
        | reservation::opcode::RELEASE => {
            let req = reservation::decode(sqe, &data, requester)?;
            Start::Issue(
                IoOp::Reservation(req),
                Pending::Reservation { report: None },
            )
        }
        _ => return Err(Status::INVALID_OPCODE.dnr()),
    })
}

/// Turns the caller's result into the command's response: the one place block results and
/// reservation outcomes become NVMe statuses. A path that cannot serve answers with its ANA
/// status (DNR clear, so the host retries on another path) when ANA is reported, and
/// Namespace Not Ready otherwise; storage failures are Unrecovered Read Error or Write Fault.
pub(crate) fn finish(cid: u16, pending: Pending, result: IoResult, ana_enabled: bool) -> Response {
    let status = |s| Response::status(cid, s);
    let block = match (pending, result) {
        (Pending::Reservation { report }, IoResult::Reservation(outcome)) => {
            return match outcome {
                ReservationOutcome::Done if report.is_none() => status(Status::SUCCESS),
                ReservationOutcome::Conflict => status(Status::RESERVATION_CONFLICT.dnr()),
                ReservationOutcome::Invalid => status(Status::INVALID_FIELD.dnr()),
                ReservationOutcome::Report(r) => match report {
                    Some((len, extended)) => {
                        let mut d = reservation::encode_report(&r, extended);
                        d.resize(len as usize, 0);
                        Response::data(cid, d)
                    }
                    None => status(Status::INTERNAL),
                },
                ReservationOutcome::Done => status(Status::INTERNAL),
            }
        }
        (_, IoResult::Reservation(_)) => return status(Status::INTERNAL),
        (pending, IoResult::Block(r)) => (pending, r),
    };
    match block {
        (Pending::Read { len }, BlockResult::Data(d)) if d.len() == len => Response {
            cid,
            data: d,
            ..Response::default()
        },
        (Pending::Compare { expected }, BlockResult::Data(d)) if d.len() == expected.len() => {
            if d == expected {
                status(Status::SUCCESS)
            } else {
                status(Status::COMPARE_FAILED.dnr())
            }
        }
        (Pending::Read { .. } | Pending::Compare { .. }, BlockResult::Data(_)) => {
            status(Status::INTERNAL)
        }
        (Pending::Read { .. } | Pending::Compare { .. }, BlockResult::MediumError) => {
            status(Status::READ_ERROR)
        }
        (_, BlockResult::MediumError) => status(Status::WRITE_FAULT),
        // The thin-provisioning hard threshold: nothing was written; the host's block layer
        // reports no space (Linux: BLK_STS_NOSPC).
        (_, BlockResult::SpaceExhausted) => status(Status::CAPACITY_EXCEEDED.dnr()),
        (_, BlockResult::WriteProtected) => status(Status::NS_WRITE_PROTECTED.dnr()),
        (Pending::Write | Pending::Other, BlockResult::Ok) => status(Status::SUCCESS),
        (_, BlockResult::ReservationConflict) => status(Status::RESERVATION_CONFLICT.dnr()),
        (_, BlockResult::OutOfRange) => status(Status::LBA_OUT_OF_RANGE.dnr()),
        (_, BlockResult::AccessState(s)) => match AnaState::from(s).io_status() {
            Some(st) if ana_enabled => status(st),
            _ if ana_enabled => status(Status::ANA_TRANSITION),
            _ => status(Status::NS_NOT_READY),
        },
        _ => status(Status::INTERNAL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqe::Sgl;

    #[test]
    fn roles_map_to_retryable_ana_results() {
        use block_core::AccessState;
        let answer = |s| {
            finish(
                7,
                Pending::Write,
                IoResult::Block(BlockResult::AccessState(s)),
                true,
            )
        };
        // Standby and unavailable: ANA inaccessible 0x302; a transition: ANA change 0x303; both
        // with DNR clear so the host retries on another path.
        for s in [AccessState::Standby, AccessState::Unavailable] {
            let st = answer(s).status;
            assert_eq!((st.sct(), st.sc(), st.is_dnr()), (3, 0x02, false), "{s:?}");
        }
        let st = answer(AccessState::Transitioning).status;
        assert_eq!((st.sct(), st.sc(), st.is_dnr()), (3, 0x03, false));
        // Without ANA reporting a path that cannot serve is Namespace Not Ready.
        let st = finish(
            7,
            Pending::Write,
            IoResult::Block(BlockResult::AccessState(AccessState::Standby)),
            false,
        )
        .status;
        assert_eq!(st, Status::NS_NOT_READY);
        assert_eq!(
            finish(
                7,
                Pending::Write,
                IoResult::Block(BlockResult::MediumError),
                true
            )
            .status,
            Status::WRITE_FAULT
        );
    }

    #[test]
    fn exhausted_space_is_capacity_exceeded() {
        let st = finish(
            7,
            Pending::Write,
            IoResult::Block(BlockResult::SpaceExhausted),
            true,
        )
        .status;
        assert_eq!(st, Status::CAPACITY_EXCEEDED.dnr());
    }

    #[test]
    fn write_protected_namespace_refuses_changes_before_the_volume() {
        let mut s = Subsystem::new("nqn.x", "s");
        s.namespaces.push(Namespace {
            nsid: 1,
            volume_uuid: [5; 16],
            block_size: 512,
            blocks: 8,
            ana_group: 1,
            write_protected: true,
        });
        let requester = Requester {
            host_id: [1; 16],
            cntlid: 1,
        };
        let cfg = TargetConfig::default();
        let sqe_of = |op: u8, cdw11: u32, len: u32| {
            let mut sqe = Sqe::new(op, 9);
            sqe.set_nsid(1);
            sqe.set_cdw(11, cdw11);
            sqe.set_sgl(Sgl {
                addr: 0,
                length: len,
                ident: crate::sqe::SGL_IN_CAPSULE,
            });
            sqe
        };
        let block = Bytes::from(vec![7u8; 512]);
        let range = Bytes::from(vec![0u8; 16]);
        for (sqe, data) in [
            (sqe_of(opcode::WRITE, 0, 512), block.clone()),
            (sqe_of(opcode::WRITE_ZEROES, 0, 0), Bytes::new()),
            (sqe_of(opcode::DSM, 1 << 2, 16), range.clone()),
        ] {
            match start(&sqe, data, &s, requester, &cfg, false) {
                Start::Done(r) => assert_eq!(r.status, Status::NS_WRITE_PROTECTED.dnr()),
                _ => panic!("opcode {:#x} reached the volume", sqe.opcode()),
            }
        }
        // Reads, flushes and a DSM without deallocate go on.
        assert!(matches!(
            start(
                &sqe_of(opcode::READ, 0, 512),
                Bytes::new(),
                &s,
                requester,
                &cfg,
                false
            ),
            Start::Issue(IoOp::Block(BlockOp::Read { .. }), _)
        ));
        assert!(matches!(
            start(
                &sqe_of(opcode::FLUSH, 0, 0),
                Bytes::new(),
                &s,
                requester,
                &cfg,
                false
            ),
            Start::Issue(IoOp::Block(BlockOp::Flush), _)
        ));
        match start(
            &sqe_of(opcode::DSM, 0, 16),
            range,
            &s,
            requester,
            &cfg,
            false,
        ) {
            Start::Done(r) => assert_eq!(r.status, Status::SUCCESS),
            _ => panic!("a DSM hint reached the volume"),
        }
        // The volume's own refusal maps to the same status.
        let st = finish(
            9,
            Pending::Write,
            IoResult::Block(BlockResult::WriteProtected),
            true,
        )
        .status;
        assert_eq!(st, Status::NS_WRITE_PROTECTED.dnr());
    }

    #[test]
    fn reservation_opcodes_are_invalid_when_not_offered() {
        let mut s = Subsystem::new("nqn.x", "s");
        s.namespaces.push(Namespace {
            nsid: 1,
            volume_uuid: [5; 16],
            block_size: 512,
            blocks: 8,
            ana_group: 1,
            write_protected: false,
        });
        let requester = Requester {
            host_id: [1; 16],
            cntlid: 1,
        };
        let cfg = TargetConfig::default();
        let mut sqe = Sqe::new(reservation::opcode::REGISTER, 7);
        sqe.set_nsid(1);
        sqe.set_sgl(Sgl {
            addr: 0,
            length: 16,
            ident: crate::sqe::SGL_IN_CAPSULE,
        });
        let data = Bytes::from(vec![0u8; 16]);
        assert!(matches!(
            start(&sqe, data.clone(), &s, requester, &cfg, false),
            Start::Issue(IoOp::Reservation(_), _)
        ));
        s.reservations = false;
        assert_eq!(
            start(&sqe, data, &s, requester, &cfg, false),
            Start::Done(Response::status(7, Status::INVALID_OPCODE.dnr()))
        );
    }
}
