//! On a standby: the primary's write records appended with one log write per batch.
//!
//! A standby receives the primary's records in batches (every record appended since the last
//! read of the primary's log: at QD 32 that is tens of 4 KiB writes). Appending them one
//! `pwrite` and one log-lock hold each cost a system call per host write; here a run of write
//! records that fits the log contiguously goes out as one buffer, each record still its own
//! log record carrying its primary LSN as origin (recovery derives the applied position from
//! those, see [`crate::recovery`]). A run that does not fit right now (the log wraps, or is
//! short of space) is left to the one-record-at-a-time path, which waits for space.

use std::sync::atomic::Ordering;

use crate::engine::{lock, Engine};
use crate::error::Result;
use crate::index::Loc;
use crate::record::{record_len, Header, Kind, HEADER_LEN, MAX_ORIGIN};
use crate::replica::{ShippedKind, ShippedRecord};

impl Engine {
    /// Whether `r` can go into a batch: a write this log has not applied yet, in range, whose
    /// data fits one record of this log.
    pub(crate) fn batchable(&self, r: &ShippedRecord) -> bool {
        let bs = u64::from(self.block_size);
        r.kind == ShippedKind::Write
            && r.lsn > self.applied_lsn()
            && r.lsn <= MAX_ORIGIN
            && r.blocks > 0
            && u64::from(r.blocks) <= self.max_record_blocks
            && r.data.len() as u64 == u64::from(r.blocks) * bs
            && self.check_range(r.lba, u64::from(r.blocks)).is_ok()
    }

    /// Appends `run` (records that passed [`Engine::batchable`], in LSN order) with one log
    /// write. Returns false, having written nothing, when they do not fit the log contiguously
    /// right now.
    pub(crate) fn append_applied_run(&self, run: &[&ShippedRecord]) -> Result<bool> {
        if run.is_empty() {
            return Ok(true);
        }
        let lens: Vec<u64> = run.iter().map(|r| record_len(r.data.len())).collect();
        let total: u64 = lens.iter().sum();
        let crcs: Vec<u32> = run.iter().map(|r| crc32c::crc32c(&r.data)).collect();
        let epoch = lock(&self.role).state().epoch;
        let mut buf = vec![0u8; total as usize];
        let mut log = lock(&self.log);
        self.check_alive()?;
        let w = self.wal_size;
        let phys = log.head % w;
        if phys + total > w || log.head + total - log.tail > w {
            return Ok(false);
        }
        let synced_lsn = self.durable_lsn.load(Ordering::Acquire);
        let mut off = 0usize;
        for (k, r) in run.iter().enumerate() {
            let hdr = Header {
                lsn: log.next_lsn + k as u64,
                generation: log.generation,
                epoch,
                synced_lsn,
                lba: r.lba,
                blocks: r.blocks,
                data_len: r.data.len() as u32,
                kind: Kind::Write,
                origin: r.lsn,
            };
            let len = lens[k] as usize;
            hdr.encode_record(&r.data, crcs[k], &mut buf[off..off + len]);
            off += len;
        }
        self.wal.write_at(&buf, phys).map_err(|e| self.fail(e))?;
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        let mut virt = log.head;
        for (k, r) in run.iter().enumerate() {
            index.insert(
                r.lba,
                u64::from(r.blocks),
                Loc::Log {
                    virt: virt + HEADER_LEN as u64,
                    lsn: log.next_lsn + k as u64,
                },
            );
            virt += lens[k];
        }
        drop(index);
        log.next_lsn += run.len() as u64;
        log.head += total;
        self.stats.set_log_used(log.head - log.tail);
        drop(log);
        if let Some(last) = run.last() {
            self.applied_lsn.fetch_max(last.lsn, Ordering::AcqRel);
        }
        self.appended.notify_one();
        Ok(true)
    }
}
