//! Counters the engine keeps for metrics, benchmarks and tests.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Live counters (atomics, updated on the I/O path).
#[derive(Debug, Default)]
pub struct Stats {
    writes: AtomicU64,
    write_bytes: AtomicU64,
    reads: AtomicU64,
    read_bytes: AtomicU64,
    trimmed_blocks: AtomicU64,
    flushes: AtomicU64,
    log_syncs: AtomicU64,
    flusher_runs: AtomicU64,
    flushed_entries: AtomicU64,
    log_full_waits: AtomicU64,
    log_full_wait_us: AtomicU64,
    log_used: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Write requests served.
    pub writes: u64,
    /// Bytes written by hosts.
    pub write_bytes: u64,
    /// Read requests served.
    pub reads: u64,
    /// Bytes read by hosts.
    pub read_bytes: u64,
    /// Blocks trimmed or zeroed.
    pub trimmed_blocks: u64,
    /// Flush requests (FLUSH / SYNCHRONIZE CACHE).
    pub flushes: u64,
    /// fdatasync calls on the log: fewer than flushes + FUA writes when group commit works.
    pub log_syncs: u64,
    /// Flusher runs that copied something.
    pub flusher_runs: u64,
    /// Index entries copied into the extent.
    pub flushed_entries: u64,
    /// Times a writer had to wait for log space.
    pub log_full_waits: u64,
    /// Total time writers waited for log space, in microseconds.
    pub log_full_wait_us: u64,
    /// Bytes of log in use.
    pub log_used_bytes: u64,
    /// Size of the log in bytes.
    pub log_size_bytes: u64,
    /// Blocks whose newest version is only in the log.
    pub dirty_blocks: u64,
}

impl Stats {
    pub(crate) fn add_write(&self, bytes: u64) {
        self.writes.fetch_add(1, Relaxed);
        self.write_bytes.fetch_add(bytes, Relaxed);
    }
    pub(crate) fn add_read(&self, bytes: u64) {
        self.reads.fetch_add(1, Relaxed);
        self.read_bytes.fetch_add(bytes, Relaxed);
    }
    pub(crate) fn add_trim(&self, blocks: u64) {
        self.trimmed_blocks.fetch_add(blocks, Relaxed);
    }
    pub(crate) fn add_flush(&self) {
        self.flushes.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_log_sync(&self) {
        self.log_syncs.fetch_add(1, Relaxed);
    }
    pub(crate) fn add_flusher_run(&self, entries: u64) {
        self.flusher_runs.fetch_add(1, Relaxed);
        self.flushed_entries.fetch_add(entries, Relaxed);
    }
    pub(crate) fn log_full_wait_started(&self) {
        self.log_full_waits.fetch_add(1, Relaxed);
    }
    pub(crate) fn log_full_wait_ended(&self, waited: Duration) {
        self.log_full_wait_us
            .fetch_add(waited.as_micros() as u64, Relaxed);
    }
    pub(crate) fn set_log_used(&self, bytes: u64) {
        self.log_used.store(bytes, Relaxed);
    }

    /// Copies the counters.
    pub fn snapshot(&self, dirty_blocks: u64, log_size: u64) -> StatsSnapshot {
        StatsSnapshot {
            writes: self.writes.load(Relaxed),
            write_bytes: self.write_bytes.load(Relaxed),
            reads: self.reads.load(Relaxed),
            read_bytes: self.read_bytes.load(Relaxed),
            trimmed_blocks: self.trimmed_blocks.load(Relaxed),
            flushes: self.flushes.load(Relaxed),
            log_syncs: self.log_syncs.load(Relaxed),
            flusher_runs: self.flusher_runs.load(Relaxed),
            flushed_entries: self.flushed_entries.load(Relaxed),
            log_full_waits: self.log_full_waits.load(Relaxed),
            log_full_wait_us: self.log_full_wait_us.load(Relaxed),
            log_used_bytes: self.log_used.load(Relaxed),
            log_size_bytes: log_size,
            dirty_blocks,
        }
    }
}
