//! What the engine itself holds for replication: the position in the log a standby still needs
//! (the retention floor), the link a flush waits for ([`ReplicaGate`]) and the names of the
//! replication metadata it reads at open. Kept apart from [`crate::replica`] and
//! [`crate::resync`], which implement the engine's replication operations, so that the engine
//! depends on these without depending on those operations.

use crate::error::Result;

/// Metadata holding the primary LSN a standby had applied as of its last checkpoint (or as
/// last set), and the first LSN of this node's log from which records' origins count towards
/// it (records before belong to an older position: see [`crate::recovery`]). 16 bytes; an older
/// 8-byte value has no such start (every origin counts: older logs carry none).
pub(crate) const APPLIED_METADATA: &str = "meta-repl-applied";

/// Encodes [`APPLIED_METADATA`]: the applied position and where the log's origins count from.
pub(crate) fn encode_applied(applied: u64, from: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&applied.to_le_bytes());
    b[8..].copy_from_slice(&from.to_le_bytes());
    b
}

/// Decodes [`APPLIED_METADATA`] (what [`encode_applied`] wrote, or an older 8-byte value).
pub(crate) fn decode_applied(b: &[u8]) -> (u64, u64) {
    let at = |o: usize| {
        b.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0)
    };
    (at(0), at(8))
}

/// Metadata marking a standby whose full resync has not completed (non-empty while it runs; see
/// [`crate::resync`]).
pub(crate) const RESYNC_METADATA: &str = "meta-repl-resync";

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

    /// Returns once every in-sync standby received (appended to its log, not necessarily
    /// durably) the records through `lsn`, or once the standbys that did not answer in time
    /// were durably declared out of sync. A plain (non-FUA) write completes only after this:
    /// with one volatile cache per node behind one device identity, a host's later flush may
    /// run on the standby after a failover, and it must cover every write completed on the
    /// primary. Errors as [`ReplicaGate::wait_durable`]. The default waits for durability
    /// (correct, slower).
    fn wait_received(&self, lsn: u64) -> Result<()> {
        self.wait_durable(lsn)
    }

    /// [`ReplicaGate::wait_received`] for an async caller (the volume's write path, which must
    /// not hold an I/O thread for a network round trip). The default runs the blocking wait
    /// inline, which only suits gates that answer at once (tests).
    fn received_async(&self, lsn: u64) -> ReceivedWait<'_> {
        Box::pin(std::future::ready(self.wait_received(lsn)))
    }
}

/// The future [`ReplicaGate::received_async`] returns.
pub type ReceivedWait<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>;
