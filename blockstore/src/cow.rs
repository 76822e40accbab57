//! Copy-on-write at the flusher: what a checkpoint does before it overwrites the extent.
//!
//! A checkpoint about to write logged blocks into the extent first preserves, for the newest
//! snapshot, the current version of every block it will overwrite that the snapshot does not
//! hold yet and that the snapshot covers (blocks written after it was taken, within its
//! capacity). The order is what makes it crash-safe: the old blocks are written to the delta
//! store and synced, then the block map is written and synced, and only then does the
//! checkpoint touch the extent. A crash before the map is durable leaves the extent untouched,
//! so the preservation is simply done again from the same extent; a map bit is never set for
//! a block whose old version is not durable in the delta store, and never cleared.
//!
//! A clone marks, the same way, the blocks it is about to write in its own extent as written
//! before writing them, so its unwritten blocks keep reading from its origin snapshot.
//!
//! Both read the volume's base image (the checkpointed state: the extent, and for a clone its
//! origin where it wrote nothing) through [`Engine::read_base`].

use std::io;

use crate::engine::Engine;
use crate::index::Entry;

/// Largest piece preserved with one read and one write.
const RUN_BLOCKS_BYTES: u64 = 1 << 20;

impl Engine {
    /// Reads the checkpointed image (no log records) of `buf.len()` bytes of blocks at `lba`:
    /// the extent, or for a clone the origin snapshot where the clone wrote nothing yet.
    pub(crate) fn read_base(&self, lba: u64, buf: &mut [u8]) -> io::Result<()> {
        let bs = u64::from(self.block_size);
        let Some(clone) = &self.clone else {
            return self.extent.read_at(buf, lba * bs);
        };
        let blocks = buf.len() as u64 / bs;
        let runs: Vec<(u64, u64, bool)> = {
            let written = clone.written.read().unwrap_or_else(|e| e.into_inner());
            let mut out = Vec::new();
            let mut at = lba;
            while at < lba + blocks {
                let (w, n) = written.run(at, lba + blocks - at);
                out.push((at, n, w));
                at += n;
            }
            out
        };
        for (at, n, written) in runs {
            let from = ((at - lba) * bs) as usize;
            let out = &mut buf[from..from + (n * bs) as usize];
            if written {
                self.extent.read_at(out, at * bs)?;
            } else {
                clone
                    .origin
                    .read(at, out)
                    .map_err(|e| io::Error::other(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// The copy-on-write step of a checkpoint that will write `entries` into the extent:
    /// preserves what the newest snapshot needs, then (on a clone) marks the blocks written.
    /// Everything it does is durable when it returns.
    pub(crate) fn before_extent_copy(&self, entries: &[Entry]) -> io::Result<()> {
        self.preserve_for_newest(entries)?;
        self.mark_clone_written(entries)
    }

    fn preserve_for_newest(&self, entries: &[Entry]) -> io::Result<()> {
        let bs = u64::from(self.block_size);
        // Only checkpoints and the snapshot operations change the list and the maps, and both
        // hold the flush lock, so what is read here stays true until the end.
        let (ranges, delta) = {
            let snaps = self.snaps.read().unwrap_or_else(|e| e.into_inner());
            let Some(newest) = snaps.list.last() else {
                return Ok(());
            };
            let (after, cap) = (newest.entry.lsn, newest.entry.capacity_blocks);
            let mut ranges = Vec::new();
            for e in entries.iter().filter(|e| e.loc.lsn() > after) {
                let end = (e.start + e.len).min(cap);
                if e.start < end {
                    ranges.extend(newest.map.missing(e.start, end - e.start));
                }
            }
            (ranges, newest.delta.clone())
        };
        if ranges.is_empty() {
            return Ok(());
        }
        let per = (RUN_BLOCKS_BYTES / bs).max(1);
        let mut buf = Vec::new();
        for &(start, len) in &ranges {
            let mut at = start;
            while at < start + len {
                let n = (start + len - at).min(per);
                buf.resize((n * bs) as usize, 0);
                self.read_base(at, &mut buf)?;
                delta.write_at(&buf, at * bs)?;
                at += n;
            }
        }
        // The old versions are durable before the map says they are there.
        delta.sync_data()?;
        let snaps = self.snaps.read().unwrap_or_else(|e| e.into_inner());
        let Some(newest) = snaps.list.last() else {
            return Ok(());
        };
        let update = newest.map.prepare(&ranges);
        newest.map.persist(&update)?;
        drop(snaps);
        let mut snaps = self.snaps.write().unwrap_or_else(|e| e.into_inner());
        if let Some(newest) = snaps.list.last_mut() {
            newest.map.apply(&update);
        }
        Ok(())
    }

    fn mark_clone_written(&self, entries: &[Entry]) -> io::Result<()> {
        let Some(clone) = &self.clone else {
            return Ok(());
        };
        let update = {
            let written = clone.written.read().unwrap_or_else(|e| e.into_inner());
            let ranges: Vec<(u64, u64)> = entries
                .iter()
                .flat_map(|e| written.missing(e.start, e.len))
                .collect();
            if ranges.is_empty() {
                return Ok(());
            }
            let update = written.prepare(&ranges);
            written.persist(&update)?;
            update
        };
        clone
            .written
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(&update);
        Ok(())
    }
}
