//! Online grow of a volume, as a record in the log.
//!
//! A grow is a [`Kind::Grow`] record (the new capacity in blocks in its `lba` field), so that
//! on a replicated volume it happens at the same log position on every node, like a snapshot:
//! it is shipped in order with the writes, and the writes beyond the old end that follow it
//! apply cleanly on the standby.
//!
//! Order on the node that grows (a primary, or a volume without replication):
//! 1. the extent is extended and synced (a file system that refuses the length fails the grow
//!    before anything is recorded);
//! 2. the grow record is appended and made durable, on a replicated primary also on every
//!    in-sync standby (as a flush: [`Engine::sync_replicated`]);
//! 3. the superblock records the new capacity, and only then do hosts see it.
//!
//! So a promoted standby never has a smaller volume than the hosts were told. A crash after 2
//! and before 3 is completed at open: recovery replays the record ([`crate::recovery`] tracks
//! the capacity through grow records, so the writes after it are in range) and `redo_grow` extends
//! the extent and stores the superblock before the first checkpoint. A crash before 2 leaves
//! the old capacity with a longer extent (harmless: the next grow cuts it first).
//!
//! A standby applies a shipped grow record at its position ([`Engine::apply_grow`]): extent,
//! superblock, then the record with the primary's LSN as its origin. A grow to a size the
//! volume has already reached changes nothing but is still recorded (idempotent: a record
//! shipped again after a reconnect, or a standby that took the primary's size from its Hello
//! before a full resync, [`Engine::follow_capacity`]).
//!
//! The flush lock is held from the record to the superblock, so no checkpoint passes a grow
//! record whose superblock update is not stored yet.

use std::sync::atomic::Ordering;

use crate::engine::{lock, Engine};
use crate::error::{Error, Result};
use crate::record::Kind;
use crate::role::Role;
use crate::storage::BlockFile;

/// Extends `extent` from `old` to `new` blocks of `bs` bytes, durably. Whatever lies beyond
/// the old end (the tail of a shrink a crash interrupted before its truncation) is cut off
/// first, so the new blocks read as zeros. Fails with [`Error::Invalid`] (nothing changed)
/// when the file system refuses the length.
fn extend(extent: &dyn BlockFile, bs: u32, old: u64, new: u64) -> Result<()> {
    let bytes = new
        .checked_mul(u64::from(bs))
        .ok_or_else(|| Error::InvalidGeometry(format!("{new} blocks is too large")))?;
    let old_bytes = old * u64::from(bs);
    extent.set_len(old_bytes)?;
    if let Err(e) = extent.set_len(bytes) {
        // The file system refuses the length (too large for it, a quota): nothing of the
        // volume changed, so it keeps serving at its old size.
        extent.set_len(old_bytes)?;
        return Err(Error::Invalid(format!(
            "the file system refuses an extent of {bytes} bytes: {e}"
        )));
    }
    extent.sync_data()?;
    Ok(())
}

impl Engine {
    /// Grows the volume online to `blocks` blocks (see the module documentation for the
    /// order of events). Durable when it returns: on a replicated primary the in-sync
    /// standbys hold the grow too. Shrinking is refused (see [`Engine::shrink`]), and so is a
    /// grow on a standby (it follows its primary's log).
    pub fn grow(&self, blocks: u64) -> Result<()> {
        self.check_alive()?;
        match self.role_state().role {
            Role::Standby | Role::Rebuilding | Role::Stale => {
                return Err(Error::Invalid(
                    "this node is not the volume's primary: a standby follows its primary's \
                     size; grow the volume on the primary"
                        .into(),
                ))
            }
            // A primary that lost its lease or was fenced does not serve, so it does not
            // grow either (its record would not be the volume's log).
            Role::Primary => self.gate()?,
            Role::None => {}
        }
        if blocks < self.capacity_blocks() {
            return Err(Error::Invalid(format!(
                "cannot shrink from {} to {blocks} blocks",
                self.capacity_blocks()
            )));
        }
        if blocks == self.capacity_blocks() {
            return Ok(());
        }
        // Room in the log for the record (a full log would wait for a checkpoint, which the
        // flush lock below holds off).
        self.flush_once()?;
        let _f = lock(&self.flush_lock);
        let old = self.capacity_blocks();
        if blocks < old {
            return Err(Error::Invalid(format!(
                "cannot shrink from {old} to {blocks} blocks"
            )));
        }
        if blocks == old {
            return Ok(());
        }
        extend(self.extent.as_ref(), self.block_size, old, blocks).map_err(|e| self.io_fail(e))?;
        self.append_lsn(Kind::Grow, blocks, &[], 0)?;
        self.sync_replicated()?;
        self.publish_capacity(blocks)
    }

    /// On a standby: applies the primary's grow record (the primary's LSN `origin`) at this
    /// position of the log: the volume grows to `blocks` unless it is that large already, and
    /// the record goes into this log either way (its origin is the applied position). The
    /// caller holds the compare-and-write lock for reading, as every appender does.
    pub(crate) fn apply_grow(&self, blocks: u64, origin: u64) -> Result<()> {
        if blocks == 0 || blocks.checked_mul(u64::from(self.block_size)).is_none() {
            return Err(Error::Invalid(format!(
                "grow record {origin} names an impossible size of {blocks} blocks"
            )));
        }
        // Room in the log for the record, as for a snapshot record.
        self.flush_once()?;
        let _f = lock(&self.flush_lock);
        let old = self.capacity_blocks();
        if blocks > old {
            extend(self.extent.as_ref(), self.block_size, old, blocks)
                .map_err(|e| self.io_fail(e))?;
            self.publish_capacity(blocks)?;
            tracing::info!(volume = %self.volume_dir().display(), old_blocks = old,
                new_blocks = blocks, position = origin, "volume grown as on the primary");
        }
        self.append_lsn(Kind::Grow, blocks, &[], origin)?;
        Ok(())
    }

    /// On a standby whose primary announces a larger volume (its Hello, before a full resync
    /// or a catch-up that starts after the primary's grow record was recycled): grows to
    /// `blocks` without a record. The superblock holds it durably; a grow record that arrives
    /// later for this size changes nothing. A larger standby is harmless: it is never smaller
    /// than what the hosts were told.
    pub fn follow_capacity(&self, blocks: u64) -> Result<()> {
        self.check_alive()?;
        if self.role_state().role == Role::Primary {
            return Err(Error::Invalid(
                "a primary's size changes only through its own grow".into(),
            ));
        }
        let _f = lock(&self.flush_lock);
        let old = self.capacity_blocks();
        if blocks <= old {
            return Ok(());
        }
        extend(self.extent.as_ref(), self.block_size, old, blocks).map_err(|e| self.io_fail(e))?;
        self.publish_capacity(blocks)?;
        tracing::info!(volume = %self.volume_dir().display(), old_blocks = old,
            new_blocks = blocks, "volume grown to the primary's size");
        Ok(())
    }

    /// At open, before the first checkpoint: completes a grow whose record recovery replayed
    /// (`capacity` is the capacity after the replayed grow records) but whose superblock
    /// update a crash cut off.
    pub(crate) fn redo_grow(&self, capacity: u64) -> Result<()> {
        let _f = lock(&self.flush_lock);
        let old = self.capacity_blocks();
        if capacity <= old {
            return Ok(());
        }
        tracing::info!(volume = %self.volume_dir().display(), old_blocks = old,
            new_blocks = capacity, "completing a grow interrupted by a crash");
        extend(self.extent.as_ref(), self.block_size, old, capacity)
            .map_err(|e| self.io_fail(e))?;
        self.publish_capacity(capacity)
    }

    /// Stores the new capacity in the superblock, then lets requests reach it. The flush lock
    /// is held.
    fn publish_capacity(&self, blocks: u64) -> Result<()> {
        let mut sb = lock(&self.sb);
        sb.capacity_blocks = blocks;
        sb.store(self.meta.as_ref()).map_err(|e| self.fail(e))?;
        self.capacity.store(blocks, Ordering::Release);
        Ok(())
    }

    /// An error of [`extend`]: a refused length leaves the volume as it was; anything else
    /// is an I/O failure that fails the engine.
    fn io_fail(&self, e: Error) -> Error {
        match e {
            Error::Invalid(_) | Error::InvalidGeometry(_) => e,
            e => self.fail(e),
        }
    }
}
