//! The in-memory index of blocks whose newest version is still in the log.
//!
//! An interval map from block ranges to where their data is: in the log (at a virtual log offset)
//! or zeros (trimmed / written as zeros). Ranges never overlap; a newer insert splits or replaces
//! what it covers, so a trim of a whole volume is one entry, not one per block.

use std::collections::BTreeMap;

/// Where the newest version of a block range lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    /// In the log: the range's first block is at this virtual log offset, the rest follow.
    Log {
        /// Virtual log offset of the first block's data.
        virt: u64,
        /// LSN of the record.
        lsn: u64,
    },
    /// Zeros (trim or write-zeroes record).
    Zero {
        /// LSN of the record.
        lsn: u64,
    },
}

impl Loc {
    /// The LSN of the record this range came from.
    pub fn lsn(&self) -> u64 {
        match *self {
            Loc::Log { lsn, .. } | Loc::Zero { lsn } => lsn,
        }
    }

    /// The location of the block `delta` blocks further into the same record.
    fn advance(self, delta: u64, block_size: u64) -> Loc {
        match self {
            Loc::Log { virt, lsn } => Loc::Log {
                virt: virt + delta * block_size,
                lsn,
            },
            z => z,
        }
    }
}

/// One index entry: `len` blocks from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// First block.
    pub start: u64,
    /// Number of blocks.
    pub len: u64,
    /// Where they are.
    pub loc: Loc,
}

/// The interval map.
#[derive(Debug, Default)]
pub struct Index {
    map: BTreeMap<u64, (u64, Loc)>,
    block_size: u64,
    blocks: u64,
}

impl Index {
    /// An empty index for a volume of the given block size.
    pub fn new(block_size: u32) -> Self {
        Index {
            map: BTreeMap::new(),
            block_size: u64::from(block_size),
            blocks: 0,
        }
    }

    /// Total blocks covered by entries.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Number of entries.
    pub fn entries(&self) -> usize {
        self.map.len()
    }

    /// Removes whatever covers `[start, start+len)`, keeping the parts outside it.
    fn cut(&mut self, start: u64, len: u64) {
        let end = start + len;
        // The entry that begins before `start` may reach into the range.
        if let Some((&s, &(l, loc))) = self.map.range(..start).next_back() {
            if s + l > start {
                self.map.insert(s, (start - s, loc));
                self.blocks -= s + l - start;
                if s + l > end {
                    let tail = loc.advance(end - s, self.block_size);
                    self.map.insert(end, (s + l - end, tail));
                    self.blocks += s + l - end;
                }
            }
        }
        let inside: Vec<u64> = self.map.range(start..end).map(|(&s, _)| s).collect();
        for s in inside {
            let Some((l, loc)) = self.map.remove(&s) else {
                continue;
            };
            self.blocks -= l;
            if s + l > end {
                let tail = loc.advance(end - s, self.block_size);
                self.map.insert(end, (s + l - end, tail));
                self.blocks += s + l - end;
            }
        }
    }

    /// Records that `[start, start+len)` now lives at `loc`.
    pub fn insert(&mut self, start: u64, len: u64, loc: Loc) {
        if len == 0 {
            return;
        }
        self.cut(start, len);
        self.map.insert(start, (len, loc));
        self.blocks += len;
    }

    /// The pieces of `[start, start+len)` in order: `Some(loc)` where the index has the newest
    /// version, `None` where the extent does.
    pub fn lookup(&self, start: u64, len: u64) -> Vec<(u64, u64, Option<Loc>)> {
        let end = start + len;
        let mut out = Vec::new();
        let mut pos = start;
        let first = self
            .map
            .range(..=start)
            .next_back()
            .filter(|(&s, &(l, _))| s + l > start)
            .map(|(&s, &v)| (s, v));
        let rest = self.map.range(start + 1..end).map(|(&s, &v)| (s, v));
        for (s, (l, loc)) in first.into_iter().chain(rest) {
            if s > pos {
                out.push((pos, s - pos, None));
                pos = s;
            }
            let piece_end = (s + l).min(end);
            let loc = loc.advance(pos - s, self.block_size);
            out.push((pos, piece_end - pos, Some(loc)));
            pos = piece_end;
        }
        if pos < end {
            out.push((pos, end - pos, None));
        }
        out
    }

    /// Every entry whose record has an LSN below `lsn`, in block order.
    pub fn below(&self, lsn: u64) -> Vec<Entry> {
        self.map
            .iter()
            .filter(|(_, (_, loc))| loc.lsn() < lsn)
            .map(|(&start, &(len, loc))| Entry { start, len, loc })
            .collect()
    }

    /// Drops every entry whose record has an LSN below `lsn` (they are in the extent now).
    pub fn remove_below(&mut self, lsn: u64) {
        let mut freed = 0;
        self.map.retain(|_, (len, loc)| {
            let keep = loc.lsn() >= lsn;
            if !keep {
                freed += *len;
            }
            keep
        });
        self.blocks -= freed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Per-block model: the (lsn, virt-of-this-block or zero) of the newest write.
    fn model_apply(model: &mut [Option<Loc>], start: u64, len: u64, loc: Loc, bs: u64) {
        for i in 0..len {
            model[(start + i) as usize] = Some(loc.advance(i, bs));
        }
    }

    proptest! {
        #[test]
        fn matches_a_per_block_model(ops in proptest::collection::vec(
            (0u64..60, 1u64..20, any::<bool>(), 0u8..10), 1..60)) {
            let bs = 512;
            let mut idx = Index::new(bs as u32);
            let mut model = vec![None; 80];
            for (lsn, (start, len, zero, action)) in ops.into_iter().enumerate() {
                let lsn = lsn as u64;
                if action == 0 {
                    idx.remove_below(lsn / 2);
                    for m in model.iter_mut() {
                        if m.is_some_and(|l: Loc| l.lsn() < lsn / 2) {
                            *m = None;
                        }
                    }
                    continue;
                }
                let loc = if zero { Loc::Zero { lsn } } else { Loc::Log { virt: lsn * 100_000, lsn } };
                idx.insert(start, len, loc);
                model_apply(&mut model, start, len, loc, bs);
                let covered = model.iter().filter(|m| m.is_some()).count() as u64;
                prop_assert_eq!(idx.blocks(), covered);
            }
            // Every lookup agrees with the model block by block.
            for s in 0..80u64 {
                for (ps, pl, loc) in idx.lookup(s, 80 - s) {
                    for i in 0..pl {
                        let want = model[(ps + i) as usize];
                        let got = loc.map(|l| l.advance(i, bs));
                        prop_assert_eq!(got, want);
                    }
                }
            }
        }
    }

    #[test]
    fn lookup_pieces_cover_the_range_in_order() {
        let mut idx = Index::new(4096);
        idx.insert(10, 10, Loc::Log { virt: 0, lsn: 1 });
        idx.insert(12, 2, Loc::Zero { lsn: 2 });
        let p = idx.lookup(5, 20);
        let starts: Vec<_> = p.iter().map(|x| (x.0, x.1)).collect();
        assert_eq!(starts, vec![(5, 5), (10, 2), (12, 2), (14, 6), (20, 5)]);
        assert_eq!(
            p[3].2,
            Some(Loc::Log {
                virt: 4 * 4096,
                lsn: 1
            })
        );
        assert_eq!(idx.entries(), 3);
    }
}
