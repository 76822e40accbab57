//! A persistent set of blocks: one bit per block in a file of its own.
//!
//! Snapshots use it to record which blocks their delta store holds (the old version of a block
//! preserved before the extent was overwritten), clones to record which blocks they wrote
//! themselves (the rest read from the origin snapshot). Bits are only ever set, and a bit is
//! set on disk only after what it stands for is durable, so a bit that is lost in a crash costs
//! nothing but doing the work again, and a set bit is always true.
//!
//! Updates are whole 512-byte sectors of the file followed by one `fdatasync`; the simulated
//! disk tears writes at that granularity, so any subset of the sectors of one update may
//! survive a crash, each with all of its new bits or none.

use std::io;
use std::sync::Arc;

use crate::storage::BlockFile;

/// Bytes of the file written together (the tear granularity of a disk).
const SECTOR: u64 = 512;
/// Bits in one sector.
const SECTOR_BITS: u64 = SECTOR * 8;

/// The bits of one map, in memory and in its file.
pub(crate) struct BlockMap {
    file: Arc<dyn BlockFile>,
    words: Vec<u64>,
}

impl std::fmt::Debug for BlockMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockMap")
            .field("words", &self.words.len())
            .finish()
    }
}

/// A set of block ranges about to be added to a map: the file sectors that change, with
/// their new contents. Built without changing the map ([`BlockMap::prepare`]), written and
/// synced by [`BlockMap::persist`], and only then applied in memory ([`BlockMap::apply`]).
#[derive(Debug, Default)]
pub(crate) struct MapUpdate {
    ranges: Vec<(u64, u64)>,
    sectors: Vec<(u64, Vec<u8>)>,
}

impl BlockMap {
    /// Loads a map from its file (an empty or short file holds no bits).
    pub(crate) fn load(file: Arc<dyn BlockFile>) -> io::Result<BlockMap> {
        let len = file.size()?;
        let mut bytes = vec![0u8; len as usize];
        file.read_at(&mut bytes, 0)?;
        let words = bytes
            .chunks(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect();
        Ok(BlockMap { file, words })
    }

    /// Whether block `lba` is in the set.
    pub(crate) fn get(&self, lba: u64) -> bool {
        let w = (lba / 64) as usize;
        self.words.get(w).is_some_and(|w| w >> (lba % 64) & 1 == 1)
    }

    /// Whether `lba` is in the set, and for how many blocks from `lba` (at most `max`, at
    /// least 1) that stays so.
    pub(crate) fn run(&self, lba: u64, max: u64) -> (bool, u64) {
        let first = self.get(lba);
        let mut n = 1;
        while n < max && self.get(lba + n) == first {
            n += 1;
        }
        (first, n)
    }

    /// The parts of `[lba, lba+len)` not in the set, as ranges.
    pub(crate) fn missing(&self, lba: u64, len: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = lba;
        let end = lba + len;
        while at < end {
            let (set, n) = self.run(at, end - at);
            if !set {
                out.push((at, n));
            }
            at += n;
        }
        out
    }

    /// The sectors that change when `ranges` are added, with their new contents.
    pub(crate) fn prepare(&self, ranges: &[(u64, u64)]) -> MapUpdate {
        let mut words = self.words.clone();
        let mut dirty = std::collections::BTreeSet::new();
        for &(start, len) in ranges {
            for b in start..start + len {
                let w = (b / 64) as usize;
                if words.len() <= w {
                    words.resize(w + 1, 0);
                }
                words[w] |= 1 << (b % 64);
                dirty.insert(b / SECTOR_BITS);
            }
        }
        let sectors = dirty
            .into_iter()
            .map(|s| {
                let mut buf = vec![0u8; SECTOR as usize];
                let first = (s * SECTOR / 8) as usize;
                for (i, chunk) in buf.chunks_mut(8).enumerate() {
                    let w = words.get(first + i).copied().unwrap_or(0);
                    chunk.copy_from_slice(&w.to_le_bytes());
                }
                (s * SECTOR, buf)
            })
            .collect();
        MapUpdate {
            ranges: ranges.to_vec(),
            sectors,
        }
    }

    /// Writes an update's sectors and syncs the file. The in-memory set is unchanged.
    pub(crate) fn persist(&self, update: &MapUpdate) -> io::Result<()> {
        if update.sectors.is_empty() {
            return Ok(());
        }
        for (off, buf) in &update.sectors {
            self.file.write_at(buf, *off)?;
        }
        self.file.sync_data()
    }

    /// Adds an update's ranges to the in-memory set (after [`BlockMap::persist`]).
    pub(crate) fn apply(&mut self, update: &MapUpdate) {
        for &(start, len) in &update.ranges {
            for b in start..start + len {
                let w = (b / 64) as usize;
                if self.words.len() <= w {
                    self.words.resize(w + 1, 0);
                }
                self.words[w] |= 1 << (b % 64);
            }
        }
    }

    /// Every range in the set, in block order.
    pub(crate) fn ranges(&self) -> Vec<(u64, u64)> {
        let bits = self.words.len() as u64 * 64;
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (wi, &w) in self.words.iter().enumerate() {
            if w == 0 {
                continue;
            }
            for i in 0..64 {
                if w >> i & 1 == 1 {
                    let b = wi as u64 * 64 + i;
                    match out.last_mut() {
                        Some((s, l)) if *s + *l == b => *l += 1,
                        _ => out.push((b, 1)),
                    }
                }
            }
        }
        debug_assert!(out.iter().all(|(s, l)| s + l <= bits));
        out
    }

    /// Number of blocks in the set.
    pub(crate) fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimRng, SimStorage};
    use crate::storage::Storage;

    #[test]
    fn persisted_bits_survive_and_unpersisted_ones_do_not_appear() {
        let disk = SimStorage::new();
        let f = disk.create("m").unwrap();
        let mut m = BlockMap::load(f.clone()).unwrap();
        let u = m.prepare(&[(3, 5), (5000, 2)]);
        m.persist(&u).unwrap();
        m.apply(&u);
        assert!(m.get(3) && m.get(7) && !m.get(8) && m.get(5001));
        assert_eq!(m.missing(0, 10), vec![(0, 3), (8, 2)]);
        assert_eq!(m.ranges(), vec![(3, 5), (5000, 2)]);
        assert_eq!(m.count(), 7);
        // Prepared and written but not synced: after a crash each sector has all or none.
        let u2 = m.prepare(&[(100, 1)]);
        for (off, buf) in &u2.sectors {
            f.write_at(buf, *off).unwrap();
        }
        let after = disk.crash(&mut SimRng::new(9));
        let back = BlockMap::load(after.open("m").unwrap()).unwrap();
        assert!(back.get(3) && back.get(5001));
        assert_eq!(back.count(), 7 + u64::from(back.get(100)));
    }
}
