//! The typed errors of the volume engine.
//!
//! Every failure a front end may have to translate (into SCSI sense or NVMe status) is a distinct
//! variant, so the translation is a `match` and never a string comparison.

use std::io;
use std::path::PathBuf;

use crate::role::AccessState;

/// Why a volume operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request reaches past the end of the volume.
    #[error("LBA range {lba}+{blocks} is beyond the capacity of {capacity} blocks")]
    OutOfRange {
        /// First block of the request.
        lba: u64,
        /// Number of blocks requested.
        blocks: u64,
        /// The volume's capacity in blocks.
        capacity: u64,
    },
    /// A buffer length is not a whole number of logical blocks.
    #[error("length {len} is not a multiple of the {block_size}-byte logical block")]
    Misaligned {
        /// The offending length in bytes.
        len: usize,
        /// The volume's logical block size.
        block_size: u32,
    },
    /// Creation parameters that cannot make a usable volume.
    #[error("invalid volume geometry: {0}")]
    InvalidGeometry(String),
    /// The volume is too small for its own write-ahead log or metadata.
    #[error("volume too small: {0}")]
    TooSmall(String),
    /// Neither superblock slot holds a valid superblock.
    #[error("corrupt superblock in {path}: {reason}")]
    CorruptSuperblock {
        /// The superblock file.
        path: PathBuf,
        /// What was wrong with each slot.
        reason: String,
    },
    /// A record in the middle of the log is damaged while later records prove it was durable:
    /// opening would silently lose acknowledged data, so the volume refuses to open.
    #[error("corrupt write-ahead log record at LSN {lsn} (log offset {offset}): {reason}")]
    CorruptLog {
        /// The sequence number the damaged record should carry.
        lsn: u64,
        /// Byte offset of the record inside the log file.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The volume exists already (on create) or does not exist (on open).
    #[error("{0}")]
    Exists(String),
    /// The volume's role, epoch or lease do not allow I/O here; front ends answer with the
    /// retryable ALUA / ANA code for this access state.
    #[error("volume not serving I/O on this node: access state {0:?}")]
    NotServing(AccessState),
    /// A request carries an epoch older than the volume's: it comes from a fenced-off primary.
    #[error("stale epoch {presented}: the volume is at epoch {current}")]
    StaleEpoch {
        /// The epoch the volume has persisted.
        current: u64,
        /// The epoch the request carried.
        presented: u64,
    },
    /// Log records a standby needs were already freed: it needs a full resync.
    #[error("log records from LSN {wanted} were recycled (oldest kept: {oldest})")]
    LogRecycled {
        /// The first LSN asked for.
        wanted: u64,
        /// The oldest LSN still in the log.
        oldest: u64,
    },
    /// Another role change is being persisted; retry once it finished.
    #[error("a role change is already in progress")]
    RoleChangeInProgress,
    /// A request that is not allowed (for example shrinking, or an unknown role).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// COMPARE AND WRITE / NVMe Compare found different data.
    #[error("miscompare at byte offset {offset}")]
    Miscompare {
        /// Byte offset of the first differing byte within the compared range.
        offset: u64,
    },
    /// The log stayed full for longer than the configured wait: the flusher cannot keep up or
    /// cannot write the extent.
    #[error("write-ahead log full for {waited:?}")]
    LogFull {
        /// How long the writer waited for space.
        waited: std::time::Duration,
    },
    /// The file system under the volume has no space left for its data: the log still takes
    /// writes while it has room, then writes are refused (reads go on) until space is freed and
    /// the flusher can copy the log into the extent again. Front ends answer with the
    /// thin-provisioning space allocation failure (SCSI 07/27/07, NVMe Capacity Exceeded).
    #[error(
        "no space left on the file system under the volume; writes resume once space is freed"
    )]
    NoSpace,
    /// Another process (or another open in this one) holds the volume's advisory lock.
    #[error(
        "volume at {path} is in use: another tandem process (or another volume entry) has it open"
    )]
    Locked {
        /// The locked file.
        path: PathBuf,
    },
    /// An earlier I/O error left the volume in an unknown state; it refuses everything until it is
    /// reopened (and recovered from its log), because retrying a failed fdatasync can lie.
    #[error("volume failed after an earlier I/O error; reopen it to recover")]
    Failed,
    /// The volume has been closed.
    #[error("volume closed")]
    Closed,
    /// A write to a read-only view (an exported snapshot): front ends answer with their
    /// write-protected status (SCSI DATA PROTECT 07/27/00, NVMe Namespace Is Write Protected).
    #[error("the volume is read-only (a snapshot view)")]
    ReadOnly,
    /// A named thing (a snapshot) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The operation is refused while something depends on the target (a snapshot with
    /// clones or open views); the message says what.
    #[error("{0}")]
    Busy(String),
    /// An I/O error from the underlying files.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl Error {
    /// The same failure for another request that shared the operation (one log sync or one
    /// replication wait answers several FUA writes): every variant a front end maps to its own
    /// status (a retryable ALUA / ANA state above all) stays what it is; only an I/O error,
    /// which cannot be copied, becomes one with the same message.
    pub fn for_another_request(&self) -> Error {
        match self {
            Error::NotServing(s) => Error::NotServing(*s),
            Error::StaleEpoch { current, presented } => Error::StaleEpoch {
                current: *current,
                presented: *presented,
            },
            Error::RoleChangeInProgress => Error::RoleChangeInProgress,
            Error::LogFull { waited } => Error::LogFull { waited: *waited },
            Error::Failed => Error::Failed,
            Error::Closed => Error::Closed,
            Error::ReadOnly => Error::ReadOnly,
            Error::Io(e) => Error::Io(io::Error::new(e.kind(), e.to_string())),
            other => Error::Io(io::Error::other(other.to_string())),
        }
    }
}

/// Result alias for the engine.
pub type Result<T> = std::result::Result<T, Error>;
