//! The snapshot operations of the engine: create, list, read, delete, roll back.
//!
//! Crash rules (the record is the truth; the table follows it):
//! - Create: host writes are held (the compare-and-write lock, taken for writing), the log is
//!   checkpointed (everything acknowledged is in the extent), then the snapshot record is
//!   appended and made durable (on a replicated primary: on the standbys too), then the
//!   delta store is created and the table stored. A crash after the record is durable but
//!   before the table is stored is completed at open: the record is replayed and no write
//!   after it can have reached the extent (none could be appended before the table was stored).
//! - Delete: the delete record is appended and made durable first, then the snapshot's blocks
//!   that the next older snapshot needs are moved into that one's delta store, the table is
//!   stored and the files removed. A crash anywhere after the record is completed at open.
//! - Rollback: a mark naming the snapshot is stored, then the snapshot's version of every
//!   block changed since it was taken is appended to the log as ordinary write (or zero)
//!   records, made durable, and the mark cleared. A crash with the mark stored is completed at
//!   open. Because a rollback is ordinary writes, copy-on-write keeps the newer snapshots
//!   correct and a standby follows it from the log like any write.
//!
//! On a standby, snapshot and delete records arrive from the primary ([`Engine::apply_snapshot_op`])
//! and are applied at the same log position; a standby refuses the operations from anyone else.

use crate::engine::{lock, Engine};
use crate::error::{Error, Result};
use crate::record::Kind;
use crate::recovery::{SnapOp, MAX_SNAPSHOT_NAME};
use crate::role::Role;
use crate::snapshot::{delta_file, map_file, Entry, Snap, SnapshotInfo, TABLE};

/// Metadata naming the snapshot a rollback in progress restores (empty: none).
pub(crate) const ROLLBACK_METADATA: &str = "meta-snapshot-rollback";

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_SNAPSHOT_NAME {
        return Err(Error::Invalid(format!(
            "a snapshot name must be 1 to {MAX_SNAPSHOT_NAME} bytes, not {}",
            name.len()
        )));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(Error::Invalid(
            "a snapshot name cannot hold control characters".into(),
        ));
    }
    Ok(())
}

impl Engine {
    /// Takes a snapshot named `name`: every write acknowledged before the call is in it, none
    /// acknowledged after. Host writes wait while it is taken (a checkpoint and one log sync;
    /// on a replicated volume also the standbys' sync of the record). Only where the volume
    /// serves (a primary); a standby takes the same snapshot when the record reaches it.
    pub fn create_snapshot(&self, name: &str) -> Result<SnapshotInfo> {
        self.check_alive()?;
        check_name(name)?;
        self.gate()?;
        let _c = self.caw.write().unwrap_or_else(|e| e.into_inner());
        {
            let snaps = self.snaps.read().unwrap_or_else(|e| e.into_inner());
            if snaps.list.iter().any(|s| s.entry.name == name) {
                return Err(Error::Exists(format!("a snapshot named {name:?} exists")));
            }
        }
        // Everything acknowledged so far goes into the extent: the snapshot is the extent.
        self.flush_once()?;
        let _f = lock(&self.flush_lock);
        let id = self.snaps.read().unwrap_or_else(|e| e.into_inner()).next_id;
        let lsn = self.append_lsn(Kind::Snapshot, id, name.as_bytes(), 0)?;
        self.sync_replicated()?;
        self.register_snapshot(id, lsn, lsn, name)
    }

    /// Stores a snapshot whose record is durable at `lsn` (the primary's position
    /// `position`): its empty delta store, then the table. The flush lock is held.
    fn register_snapshot(
        &self,
        id: u64,
        lsn: u64,
        position: u64,
        name: &str,
    ) -> Result<SnapshotInfo> {
        let io = |e: std::io::Error| self.fail(e);
        self.storage.create(&delta_file(id)).map_err(io)?;
        self.storage.create(&map_file(id)).map_err(io)?;
        self.storage.sync_dir().map_err(io)?;
        let entry = Entry {
            id,
            lsn,
            position,
            capacity_blocks: self.capacity_blocks(),
            created_unix: now_unix(),
            clones: 0,
            name: name.to_string(),
        };
        let snap = Snap::open(self.storage.as_ref(), entry)?;
        let mut snaps = self.snaps.write().unwrap_or_else(|e| e.into_inner());
        let mut table = snaps.table();
        table.entries.push(snap.entry.clone());
        table.next_id = id + 1;
        self.storage
            .replace(TABLE, &table.encode())
            .map_err(|e| self.fail(e))?;
        snaps.next_id = id + 1;
        let info = snap.info();
        snaps.list.push(snap);
        tracing::info!(volume = %self.volume_dir().display(), id, name, position, "snapshot taken");
        Ok(info)
    }

    /// Records durably that snapshot `id` is not taken here (its record reached a standby in
    /// the middle of a full resync, when the image is no point of the primary's log): its id
    /// counts as used, so neither a replay of the record at open nor a second shipping of it
    /// takes it later, at the wrong point. The flush lock is held.
    fn skip_snapshot(&self, id: u64, name: &str) -> Result<()> {
        let mut snaps = self.snaps.write().unwrap_or_else(|e| e.into_inner());
        let mut table = snaps.table();
        table.next_id = table.next_id.max(id + 1);
        self.storage
            .replace(TABLE, &table.encode())
            .map_err(|e| self.fail(e))?;
        snaps.next_id = table.next_id;
        tracing::warn!(
            volume = %self.volume_dir().display(),
            id,
            name,
            "snapshot not taken on this standby: a full resync is in progress"
        );
        Ok(())
    }

    /// The volume's snapshots, oldest first.
    pub fn list_snapshots(&self) -> Vec<SnapshotInfo> {
        let snaps = self.snaps.read().unwrap_or_else(|e| e.into_inner());
        snaps.list.iter().map(Snap::info).collect()
    }

    /// Reads whole blocks of snapshot `id` at `lba` into `buf`.
    pub fn read_snapshot(&self, id: u64, lba: u64, buf: &mut [u8]) -> Result<()> {
        self.check_alive()?;
        let blocks = self.blocks_of(buf.len())?;
        let bs = u64::from(self.block_size);
        let snaps = self.snaps.read().unwrap_or_else(|e| e.into_inner());
        let i = snaps.find(id)?;
        let capacity = snaps.list[i].entry.capacity_blocks;
        if lba.checked_add(blocks).is_none_or(|end| end > capacity) {
            return Err(Error::OutOfRange {
                lba,
                blocks,
                capacity,
            });
        }
        let mut at = lba;
        while at < lba + blocks {
            let src = snaps.source(i, at);
            let mut n = 1;
            while at + n < lba + blocks && snaps.source(i, at + n) == src {
                n += 1;
            }
            let from = ((at - lba) * bs) as usize;
            let out = &mut buf[from..from + (n * bs) as usize];
            match src {
                Some(j) => snaps.list[j].delta.read_at(out, at * bs)?,
                None => self.read_base(at, out)?,
            }
            at += n;
        }
        Ok(())
    }

    /// Deletes snapshot `id`. Refused while clones of it exist or views of it are open. The
    /// blocks an older snapshot still reads through it move to that snapshot's delta store;
    /// the rest of its space is freed.
    pub fn delete_snapshot(&self, id: u64) -> Result<()> {
        self.check_alive()?;
        self.gate()?;
        self.check_deletable(id)?;
        let _c = self.caw.write().unwrap_or_else(|e| e.into_inner());
        // Room in the log for the record (a full log would wait for a checkpoint, which the
        // flush lock below holds off).
        self.flush_once()?;
        let _f = lock(&self.flush_lock);
        self.check_deletable(id)?;
        self.append_lsn(Kind::SnapshotDelete, id, &[], 0)?;
        self.sync_replicated()?;
        self.remove_snapshot(id)
    }

    fn check_deletable(&self, id: u64) -> Result<()> {
        let snaps = self.snaps.read().unwrap_or_else(|e| e.into_inner());
        let s = &snaps.list[snaps.find(id)?];
        if s.entry.clones > 0 || s.views > 0 {
            return Err(Error::Busy(format!(
                "snapshot {} ({:?}) has {} clone(s) and {} open view(s): delete those first",
                id, s.entry.name, s.entry.clones, s.views
            )));
        }
        Ok(())
    }

    /// Deletes a snapshot whose delete record is durable (idempotent: a snapshot already gone
    /// is not an error). The flush lock is held, so no checkpoint preserves blocks meanwhile.
    fn remove_snapshot(&self, id: u64) -> Result<()> {
        let (moves, older_delta) = {
            let snaps = self.snaps.read().unwrap_or_else(|e| e.into_inner());
            let Ok(i) = snaps.find(id) else {
                drop(snaps);
                // Gone from the table already: a crash may have left its files behind.
                for name in [delta_file(id), map_file(id)] {
                    self.storage.remove(&name).map_err(|e| self.fail(e))?;
                }
                return Ok(());
            };
            if i == 0 {
                (Vec::new(), None)
            } else {
                // The older snapshot reads through this one where it holds nothing itself.
                let older = &snaps.list[i - 1];
                let cap = older.entry.capacity_blocks;
                let moves: Vec<(u64, u64)> = snaps.list[i]
                    .map
                    .ranges()
                    .into_iter()
                    .filter(|&(s, _)| s < cap)
                    .flat_map(|(s, l)| older.map.missing(s, l.min(cap - s)))
                    .collect();
                (
                    moves,
                    Some((older.delta.clone(), snaps.list[i].delta.clone())),
                )
            }
        };
        let bs = u64::from(self.block_size);
        if let Some((to, from)) = older_delta.filter(|_| !moves.is_empty()) {
            let mut buf = Vec::new();
            for &(start, len) in &moves {
                let mut at = start;
                while at < start + len {
                    let n = (start + len - at).min((1 << 20) / bs);
                    buf.resize((n * bs) as usize, 0);
                    from.read_at(&mut buf, at * bs).map_err(|e| self.fail(e))?;
                    to.write_at(&buf, at * bs).map_err(|e| self.fail(e))?;
                    at += n;
                }
            }
            to.sync_data().map_err(|e| self.fail(e))?;
            let snaps = self.snaps.read().unwrap_or_else(|e| e.into_inner());
            let i = snaps.find(id)?;
            let update = snaps.list[i - 1].map.prepare(&moves);
            snaps.list[i - 1]
                .map
                .persist(&update)
                .map_err(|e| self.fail(e))?;
            drop(snaps);
            let mut snaps = self.snaps.write().unwrap_or_else(|e| e.into_inner());
            snaps.list[i - 1].map.apply(&update);
        }
        let mut snaps = self.snaps.write().unwrap_or_else(|e| e.into_inner());
        let i = snaps.find(id)?;
        let mut table = snaps.table();
        table.entries.remove(i);
        self.storage
            .replace(TABLE, &table.encode())
            .map_err(|e| self.fail(e))?;
        snaps.list.remove(i);
        drop(snaps);
        for name in [delta_file(id), map_file(id)] {
            self.storage.remove(&name).map_err(|e| self.fail(e))?;
        }
        tracing::info!(volume = %self.volume_dir().display(), id, "snapshot deleted");
        Ok(())
    }

    /// Rolls the volume back to snapshot `id`: afterwards it reads as the snapshot did (blocks
    /// beyond the snapshot's capacity, if the volume grew since, read as zeros). Host writes
    /// wait until it is done; it is durable when it returns. Other snapshots, older and newer,
    /// stay as they are.
    pub fn rollback_snapshot(&self, id: u64) -> Result<()> {
        self.check_alive()?;
        self.gate()?;
        self.check_writable()?;
        let _c = self.caw.write().unwrap_or_else(|e| e.into_inner());
        self.snaps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .find(id)?;
        // Every block changed since the snapshot is in the extent (and so preserved).
        self.flush_once()?;
        self.storage
            .replace(ROLLBACK_METADATA, &id.to_le_bytes())
            .map_err(|e| self.fail(e))?;
        self.restore_snapshot(id)?;
        self.sync_replicated()?;
        self.storage
            .replace(ROLLBACK_METADATA, &[])
            .map_err(|e| self.fail(e))?;
        tracing::info!(volume = %self.volume_dir().display(), id, "volume rolled back to snapshot");
        Ok(())
    }

    /// Appends the snapshot's version of every block changed since it was taken (after a
    /// checkpoint: the log holds nothing newer than the extent).
    fn restore_snapshot(&self, id: u64) -> Result<()> {
        let bs = u64::from(self.block_size);
        let (mut ranges, cap) = {
            let snaps = self.snaps.read().unwrap_or_else(|e| e.into_inner());
            let i = snaps.find(id)?;
            (snaps.changed_ranges(i), snaps.list[i].entry.capacity_blocks)
        };
        ranges.retain(|&(s, _)| s < cap);
        for r in &mut ranges {
            r.1 = r.1.min(cap - r.0);
        }
        let per = self.max_record_blocks.max(1);
        let mut buf = Vec::new();
        for (start, len) in ranges {
            let mut at = start;
            while at < start + len {
                let n = (start + len - at).min(per);
                buf.resize((n * bs) as usize, 0);
                self.read_snapshot(id, at, &mut buf)?;
                if buf.iter().all(|&b| b == 0) {
                    self.append(Kind::Zero, at, n, &[])?;
                } else {
                    self.append(Kind::Write, at, n, &buf)?;
                }
                at += n;
            }
        }
        let capacity = self.capacity_blocks();
        let mut at = cap;
        while at < capacity {
            let n = (capacity - at).min(u64::from(u32::MAX));
            self.append(Kind::Zero, at, n, &[])?;
            at += n;
        }
        Ok(())
    }

    /// On a standby: performs the primary's snapshot operation `op` carried by the record
    /// with the primary's LSN `origin`, at this position of the log (idempotent: an operation
    /// already done is only recorded). The caller holds the compare-and-write lock for reading,
    /// as every appender does.
    pub(crate) fn apply_snapshot_op(&self, op: &SnapOp, origin: u64) -> Result<()> {
        // Everything before the record is in the extent before the snapshot exists.
        self.flush_once()?;
        let _f = lock(&self.flush_lock);
        match op {
            SnapOp::Create { id, name, .. } => {
                let done = *id < self.snaps.read().unwrap_or_else(|e| e.into_inner()).next_id;
                // During a full resync the image is a mix of the copy and the records replayed
                // over it, consistent only once the resync completes: a snapshot taken now would
                // not be the primary's. It is left out (the standby lacks it, as it lacks those
                // taken before the resync).
                let consistent = !self.resync_incomplete();
                let lsn = self.append_lsn(Kind::Snapshot, *id, name.as_bytes(), origin)?;
                if !done && !consistent {
                    self.sync_wal()?;
                    self.skip_snapshot(*id, name)?;
                }
                if !done && consistent {
                    self.sync_wal()?;
                    self.register_snapshot(*id, lsn, origin, name)?;
                }
            }
            SnapOp::Delete { id } => {
                self.append_lsn(Kind::SnapshotDelete, *id, &[], origin)?;
                self.sync_wal()?;
                self.remove_snapshot(*id)?;
            }
        }
        Ok(())
    }

    /// At open, before the first checkpoint: completes the snapshot operations whose records
    /// the recovered log holds but the table does not show done yet.
    pub(crate) fn redo_snapshot_ops(&self, ops: &[SnapOp]) -> Result<()> {
        let _f = lock(&self.flush_lock);
        for op in ops {
            match op {
                SnapOp::Create {
                    lsn,
                    position,
                    id,
                    name,
                } => {
                    let next = self.snaps.read().unwrap_or_else(|e| e.into_inner()).next_id;
                    if *id < next {
                        continue;
                    }
                    // Never while a full resync is incomplete (see `apply_snapshot_op`).
                    if self.resync_incomplete() {
                        self.skip_snapshot(*id, name)?;
                    } else {
                        tracing::info!(id, name, "completing a snapshot interrupted by a crash");
                        self.register_snapshot(*id, *lsn, *position, name)?;
                    }
                }
                SnapOp::Delete { id } => self.remove_snapshot(*id)?,
            }
        }
        Ok(())
    }

    /// At open, after recovery: completes a rollback interrupted by a crash (on a primary;
    /// elsewhere the mark is dropped with a warning: a standby follows its primary's log).
    pub(crate) fn redo_rollback(&self) -> Result<()> {
        let Some(b) = self.storage.read_all(ROLLBACK_METADATA)? else {
            return Ok(());
        };
        let Ok(bytes) = <[u8; 8]>::try_from(b.as_slice()) else {
            return Ok(());
        };
        let id = u64::from_le_bytes(bytes);
        let known = self
            .snaps
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .find(id)
            .is_ok();
        if known && self.role_state().role == Role::Primary {
            tracing::warn!(volume = %self.volume_dir().display(), id,
                "completing a rollback interrupted by a crash");
            let _c = self.caw.write().unwrap_or_else(|e| e.into_inner());
            self.restore_snapshot(id)?;
            self.sync_wal()?;
        } else {
            tracing::warn!(volume = %self.volume_dir().display(), id,
                "dropping the mark of an interrupted rollback: not a primary, or the snapshot is gone");
        }
        self.storage
            .replace(ROLLBACK_METADATA, &[])
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Counts a clone made from snapshot `id` (persisted: the snapshot cannot be deleted until
    /// [`Engine::clone_deleted`] is called for each).
    pub(crate) fn add_clone(&self, id: u64, delta: i64) -> Result<()> {
        let _f = lock(&self.flush_lock);
        let mut snaps = self.snaps.write().unwrap_or_else(|e| e.into_inner());
        let i = snaps.find(id)?;
        let clones = i64::from(snaps.list[i].entry.clones) + delta;
        let mut table = snaps.table();
        table.entries[i].clones = u32::try_from(clones.max(0)).unwrap_or(u32::MAX);
        self.storage
            .replace(TABLE, &table.encode())
            .map_err(|e| self.fail(e))?;
        snaps.list[i].entry.clones = table.entries[i].clones;
        Ok(())
    }

    /// A clone of snapshot `id` was deleted (its directory removed by the caller): the
    /// snapshot no longer counts it.
    pub fn clone_deleted(&self, id: u64) -> Result<()> {
        self.check_alive()?;
        self.add_clone(id, -1)
    }

    /// Opens or closes a view of snapshot `id` (counted so it cannot be deleted under it).
    pub(crate) fn view_count(&self, id: u64, opened: bool) -> Result<SnapshotInfo> {
        let mut snaps = self.snaps.write().unwrap_or_else(|e| e.into_inner());
        let i = snaps.find(id)?;
        let s = &mut snaps.list[i];
        if opened {
            s.views += 1;
        } else {
            s.views = s.views.saturating_sub(1);
        }
        Ok(s.info())
    }

    /// Whether a rollback mark is stored (for tests of interrupted rollbacks).
    pub fn rollback_pending(&self) -> bool {
        self.storage
            .read_all(ROLLBACK_METADATA)
            .ok()
            .flatten()
            .is_some_and(|b| !b.is_empty())
    }
}
