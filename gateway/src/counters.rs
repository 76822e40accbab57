//! Per-host I/O counters: each iSCSI session and each NVMe/TCP controller owns one, its
//! commands bump it with relaxed atomics (no lock on the data path), and the operator view
//! (`tandem status`, `/metrics`) reads snapshots of it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one attached host (session or controller).
#[derive(Debug, Default)]
pub struct IoCounters {
    reads: AtomicU64,
    writes: AtomicU64,
    read_bytes: AtomicU64,
    write_bytes: AtomicU64,
    other: AtomicU64,
}

/// A point-in-time copy of [`IoCounters`], as the admin API serves it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IoSnapshot {
    /// Read commands (iSCSI READ, NVMe Read and Compare).
    pub reads: u64,
    /// Write commands (anything carrying data to the volume).
    pub writes: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Every other command (flush, trim, inquiry, reservations...).
    pub other: u64,
}

impl IoSnapshot {
    /// All commands counted.
    pub fn commands(&self) -> u64 {
        self.reads + self.writes + self.other
    }

    /// Adds another snapshot (several queues of one controller).
    pub fn add(&mut self, o: &IoSnapshot) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.read_bytes += o.read_bytes;
        self.write_bytes += o.write_bytes;
        self.other += o.other;
    }
}

impl IoCounters {
    /// Counts a read of `bytes`.
    pub fn read(&self, bytes: u64) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts a write of `bytes`.
    pub fn write(&self, bytes: u64) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.write_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts a command of `kind` moving `bytes` of host data (as the protocol core reported
    /// it: the one way both front ends count).
    pub fn count(&self, kind: block_core::IoKind, bytes: u64) {
        match kind {
            block_core::IoKind::Read => self.read(bytes),
            block_core::IoKind::Write => self.write(bytes),
            block_core::IoKind::Other => self.other(),
        }
    }

    /// Counts any other command.
    pub fn other(&self) {
        self.other.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> IoSnapshot {
        IoSnapshot {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            write_bytes: self.write_bytes.load(Ordering::Relaxed),
            other: self.other.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up() {
        let c = IoCounters::default();
        c.read(4096);
        c.write(512);
        c.write(512);
        c.other();
        let mut s = c.snapshot();
        assert_eq!(
            (s.reads, s.writes, s.read_bytes, s.write_bytes),
            (1, 2, 4096, 1024)
        );
        assert_eq!(s.commands(), 4);
        s.add(&c.snapshot());
        assert_eq!(s.commands(), 8);
    }
}
