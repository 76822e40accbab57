//! One operation on a volume and its outcome, as both protocol cores ask for them and the
//! gateway carries them out.

use bytes::Bytes;

use crate::access::AccessState;

/// One block-level request on a volume. Addresses are in logical blocks of the exported block
/// size; the protocol core has already checked ranges against the capacity it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockOp {
    /// Read `blocks` blocks at `lba`; answer with [`BlockResult::Data`].
    Read {
        /// First block.
        lba: u64,
        /// Number of blocks (non-zero).
        blocks: u32,
    },
    /// Write `data` (a whole number of blocks) at `lba`.
    Write {
        /// First block.
        lba: u64,
        /// Block data.
        data: Bytes,
        /// Force unit access: data must be durable before completion.
        fua: bool,
    },
    /// Make all completed writes durable.
    Flush,
    /// Deallocate the given `(lba, blocks)` ranges; later reads return zeros.
    Deallocate {
        /// Ranges to deallocate (validated, in range, non-empty).
        ranges: Vec<(u64, u32)>,
    },
    /// Write zeros over a range.
    WriteZeroes {
        /// First block.
        lba: u64,
        /// Number of blocks.
        blocks: u32,
        /// The host allows deallocating instead (SCSI WRITE SAME with UNMAP, NVMe DEAC).
        deallocate: bool,
        /// Force unit access: durable before completion.
        fua: bool,
    },
    /// Atomically compare `compare` with the medium and, if equal, write `write`.
    /// Answer [`BlockResult::Miscompare`] with the first differing byte offset otherwise.
    CompareAndWrite {
        /// First block.
        lba: u64,
        /// Number of blocks.
        blocks: u32,
        /// Expected current contents.
        compare: Bytes,
        /// New contents.
        write: Bytes,
        /// Force unit access for the write half.
        fua: bool,
    },
    /// Report provisioning status from `lba` onwards; answer [`BlockResult::LbaStatus`].
    GetLbaStatus {
        /// Starting block.
        lba: u64,
    },
    /// Store the volume's reservation state durably before the command that changed it may
    /// complete (a host must never believe a change that would not survive a restart).
    PersistReservations,
}

/// What kind of I/O an operation is, for the per-host counters and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoKind {
    /// Reads data from the medium.
    Read,
    /// Changes the medium.
    Write,
    /// Anything else (flush, status, reservations).
    Other,
}

impl BlockOp {
    /// What kind of I/O this is, and how many bytes of host data it moves (for a read, at the
    /// given block size); zeroing, deallocation and flushes move none and count as other.
    pub fn kind_and_bytes(&self, block_size: u32) -> (IoKind, u64) {
        match self {
            BlockOp::Read { blocks, .. } => {
                (IoKind::Read, u64::from(*blocks) * u64::from(block_size))
            }
            BlockOp::Write { data, .. } => (IoKind::Write, data.len() as u64),
            BlockOp::CompareAndWrite { write, .. } => (IoKind::Write, write.len() as u64),
            BlockOp::Flush
            | BlockOp::WriteZeroes { .. }
            | BlockOp::Deallocate { .. }
            | BlockOp::GetLbaStatus { .. }
            | BlockOp::PersistReservations => (IoKind::Other, 0),
        }
    }
}

/// Provisioning status of one extent (SBC-3 GET LBA STATUS descriptor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provisioning {
    /// Blocks are mapped (hold data).
    Mapped,
    /// Blocks are deallocated (read as zeros).
    Deallocated,
}

/// One extent returned for [`BlockOp::GetLbaStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LbaExtent {
    /// First block of the extent.
    pub lba: u64,
    /// Length in blocks.
    pub blocks: u32,
    /// Status of the whole extent.
    pub status: Provisioning,
}

/// The outcome of a [`BlockOp`]; each protocol core maps it to its status in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockResult {
    /// The operation succeeded.
    Ok,
    /// Read data.
    Data(Bytes),
    /// COMPARE AND WRITE found a difference at this byte offset; nothing was written.
    Miscompare {
        /// Byte offset of the first difference within the compared range.
        offset: u32,
    },
    /// Provisioning extents starting at the requested LBA.
    LbaStatus(Vec<LbaExtent>),
    /// The range lies outside the volume (e.g. it shrank concurrently).
    OutOfRange,
    /// This node cannot serve the volume right now (a role change, fencing, shutdown): the
    /// retryable path answer of each protocol (ALUA NOT READY, ANA path status).
    AccessState(AccessState),
    /// The volume's reservation state excludes the requester (SCSI RESERVATION CONFLICT, NVMe
    /// Reservation Conflict).
    ReservationConflict,
    /// The volume failed to read or write the data.
    MediumError,
    /// The storage under the volume has no space left for the write (the thin-provisioning
    /// hard threshold): nothing was written, reads go on, and writes succeed again once space
    /// is freed. SCSI answers DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT (07/27/07);
    /// NVMe answers Capacity Exceeded.
    SpaceExhausted,
    /// The volume is write protected (a read-only view of a snapshot): nothing was written.
    /// SCSI answers DATA PROTECT, WRITE PROTECTED (07/27/00); NVMe answers Namespace Is Write
    /// Protected (0x20).
    WriteProtected,
    /// Any other failure inside the gateway.
    Internal,
}
