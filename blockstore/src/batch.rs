//! Batched writes: many host writes appended to the log with one `pwrite`.
//!
//! A deep queue of small writes is the common case for hosts (QD 32 of 4 KiB), so the volume
//! hands the engine every write queued since the last append. Two entry points share one plan:
//! [`Engine::write_many`] may wait (for log space, for the log sync a FUA write needs) and runs
//! on the volume's I/O threads; [`Engine::try_write_many_nowait`] never waits on the disk or on
//! a lock held across disk I/O, so an async worker may call it: it either appends the whole
//! batch as one copy into the page cache or writes nothing and says so.

use std::sync::atomic::Ordering;
use std::sync::TryLockError;

use crate::engine::{lock, Engine};
use crate::error::{Error, Result};
use crate::index::Loc;
use crate::record::{record_len, Header, Kind, HEADER_LEN};

/// One write the batch can append: (request index, lba, blocks, data).
type Planned<'a> = (usize, u64, u64, &'a [u8]);

/// What [`Engine::append_batch`] did.
enum Appended {
    /// Every write of the batch is in the log and the index.
    Done,
    /// Nothing was written: the records do not fit the log contiguously right now.
    NoRoom,
    /// Nothing was written: another writer holds the log (only when asked not to wait).
    Busy,
}

/// What the checks decided for each request of a batch.
struct Plan<'a> {
    /// Requests already answered (by an error) before any I/O.
    results: Vec<Option<Result<()>>>,
    /// Requests that fit one log record each, in order.
    batch: Vec<Planned<'a>>,
    /// Requests that need the one-record-at-a-time path (empty, or larger than a record).
    oversized: Vec<usize>,
}

impl Engine {
    /// Checks every request (volume alive and serving, whole blocks, in range) and sorts them
    /// into those answered already, those that go into the batch and those too large for it.
    fn plan<'a>(&self, reqs: &[(u64, &'a [u8], bool)]) -> Plan<'a> {
        let mut plan = Plan {
            results: reqs.iter().map(|_| None).collect(),
            batch: Vec::with_capacity(reqs.len()),
            oversized: Vec::new(),
        };
        for (i, &(lba, data, _)) in reqs.iter().enumerate() {
            let check = self
                .check_alive()
                .and_then(|_| self.gate())
                .and_then(|_| self.check_writable())
                .and_then(|_| self.blocks_of(data.len()))
                .and_then(|b| self.check_range(lba, b).map(|_| b));
            match check {
                Ok(b) if b > 0 && b <= self.max_record_blocks => plan.batch.push((i, lba, b, data)),
                Ok(_) => plan.oversized.push(i),
                Err(e) => plan.results[i] = Some(Err(e)),
            }
        }
        plan
    }

    /// Answers the batch's writes once it is in the log, and gives every request its result.
    fn finish(
        &self,
        mut results: Vec<Option<Result<()>>>,
        batch: &[Planned<'_>],
    ) -> Vec<Result<()>> {
        for &(i, _, _, data) in batch {
            self.stats.add_write(data.len() as u64);
            results[i] = Some(Ok(()));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(Error::Failed)))
            .collect()
    }

    /// Writes several requests with as few log writes as possible: records that fit the log
    /// contiguously are written with one `pwrite` under one hold of the log lock. Each request
    /// gets its own result; with `fua` set on any request the log is synced once for all.
    /// May wait for log space and for the disk. Plain writes are not waited for on the
    /// standbys here (that would hold up the group commit of the writes queued behind):
    /// [`crate::Volume::write`] waits for them with [`Engine::received_wait`] afterwards.
    pub fn write_many(&self, reqs: &[(u64, &[u8], bool)]) -> Vec<Result<()>> {
        let _c = self.caw.read().unwrap_or_else(|e| e.into_inner());
        let Plan {
            mut results,
            mut batch,
            oversized,
        } = self.plan(reqs);
        for i in oversized {
            let (lba, data, _) = reqs[i];
            results[i] = Some(self.write_locked(lba, data, false));
        }
        if !matches!(self.append_batch(&batch, false), Ok(Appended::Done)) {
            // The batch did not fit in one go: one append each, waiting for space.
            for (i, lba, _, data) in batch.drain(..) {
                results[i] = Some(self.write_locked(lba, data, false));
            }
        }
        let mut results = self.finish(results, &batch);
        if reqs
            .iter()
            .zip(&results)
            .any(|((_, _, fua), r)| *fua && r.is_ok())
        {
            if let Err(e) = self.sync_replicated() {
                for ((_, _, fua), r) in reqs.iter().zip(results.iter_mut()) {
                    if *fua && r.is_ok() {
                        *r = Err(e.for_another_request());
                    }
                }
            }
        }
        results
    }

    /// [`Engine::write_many`] for a caller that must not block: appends the whole batch with one
    /// copy into the log's page cache, or returns `None` having written nothing when that is not
    /// possible right now (a FUA write needing a log sync, a request larger than one record,
    /// the log lock or the compare-and-write lock held by another writer, or not enough
    /// contiguous log space). The caller then hands the batch to a thread that may wait.
    pub fn try_write_many_nowait(&self, reqs: &[(u64, &[u8], bool)]) -> Option<Vec<Result<()>>> {
        if reqs.iter().any(|&(_, _, fua)| fua) {
            return None;
        }
        let _c = match self.caw.try_read() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let Plan {
            results,
            batch,
            oversized,
        } = self.plan(reqs);
        if !oversized.is_empty() {
            return None;
        }
        match self.append_batch(&batch, true) {
            Ok(Appended::Done) => Some(self.finish(results, &batch)),
            _ => None,
        }
    }

    /// Appends records back to back with one write. Writes to consecutive blocks that follow
    /// each other in the batch (a sequential stream) become one record. Writes nothing when
    /// the records do not fit the log contiguously right now, or, with `nowait`, when another
    /// writer holds the log. Checksums and the buffer are prepared before taking the log lock.
    fn append_batch(&self, batch: &[Planned<'_>], nowait: bool) -> Result<Appended> {
        if batch.is_empty() {
            return Ok(Appended::Done);
        }
        // Group consecutive writes: (lba, blocks, parts).
        let mut groups: Vec<(u64, u64, Vec<&[u8]>)> = Vec::new();
        for &(_, lba, blocks, data) in batch {
            match groups.last_mut() {
                Some((glba, gblocks, parts))
                    if *glba + *gblocks == lba && *gblocks + blocks <= self.max_record_blocks =>
                {
                    *gblocks += blocks;
                    parts.push(data);
                }
                _ => groups.push((lba, blocks, vec![data])),
            }
        }
        let bs = u64::from(self.block_size);
        let lens: Vec<u64> = groups
            .iter()
            .map(|g| record_len((g.1 * bs) as usize))
            .collect();
        let total: u64 = lens.iter().sum();
        let crcs: Vec<u32> = groups
            .iter()
            .map(|g| g.2.iter().fold(0u32, |c, p| crc32c::crc32c_append(c, p)))
            .collect();
        let epoch = lock(&self.role).state().epoch;
        let mut buf = vec![0u8; total as usize];
        let mut log = if nowait {
            match self.log.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return Ok(Appended::Busy),
            }
        } else {
            lock(&self.log)
        };
        let w = self.wal_size;
        let phys = log.head % w;
        if phys + total > w || log.head + total - log.tail > w {
            return Ok(Appended::NoRoom);
        }
        let synced_lsn = self.durable_lsn.load(Ordering::Acquire);
        let mut off = 0usize;
        for (k, (lba, blocks, parts)) in groups.iter().enumerate() {
            let hdr = Header {
                lsn: log.next_lsn + k as u64,
                generation: log.generation,
                epoch,
                synced_lsn,
                lba: *lba,
                blocks: *blocks as u32,
                data_len: (*blocks * bs) as u32,
                kind: Kind::Write,
                origin: 0,
            };
            let len = lens[k] as usize;
            hdr.encode_record_parts(parts, crcs[k], &mut buf[off..off + len]);
            off += len;
        }
        self.wal.write_at(&buf, phys).map_err(|e| self.fail(e))?;
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        let mut virt = log.head;
        for (k, (lba, blocks, _)) in groups.iter().enumerate() {
            let lsn = log.next_lsn + k as u64;
            index.insert(
                *lba,
                *blocks,
                Loc::Log {
                    virt: virt + HEADER_LEN as u64,
                    lsn,
                },
            );
            virt += lens[k];
        }
        drop(index);
        log.next_lsn += groups.len() as u64;
        log.head += total;
        self.stats.set_log_used(log.head - log.tail);
        drop(log);
        self.appended.notify_one();
        Ok(Appended::Done)
    }
}
