//! The engine's side of a full resync (rebuild) of a standby.
//!
//! When a standby's position is no longer in the primary's log (the records were recycled),
//! the primary copies its image: every run of allocated blocks with its data, every run of
//! deallocated blocks as a deallocation, then ships its log from the LSN it noted before the
//! copy began. The copy runs while hosts write: a region read later than that LSN may already
//! hold newer writes, which is harmless because the log replayed from there overwrites every
//! block written since, in order.
//!
//! - On the primary: [`Engine::resync_plan`] lists the runs (from the index of records not yet
//!   checkpointed and the extent file's holes, `SEEK_DATA`/`SEEK_HOLE`), so only written
//!   regions move; the data comes from the ordinary read path.
//! - On the standby: [`Engine::begin_resync`] records durably that the image is being replaced
//!   (so a crash mid-copy can never make it look complete: it announces itself as needing a
//!   resync again, and [`Engine::promote`] refuses it); [`Engine::apply_resync_extent`] writes
//!   the copied runs through its log; [`Engine::resync_copied`] sets the applied position to
//!   the copy's start LSN so the records that follow apply after it; and
//!   [`Engine::finish_resync`], once the records through the copy's end are applied and
//!   durable, persists the applied position and clears the mark.

use std::sync::atomic::Ordering;

use crate::engine::{lock, Engine};
use crate::error::{Error, Result};
use crate::record::Kind;
use crate::replica_gate::{encode_applied, APPLIED_METADATA, RESYNC_METADATA};
use crate::role::Role;

/// One run of the volume as a full resync copies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First block.
    pub lba: u64,
    /// Number of blocks.
    pub blocks: u64,
    /// Whether the blocks hold data (copied) or are deallocated (deallocated on the standby).
    pub mapped: bool,
}

impl Engine {
    /// The volume as runs of allocated and deallocated blocks, adjacent runs of the same kind
    /// merged, covering every block once. What is allocated comes from what the engine knows:
    /// records not yet checkpointed, then the extent file's data regions.
    pub fn resync_plan(&self) -> Result<Vec<Run>> {
        let capacity = self.capacity_blocks();
        let mut runs: Vec<Run> = Vec::new();
        let mut lba = 0u64;
        while lba < capacity {
            let (mapped, n) = self.lba_status(lba, capacity - lba)?;
            let n = n.clamp(1, capacity - lba);
            match runs.last_mut() {
                Some(last) if last.mapped == mapped && last.lba + last.blocks == lba => {
                    last.blocks += n
                }
                _ => runs.push(Run {
                    lba,
                    blocks: n,
                    mapped,
                }),
            }
            lba += n;
        }
        Ok(runs)
    }

    /// Whether a full resync began on this standby and has not completed (persisted: true
    /// again after a crash in the middle).
    pub fn resync_incomplete(&self) -> bool {
        self.resyncing.load(Ordering::Acquire)
    }

    fn refuse_on_primary(&self) -> Result<()> {
        self.check_alive()?;
        if self.role_state().role == Role::Primary {
            return Err(Error::Invalid(
                "a primary does not take another node's image".into(),
            ));
        }
        Ok(())
    }

    /// A full resync begins: marks durably that the image is being replaced, before any of it
    /// is, and forgets the applied position (it means nothing until the resync completes).
    pub fn begin_resync(&self) -> Result<()> {
        self.refuse_on_primary()?;
        let _f = lock(&self.flush_lock);
        self.save_metadata(RESYNC_METADATA, b"copying")?;
        self.resyncing.store(true, Ordering::Release);
        self.applied_lsn.store(0, Ordering::Release);
        // The records from here on are the copy (no origin) and then the primary's log from
        // the copy's start: only their origins count towards the new position.
        self.applied_from
            .store(lock(&self.log).next_lsn, Ordering::Release);
        Ok(())
    }

    /// Writes one copied run: `data` for `blocks` blocks at `lba`, or deallocates them when
    /// `None`. Only during a resync, and never on a primary.
    pub fn apply_resync_extent(&self, lba: u64, blocks: u64, data: Option<&[u8]>) -> Result<()> {
        self.refuse_on_primary()?;
        if !self.resync_incomplete() {
            return Err(Error::Invalid("no full resync is running".into()));
        }
        self.check_range(lba, blocks)?;
        let _c = self.caw.read().unwrap_or_else(|e| e.into_inner());
        let bs = u64::from(self.block_size);
        match data {
            Some(d) => {
                if d.len() as u64 != blocks * bs {
                    return Err(Error::Invalid(format!(
                        "a resync extent carries {} bytes for {blocks} blocks",
                        d.len()
                    )));
                }
                let chunk = (self.max_record_blocks * bs) as usize;
                let mut cur = lba;
                for part in d.chunks(chunk.max(1)) {
                    let n = part.len() as u64 / bs;
                    self.append(Kind::Write, cur, n, part)?;
                    cur += n;
                }
            }
            None => {
                let end = lba + blocks;
                let mut cur = lba;
                while cur < end {
                    let n = (end - cur).min(u64::from(u32::MAX));
                    self.append(Kind::Trim, cur, n, &[])?;
                    cur += n;
                }
            }
        }
        Ok(())
    }

    /// The copy is complete: the records that follow apply after the primary's `start_lsn`.
    /// The mark stays until [`Engine::finish_resync`].
    pub fn resync_copied(&self, start_lsn: u64) -> Result<()> {
        self.refuse_on_primary()?;
        let _f = lock(&self.flush_lock);
        self.applied_lsn.store(start_lsn, Ordering::Release);
        Ok(())
    }

    /// The records through the copy's end are applied: makes them durable, persists the
    /// applied position, then clears the mark (in that order, so a crash between leaves the
    /// mark and the standby resyncs again). Returns the durable applied position.
    pub fn finish_resync(&self) -> Result<u64> {
        self.sync_wal()?;
        let _f = lock(&self.flush_lock);
        let applied = self.applied_lsn.load(Ordering::Acquire);
        let from = self.applied_from.load(Ordering::Acquire);
        self.save_metadata(APPLIED_METADATA, &encode_applied(applied, from))?;
        self.save_metadata(RESYNC_METADATA, b"")?;
        self.resyncing.store(false, Ordering::Release);
        Ok(applied)
    }
}
