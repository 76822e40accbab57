//! Primary/standby replication of a volume (issue 12).
//!
//! Sans-IO like the protocol crates: this module turns bytes into typed messages and back and
//! holds the state machines; the I/O driver (tokio, sockets) lives outside it, so the whole
//! protocol runs under the deterministic simulation tests without a network.

pub mod frame;
pub mod primary;
pub mod standby;

use crate::replica::{ShippedKind, ShippedRecord};
use frame::{Record, RecordKind};

impl From<ShippedRecord> for Record {
    /// A log record read for shipping, as a wire record (the data moves, no copy).
    fn from(r: ShippedRecord) -> Record {
        Record {
            lsn: r.lsn,
            kind: match r.kind {
                ShippedKind::Write => RecordKind::Write,
                ShippedKind::Trim => RecordKind::Trim,
                ShippedKind::Zero => RecordKind::Zero,
                ShippedKind::Snapshot => RecordKind::Snapshot,
                ShippedKind::SnapshotDelete => RecordKind::SnapshotDelete,
                ShippedKind::Grow => RecordKind::Grow,
            },
            lba: r.lba,
            blocks: r.blocks,
            data: r.data.into(),
        }
    }
}

impl From<Record> for ShippedRecord {
    /// A received wire record, as the engine applies it.
    fn from(r: Record) -> ShippedRecord {
        ShippedRecord {
            lsn: r.lsn,
            kind: match r.kind {
                RecordKind::Write => ShippedKind::Write,
                RecordKind::Trim => ShippedKind::Trim,
                RecordKind::Zero => ShippedKind::Zero,
                RecordKind::Snapshot => ShippedKind::Snapshot,
                RecordKind::SnapshotDelete => ShippedKind::SnapshotDelete,
                RecordKind::Grow => ShippedKind::Grow,
            },
            lba: r.lba,
            blocks: r.blocks,
            data: r.data.to_vec(),
        }
    }
}
