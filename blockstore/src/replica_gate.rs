//! The two things the engine itself holds for replication: the position in the log a standby
//! still needs (the retention floor) and the link a flush waits for ([`ReplicaGate`]). Kept apart
//! from [`crate::replica`], which implements the engine's replication operations, so that the
//! engine depends on these types without depending on those operations.

use crate::error::Result;

/// Metadata holding the primary LSN a standby had applied as of its last checkpoint.
pub(crate) const APPLIED_METADATA: &str = "meta-repl-applied";

/// A position in the log: the record with `lsn` starts at virtual offset `virt` (physical offset
/// `virt % log size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogPos {
    /// Virtual offset of the record.
    pub virt: u64,
    /// Its LSN.
    pub lsn: u64,
}

/// What the engine needs from the replication link of a primary.
///
/// A flush uses both calls: [`ReplicaGate::request`] before the engine syncs its own log, so
/// that the barrier to the standbys travels while the local fdatasync runs, and
/// [`ReplicaGate::wait_durable`] after it. The flush is acknowledged only when both the local
/// sync and the wait succeeded.
pub trait ReplicaGate: Send + Sync + std::fmt::Debug {
    /// Announces, without waiting, that a flush needs every in-sync standby durable through
    /// `lsn`. An error fails the flush at once (the primary was fenced, the link is gone).
    fn request(&self, lsn: u64) -> Result<()>;

    /// Returns once every in-sync standby holds the log durable through `lsn` (the last record
    /// appended before the flush began), or once the standbys that did not answer in time were
    /// durably declared out of sync. An error fails the flush: the primary was fenced, or could
    /// not record a standby's loss. Works without a [`ReplicaGate::request`] before it too.
    fn wait_durable(&self, lsn: u64) -> Result<()>;
}
