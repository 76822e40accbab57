//! The engine's side of replication.
//!
//! A primary ships its log records to its standbys and acknowledges a flush only once every
//! in-sync standby has them durable; a standby applies what it receives to its own log. The
//! protocol and its state machines live in [`crate::repl`]; this module is what they need from
//! the engine:
//!
//! - reading the log from a position for shipping ([`Engine::read_log`]) and finding where a
//!   reconnecting standby's position is in it ([`Engine::log_pos_after`]);
//! - holding records a standby still needs: the checkpoint does not free log space past the
//!   retention floor ([`Engine::set_retention`]), up to a bound, beyond which the standby needs a
//!   full resync;
//! - telling the shipping task that records were appended ([`Engine::appended`]), and waiting
//!   for standbys, in parallel with the local log sync, before a flush or FUA write is
//!   acknowledged ([`ReplicaGate`]);
//! - on a standby, taking and deleting snapshots and growing the volume where the primary's
//!   log does (their records are shipped like writes and applied at the same position, see
//!   `snapshot_ops` and `grow`);
//! - on a standby, appending a primary's records ([`Engine::apply_replicated`]) and making
//!   them durable ([`Engine::sync_applied`]), with the primary's position of what was applied
//!   kept across restarts: each appended record carries the primary's LSN (its origin), so
//!   recovery derives the position from the log itself (see [`crate::recovery`]), and a record
//!   at or below it is not applied again.
//!
//! Positions are the primary's LSNs. The primary's log also spends LSNs on padding records at
//! the end of the file, which are never shipped, so a standby sees gaps in the sequence.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::engine::{lock, Engine};
use crate::error::{Error, Result};
use crate::record::{record_len, Header, Kind, HEADER_LEN, MAX_ORIGIN};
use crate::recovery::{SnapOp, MAX_SNAPSHOT_NAME};
pub use crate::replica_gate::{LogPos, ReceivedWait, ReplicaGate};
use crate::role::Role;

/// Bytes a log read takes beyond the data it was asked for (the headers and alignment of the
/// records that data comes in), so one `pread` usually covers the whole batch.
const PIECE_SLACK: u64 = 64 << 10;

/// What a shipped record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShippedKind {
    /// Data for the blocks.
    Write,
    /// Deallocate the blocks.
    Trim,
    /// Zero the blocks.
    Zero,
    /// Take a snapshot here: its id in `lba`, its name (UTF-8) as the data, `blocks` 0.
    Snapshot,
    /// Delete the snapshot whose id is in `lba` (no data, `blocks` 0).
    SnapshotDelete,
    /// Grow the volume to `lba` blocks here (no data, `blocks` 0; see `grow`).
    Grow,
}

/// One log record as replication ships it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedRecord {
    /// The primary's LSN of the record.
    pub lsn: u64,
    /// What it does.
    pub kind: ShippedKind,
    /// First block.
    pub lba: u64,
    /// Number of blocks.
    pub blocks: u32,
    /// The data of a write (`blocks` blocks); empty otherwise.
    pub data: Vec<u8>,
}

impl Engine {
    /// The LSN of the last record appended (0 before the first): one short lock.
    pub fn last_lsn(&self) -> u64 {
        lock(&self.log).next_lsn.saturating_sub(1)
    }

    /// The log position of the first record after `lsn` (the head when there is none yet), for
    /// a standby that holds everything through `lsn`. Fails with [`Error::LogRecycled`] when
    /// records after `lsn` are no longer in the log (the standby needs a full resync).
    pub fn log_pos_after(&self, lsn: u64) -> Result<LogPos> {
        self.check_alive()?;
        let _r = self.reclaim.read().unwrap_or_else(|e| e.into_inner());
        let (tail, tail_lsn, head, next_lsn) = {
            let log = lock(&self.log);
            (log.tail, log.tail_lsn, log.head, log.next_lsn)
        };
        if lsn.saturating_add(1) < tail_lsn {
            return Err(Error::LogRecycled {
                wanted: lsn.saturating_add(1),
                oldest: tail_lsn,
            });
        }
        if lsn.saturating_add(1) >= next_lsn {
            return Ok(LogPos {
                virt: head,
                lsn: next_lsn,
            });
        }
        let mut pos = LogPos {
            virt: tail,
            lsn: tail_lsn,
        };
        while pos.virt < head {
            let (hdr, next) = self.header_at(pos)?;
            if hdr.lsn > lsn {
                return Ok(pos);
            }
            pos = next;
        }
        Ok(LogPos {
            virt: head,
            lsn: next_lsn,
        })
    }

    /// Reads the header of the record at `pos` and the position of the record after it.
    fn header_at(&self, pos: LogPos) -> Result<(Header, LogPos)> {
        let w = self.wal_size;
        let phys = pos.virt % w;
        let mut h = [0u8; HEADER_LEN];
        self.wal.read_at(&mut h, phys).map_err(|e| self.fail(e))?;
        let max = self.max_record_blocks * u64::from(self.block_size);
        let Some((hdr, _crc)) = Header::parse(&h, max).filter(|(hdr, _)| hdr.lsn == pos.lsn) else {
            return Err(Error::CorruptLog {
                lsn: pos.lsn,
                offset: phys,
                reason: "no record where the log says one is".into(),
            });
        };
        let next_virt = match hdr.kind {
            Kind::Wrap => pos.virt + (w - phys),
            _ => pos.virt + record_len(hdr.data_len as usize),
        };
        Ok((
            hdr,
            LogPos {
                virt: next_virt,
                lsn: hdr.lsn + 1,
            },
        ))
    }

    /// Reads the records from `from` towards the head, up to about `max_bytes` of data (at least
    /// one record), skipping padding. Returns them and the position after the last one read.
    /// Fails with [`Error::LogRecycled`] when `from` was freed already.
    pub fn read_log(&self, from: LogPos, max_bytes: usize) -> Result<(Vec<ShippedRecord>, LogPos)> {
        self.read_log_from(from, max_bytes, false)
            .map(|r| r.unwrap_or((Vec::new(), from)))
    }

    /// [`Engine::read_log`] for callers on async threads: `None` when the read would wait for
    /// the disk (the records are not all in the page cache; the caller reads on a blocking
    /// thread instead). Records just appended are in the page cache, so a shipping task that
    /// keeps up never blocks.
    pub fn read_log_nowait(
        &self,
        from: LogPos,
        max_bytes: usize,
    ) -> Option<Result<(Vec<ShippedRecord>, LogPos)>> {
        self.read_log_from(from, max_bytes, true).transpose()
    }

    /// The read of both: the log from `from` is read in large pieces (one `pread` for many
    /// records, not two per record) and cut into records. With `nowait`, `Ok(None)` as soon as
    /// a piece is not in the page cache.
    fn read_log_from(
        &self,
        from: LogPos,
        max_bytes: usize,
        nowait: bool,
    ) -> Result<Option<(Vec<ShippedRecord>, LogPos)>> {
        self.check_alive()?;
        let _r = self.reclaim.read().unwrap_or_else(|e| e.into_inner());
        let (tail_lsn, head) = {
            let log = lock(&self.log);
            (log.tail_lsn, log.head)
        };
        if from.lsn < tail_lsn {
            return Err(Error::LogRecycled {
                wanted: from.lsn,
                oldest: tail_lsn,
            });
        }
        let w = self.wal_size;
        let max_data = self.max_record_blocks * u64::from(self.block_size);
        // The piece read last: `buf` holds the log from virtual offset `at`.
        let mut buf: Vec<u8> = Vec::new();
        let mut at = 0u64;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut pos = from;
        while pos.virt < head && (out.is_empty() || bytes < max_bytes) {
            let phys = pos.virt % w;
            // The record at `pos` (its header, then its data) within the piece, or a new piece
            // from `pos` on: what is left of the wanted bytes, never past the head or the end
            // of the file (records do not wrap; padding fills the end).
            let mut need = HEADER_LEN as u64;
            let hdr = loop {
                let in_piece = pos.virt >= at && pos.virt + need <= at + buf.len() as u64;
                if in_piece {
                    let off = (pos.virt - at) as usize;
                    let h = &buf[off..off + HEADER_LEN];
                    let Some((hdr, _crc)) =
                        Header::parse(h, max_data).filter(|(hdr, _)| hdr.lsn == pos.lsn)
                    else {
                        return Err(Error::CorruptLog {
                            lsn: pos.lsn,
                            offset: phys,
                            reason: "no record where the log says one is".into(),
                        });
                    };
                    let whole = match hdr.kind {
                        Kind::Wrap => HEADER_LEN as u64,
                        _ => HEADER_LEN as u64 + u64::from(hdr.data_len),
                    };
                    if pos.virt + whole <= at + buf.len() as u64 {
                        break hdr;
                    }
                    need = whole;
                }
                if pos.virt + need > head {
                    return Err(Error::CorruptLog {
                        lsn: pos.lsn,
                        offset: phys,
                        reason: "a record runs past the head of the log".into(),
                    });
                }
                let want = (max_bytes.saturating_sub(bytes) as u64)
                    .saturating_add(PIECE_SLACK)
                    .max(need);
                let len = want
                    .min(head - pos.virt)
                    .min(w - phys)
                    .max(need.min(w - phys));
                buf.resize(len as usize, 0);
                if nowait {
                    if !self
                        .wal
                        .read_at_nowait(&mut buf, phys)
                        .map_err(|e| self.fail(e))?
                    {
                        return Ok(None);
                    }
                } else {
                    self.wal.read_at(&mut buf, phys).map_err(|e| self.fail(e))?;
                }
                at = pos.virt;
                if (buf.len() as u64) < need {
                    return Err(Error::CorruptLog {
                        lsn: pos.lsn,
                        offset: phys,
                        reason: "a record runs past the end of the log".into(),
                    });
                }
            };
            let next_virt = match hdr.kind {
                Kind::Wrap => pos.virt + (w - phys),
                _ => pos.virt + record_len(hdr.data_len as usize),
            };
            let next = LogPos {
                virt: next_virt,
                lsn: hdr.lsn + 1,
            };
            let kind = match hdr.kind {
                Kind::Wrap => {
                    pos = next;
                    continue;
                }
                Kind::Write => ShippedKind::Write,
                Kind::Trim => ShippedKind::Trim,
                Kind::Zero => ShippedKind::Zero,
                Kind::Snapshot => ShippedKind::Snapshot,
                Kind::SnapshotDelete => ShippedKind::SnapshotDelete,
                Kind::Grow => ShippedKind::Grow,
            };
            let off = (pos.virt - at) as usize + HEADER_LEN;
            let data = buf[off..off + hdr.data_len as usize].to_vec();
            bytes += data.len().max(1);
            out.push(ShippedRecord {
                lsn: hdr.lsn,
                kind,
                lba: hdr.lba,
                blocks: hdr.blocks,
                data,
            });
            pos = next;
        }
        Ok(Some((out, pos)))
    }

    /// Keeps the records from `floor` on in the log (the first record the slowest standby still
    /// needs), or with `None` lets every checkpoint free what it copied. The floor holds only
    /// while it is less than half the log behind the head; past that the checkpoint frees the
    /// records anyway and the standby must resync (a standby never stops the primary's writes).
    pub fn set_retention(&self, floor: Option<LogPos>) {
        *lock(&self.retention) = floor;
    }

    /// Where the checkpoint up to `target` may move the log tail: `target`, or the retention
    /// floor when one holds records that are still within bounds.
    pub(crate) fn retained_tail(&self, target: LogPos, head: u64) -> LogPos {
        match *lock(&self.retention) {
            Some(floor)
                if floor.lsn < target.lsn
                    && floor.virt >= lock(&self.log).tail
                    && head - floor.virt <= self.wal_size / 2 =>
            {
                floor
            }
            _ => target,
        }
    }

    /// Installs (or removes) the replication link a flush must wait for.
    pub fn set_replica_gate(&self, gate: Option<Arc<dyn ReplicaGate>>) {
        *self.replica_gate.write().unwrap_or_else(|e| e.into_inner()) = gate;
    }

    /// The replication link installed, if any.
    pub(crate) fn replica_gate(&self) -> Option<Arc<dyn ReplicaGate>> {
        self.replica_gate
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until every in-sync standby received the records appended so far (see
    /// [`ReplicaGate::wait_received`]): a plain write completes only then. Nothing to wait for
    /// without a replication link.
    pub(crate) fn wait_received(&self) -> Result<()> {
        let Some(gate) = self.replica_gate() else {
            return Ok(());
        };
        gate.wait_received(self.last_lsn())?;
        self.check_lease_after_wait()
    }

    /// [`Engine::wait_received`] for the volume's async write path: the wait holds no thread.
    pub(crate) async fn received_wait(&self) -> Result<()> {
        let Some(gate) = self.replica_gate() else {
            return Ok(());
        };
        gate.received_async(self.last_lsn()).await?;
        self.check_lease_after_wait()
    }

    /// A write or flush that waited for the standby past the end of this node's lease is not
    /// acknowledged: a standby may be promoted from then on (the self-fence).
    pub(crate) fn check_lease_after_wait(&self) -> Result<()> {
        if self
            .role_state()
            .lease_until
            .is_some_and(|t| t <= std::time::Instant::now())
        {
            return Err(Error::NotServing(crate::AccessState::Transitioning));
        }
        Ok(())
    }

    /// Makes every write acknowledged so far durable here and on every in-sync standby. The
    /// two run in parallel: the standbys are asked for a barrier first (the records are on
    /// their way already, see [`Engine::appended`]), then the local log is synced, then the
    /// flush waits for the standbys. It succeeds only once both are durable.
    pub(crate) fn sync_replicated(&self) -> Result<()> {
        let last = self.last_lsn();
        let gate = self
            .replica_gate
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(gate) = gate else {
            return self.sync_wal();
        };
        gate.request(last)?;
        self.sync_wal()?;
        gate.wait_durable(last)?;
        self.check_lease_after_wait()
    }

    /// Returns once records were appended to the log since the last time it returned (at once
    /// when that happened before the call). A primary's shipping task waits here, so records
    /// leave for the standbys as soon as they are in the log, before any flush syncs them.
    /// Meant for one waiter per engine.
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    /// On a standby (or a rebuilding node): appends the primary's `records` in order. The host
    /// write gate does not apply (a standby refuses host I/O); a primary refuses.
    pub fn apply_replicated(&self, records: &[ShippedRecord]) -> Result<()> {
        self.check_alive()?;
        let role = self.role_state().role;
        if role == Role::Primary {
            return Err(Error::Invalid(
                "a primary does not apply another node's records".into(),
            ));
        }
        let _c = self.caw.read().unwrap_or_else(|e| e.into_inner());
        // Runs of plain writes go into the log with one write each (see
        // `crate::replica_apply`); anything else, or a run the log cannot take in one piece
        // right now, one record at a time.
        let mut i = 0;
        while i < records.len() {
            let mut run: Vec<&ShippedRecord> = Vec::new();
            for r in &records[i..] {
                if !self.batchable(r) || run.last().is_some_and(|p| p.lsn >= r.lsn) {
                    break;
                }
                run.push(r);
            }
            if run.len() > 1 && self.append_applied_run(&run)? {
                i += run.len();
                continue;
            }
            let n = run.len().max(1);
            for r in &records[i..i + n] {
                self.apply_one(r)?;
            }
            i += n;
        }
        Ok(())
    }

    /// Appends one of the primary's records (any kind), unless applied already.
    fn apply_one(&self, r: &ShippedRecord) -> Result<()> {
        // Idempotent by LSN: a record this log holds already (shipped again after a
        // reconnect) is not appended a second time, which would put an older version of
        // its blocks after newer ones.
        if r.lsn <= self.applied_lsn() {
            return Ok(());
        }
        if r.lsn > MAX_ORIGIN {
            return Err(Error::Invalid(format!(
                "record LSN {} is beyond what a log records",
                r.lsn
            )));
        }
        let blocks = u64::from(r.blocks);
        if !matches!(
            r.kind,
            ShippedKind::Snapshot | ShippedKind::SnapshotDelete | ShippedKind::Grow
        ) {
            self.check_range(r.lba, blocks)?;
        }
        match r.kind {
            ShippedKind::Write => {
                if r.data.len() as u64 != blocks * u64::from(self.block_size) {
                    return Err(Error::Invalid(format!(
                        "record {} carries {} bytes for {blocks} blocks",
                        r.lsn,
                        r.data.len()
                    )));
                }
                // This log may hold smaller records than the primary's: only the last
                // part carries the origin, so a log that lost the later parts in a crash
                // does not count the record as applied.
                let chunk = (self.max_record_blocks * u64::from(self.block_size)) as usize;
                let parts = r.data.chunks(chunk.max(1));
                let last = parts.len().saturating_sub(1);
                let mut lba = r.lba;
                for (i, part) in parts.enumerate() {
                    let n = (part.len() / self.block_size as usize) as u64;
                    let origin = if i == last { r.lsn } else { 0 };
                    self.append_from(Kind::Write, lba, n, part, origin)?;
                    lba += n;
                }
            }
            ShippedKind::Trim => self.append_from(Kind::Trim, r.lba, blocks, &[], r.lsn)?,
            ShippedKind::Zero => self.append_from(Kind::Zero, r.lba, blocks, &[], r.lsn)?,
            // At this position of the log, as on the primary.
            ShippedKind::Snapshot => {
                if r.blocks != 0 || r.data.len() > MAX_SNAPSHOT_NAME {
                    return Err(Error::Invalid(format!(
                        "snapshot record {} has blocks or an overlong name",
                        r.lsn
                    )));
                }
                let op = SnapOp::Create {
                    lsn: 0,
                    position: r.lsn,
                    id: r.lba,
                    name: String::from_utf8_lossy(&r.data).into_owned(),
                };
                self.apply_snapshot_op(&op, r.lsn)?;
            }
            ShippedKind::SnapshotDelete => {
                if r.blocks != 0 || !r.data.is_empty() {
                    return Err(Error::Invalid(format!(
                        "snapshot delete record {} carries blocks or data",
                        r.lsn
                    )));
                }
                self.apply_snapshot_op(&SnapOp::Delete { id: r.lba }, r.lsn)?;
            }
            // At this position of the log, as on the primary: the writes after it may reach
            // the new end.
            ShippedKind::Grow => {
                if r.blocks != 0 || !r.data.is_empty() {
                    return Err(Error::Invalid(format!(
                        "grow record {} carries blocks or data",
                        r.lsn
                    )));
                }
                self.apply_grow(r.lba, r.lsn)?;
            }
        }
        self.applied_lsn.fetch_max(r.lsn, Ordering::AcqRel);
        Ok(())
    }

    /// The primary LSN through which this standby has applied records (not necessarily durable).
    pub fn applied_lsn(&self) -> u64 {
        self.applied_lsn.load(Ordering::Acquire)
    }

    /// Makes what was applied durable and returns the primary LSN it covers.
    pub fn sync_applied(&self) -> Result<u64> {
        let applied = self.applied_lsn();
        self.sync_wal()?;
        Ok(applied)
    }

    /// Sets the applied position after a full resync: the standby holds the primary's image as
    /// of `lsn` (not durable by itself: the next checkpoint stores it). The origins of the
    /// records already in the log no longer count towards it.
    pub fn reset_applied(&self, lsn: u64) {
        let _f = lock(&self.flush_lock);
        self.applied_from
            .store(lock(&self.log).next_lsn, Ordering::Release);
        self.applied_lsn.store(lsn, Ordering::Release);
    }
}
