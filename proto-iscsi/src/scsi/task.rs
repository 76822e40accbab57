//! The sans-IO contract between the logical unit and its caller.
//!
//! A command enters through [`LogicalUnit::start`](super::LogicalUnit::start) and leaves as a
//! [`Completion`]; in between the LU may ask for the data-out buffer ([`Step::NeedDataOut`]) or for
//! one block operation on the volume ([`Step::Io`]). Each suspended command is represented by a
//! [`PendingTask`] value that the caller owns and hands back, so any number of commands can be in
//! flight without the LU holding borrows or per-task tables.

use bytes::Bytes;

use super::sense::Sense;
pub use block_core::{BlockOp, BlockResult, LbaExtent, Provisioning};

/// The I_T nexus a command arrived on: who sent it and through which target port.
///
/// One logical unit is reachable through several ports (and ALUA groups), so the port identity
/// travels with every command instead of living in the LU configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nexus {
    /// Caller-chosen id, unique per live I_T nexus (e.g. the iSCSI session id).
    pub id: u64,
    /// SCSI initiator port name (iSCSI: `iqn...,i,0x<ISID>`), used for PR TransportIDs.
    pub initiator_port: String,
    /// Target port group the receiving port belongs to (VPD 0x83 type 5, REPORT TPGS).
    pub target_port_group: u16,
    /// Relative target port identifier of the receiving port (VPD 0x83 type 4).
    pub relative_port: u16,
}

/// SCSI status byte (SAM-5 table 35) of a finished command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// The command succeeded.
    Good = 0x00,
    /// The command failed; sense data says why.
    CheckCondition = 0x02,
    /// The command conflicts with a SPC-2 or persistent reservation.
    ReservationConflict = 0x18,
}

/// The outcome of a SCSI command, ready for the transport to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Status byte.
    pub status: Status,
    /// Sense data when `status` is CHECK CONDITION.
    pub sense: Option<Sense>,
    /// Data-in bytes, already truncated to the command's allocation length.
    pub data: Bytes,
    /// I_T nexus ids whose tasks the caller must abort (PREEMPT AND ABORT), excluding the sender.
    pub abort_nexuses: Vec<u64>,
    /// The registrants PREEMPT AND ABORT preempted (SCSI I_T nexuses and NVMe hosts alike,
    /// the sender excluded): their tasks on this logical unit must be aborted before the
    /// command completes, over whichever protocol they use.
    pub abort_registrants: Vec<block_core::Registrant>,
}

impl Completion {
    /// GOOD with no data.
    pub fn good() -> Self {
        Completion {
            status: Status::Good,
            sense: None,
            data: Bytes::new(),
            abort_nexuses: Vec::new(),
            abort_registrants: Vec::new(),
        }
    }

    /// GOOD with data-in truncated to `alloc_len` bytes.
    pub fn good_data(mut data: Vec<u8>, alloc_len: usize) -> Self {
        data.truncate(alloc_len);
        Completion {
            data: Bytes::from(data),
            ..Completion::good()
        }
    }

    /// CHECK CONDITION with the given sense.
    pub fn check(sense: Sense) -> Self {
        Completion {
            status: Status::CheckCondition,
            sense: Some(sense),
            ..Completion::good()
        }
    }

    /// RESERVATION CONFLICT (no sense data).
    pub fn conflict() -> Self {
        Completion {
            status: Status::ReservationConflict,
            ..Completion::good()
        }
    }

    /// Fixed-format sense bytes to carry in the response, if any.
    pub fn sense_bytes(&self) -> Option<[u8; super::sense::FIXED_SENSE_LEN]> {
        self.sense.map(|s| s.to_fixed())
    }
}

/// What the caller must do next for a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The command is finished.
    Done(Completion),
    /// Gather exactly `len` bytes of data-out, then call `data_out` with `task`.
    NeedDataOut {
        /// Number of bytes the command transfers from the initiator.
        len: u32,
        /// Handle to give back to `data_out`.
        task: PendingTask,
    },
    /// Perform `op` on the volume, then call `io_done` with `task` and the result.
    Io {
        /// The block operation to perform.
        op: BlockOp,
        /// Handle to give back to `io_done`.
        task: PendingTask,
    },
}

/// A command started with its data-out already gathered ([`crate::scsi::LogicalUnit::start_with_data`]):
/// either finished, or waiting for one block operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begun {
    /// The command is finished.
    Done(Completion),
    /// Perform `op` on the volume, then call `io_done` with `task` and the result.
    Io {
        /// The block operation to perform.
        op: BlockOp,
        /// Handle to give back to `io_done`.
        task: PendingTask,
    },
}

/// A suspended command, owned by the caller between steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTask {
    pub(crate) nexus: u64,
    pub(crate) kind: TaskKind,
}

impl PendingTask {
    /// The I_T nexus id the command arrived on.
    pub fn nexus_id(&self) -> u64 {
        self.nexus
    }
}

/// What a suspended command still has to do (crate-internal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaskKind {
    /// Waiting for write data; then issue a Write.
    WriteData { lba: u64, fua: bool },
    /// Waiting for the WRITE SAME pattern block.
    WriteSameData { lba: u64, blocks: u32, unmap: bool },
    /// Waiting for the COMPARE AND WRITE buffer (compare half then write half).
    CawData { lba: u64, blocks: u32, fua: bool },
    /// Waiting for VERIFY data; `repeat` means BYTCHK=11b (one block for every block).
    VerifyData { lba: u64, blocks: u32, repeat: bool },
    /// Waiting for the UNMAP parameter list.
    UnmapData,
    /// Waiting for a MODE SELECT parameter list; `ten` is the 10-byte variant.
    ModeSelectData { ten: bool },
    /// Waiting for a PERSISTENT RESERVE OUT parameter list.
    PrOutData { sa: u8, scope_type: u8 },
    /// Read issued; return the data.
    Read,
    /// Read issued for VERIFY with BYTCHK; compare against `expected`.
    VerifyRead { expected: Bytes },
    /// Write-like op issued; GOOD on Ok.
    Write,
    /// COMPARE AND WRITE issued.
    Caw,
    /// GET LBA STATUS issued.
    LbaStatus { lba: u64, alloc_len: u32 },
    /// PR state persisted; complete with GOOD and these aborts.
    PrPersist {
        aborts: Vec<u64>,
        victims: Vec<block_core::Registrant>,
    },
}
