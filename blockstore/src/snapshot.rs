//! Snapshots: what they are on disk and how their contents are read.
//!
//! A snapshot is the volume's extent as it was when the snapshot was taken: taking one first
//! checkpoints the log (so every write acknowledged before is in the extent), then from that
//! moment on the checkpoint preserves a block's old version before it overwrites the block in
//! the extent (copy-on-write at the flusher, `cow`). Each snapshot has a delta store:
//! a sparse file `snap-<id>.delta` holding preserved blocks at their own offsets, and a
//! block map `snap-<id>.map` saying which blocks it holds. Space grows with the blocks
//! changed after the snapshot, nothing else.
//!
//! Only the newest snapshot receives preserved blocks: a block overwritten for the first time
//! since the newest snapshot holds what every snapshot taken since the block last changed saw.
//! So the contents of snapshot `i` at block `b` are found in the first of the delta stores of
//! snapshots `i, i+1, ..., newest` that holds `b`, and when none does, in the extent.
//!
//! The list of snapshots is a small table (`meta-snapshots`, replaced atomically): ids, names,
//! log positions, capacities, and the next id (ids are never reused, so a replayed record of a
//! deleted snapshot is recognised as done). The operations (create, delete, rollback) and
//! their crash and replication rules are in `snapshot_ops`.

use std::sync::Arc;

use crate::blockmap::BlockMap;
use crate::error::{Error, Result};
use crate::storage::{BlockFile, Storage};

/// Name of the snapshot table.
pub(crate) const TABLE: &str = "meta-snapshots";
const MAGIC: &[u8; 4] = b"TSNP";
const VERSION: u32 = 1;

/// The delta store file of snapshot `id`.
pub(crate) fn delta_file(id: u64) -> String {
    format!("snap-{id}.delta")
}

/// The block map file of snapshot `id`.
pub(crate) fn map_file(id: u64) -> String {
    format!("snap-{id}.map")
}

/// One snapshot as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Identity, unique for the life of the volume (never reused after a delete).
    pub id: u64,
    /// The name it was given (unique among the volume's snapshots).
    pub name: String,
    /// The log position it was taken at: the primary's LSN of its snapshot record, the same on
    /// every node of a replicated volume.
    pub position: u64,
    /// Capacity of the volume when it was taken, in blocks (the snapshot's size).
    pub capacity_blocks: u64,
    /// When it was taken on this node (seconds since the Unix epoch).
    pub created_unix: u64,
    /// Clones made from it that still exist (it cannot be deleted until they are).
    pub clones: u32,
    /// Blocks held in its delta store (blocks changed since, preserved for it).
    pub delta_blocks: u64,
}

/// What the table stores about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) id: u64,
    /// The LSN of its record in this node's log: records above it are newer than it.
    pub(crate) lsn: u64,
    pub(crate) position: u64,
    pub(crate) capacity_blocks: u64,
    pub(crate) created_unix: u64,
    pub(crate) clones: u32,
    pub(crate) name: String,
}

/// The persisted table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Table {
    /// The id the next snapshot gets; ids below it were used.
    pub(crate) next_id: u64,
    /// Oldest first.
    pub(crate) entries: Vec<Entry>,
}

impl Table {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&self.next_id.to_le_bytes());
        b.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            for v in [e.id, e.lsn, e.position, e.capacity_blocks, e.created_unix] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&e.clones.to_le_bytes());
            b.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            b.extend_from_slice(e.name.as_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> std::result::Result<Table, String> {
        if b.len() < 24 {
            return Err("short table".into());
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().unwrap_or([0; 4])) {
            return Err("checksum mismatch".into());
        }
        let mut r = Cursor { b: body, at: 0 };
        if r.take(4)? != MAGIC {
            return Err("bad magic".into());
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(format!("unsupported version {version}"));
        }
        let next_id = r.u64()?;
        let count = r.u32()?;
        let mut entries = Vec::new();
        for _ in 0..count {
            let (id, lsn, position, capacity_blocks, created_unix) =
                (r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
            let clones = r.u32()?;
            let len = r.u16()? as usize;
            let name = String::from_utf8(r.take(len)?.to_vec()).map_err(|_| "name not UTF-8")?;
            entries.push(Entry {
                id,
                lsn,
                position,
                capacity_blocks,
                created_unix,
                clones,
                name,
            });
        }
        if r.at != body.len() {
            return Err("trailing bytes".into());
        }
        Ok(Table { next_id, entries })
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or_else(|| "truncated table".to_string())?;
        self.at += n;
        Ok(s)
    }
    fn u16(&mut self) -> std::result::Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().unwrap_or([0; 2]),
        ))
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
}

/// One live snapshot: its table entry and its open delta store.
pub(crate) struct Snap {
    pub(crate) entry: Entry,
    pub(crate) map: BlockMap,
    pub(crate) delta: Arc<dyn BlockFile>,
    /// Open [`crate::clone::SnapshotView`]s (clones and exports reading it).
    pub(crate) views: usize,
}

impl std::fmt::Debug for Snap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snap")
            .field("entry", &self.entry)
            .field("map", &self.map)
            .field("views", &self.views)
            .finish_non_exhaustive()
    }
}

impl Snap {
    /// Opens the delta store of a table entry.
    pub(crate) fn open(storage: &dyn Storage, entry: Entry) -> Result<Snap> {
        let delta = storage.open(&delta_file(entry.id))?;
        let map = BlockMap::load(storage.open(&map_file(entry.id))?)?;
        Ok(Snap {
            entry,
            map,
            delta,
            views: 0,
        })
    }

    /// The operator's view of it.
    pub(crate) fn info(&self) -> SnapshotInfo {
        SnapshotInfo {
            id: self.entry.id,
            name: self.entry.name.clone(),
            position: self.entry.position,
            capacity_blocks: self.entry.capacity_blocks,
            created_unix: self.entry.created_unix,
            clones: self.entry.clones,
            delta_blocks: self.map.count(),
        }
    }
}

/// The engine's snapshots, oldest first, with the table they were loaded from.
#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    pub(crate) next_id: u64,
    pub(crate) list: Vec<Snap>,
}

impl Snapshots {
    /// Loads the table and opens every snapshot's delta store.
    pub(crate) fn load(storage: &dyn Storage) -> Result<Snapshots> {
        let Some(bytes) = storage.read_all(TABLE)? else {
            return Ok(Snapshots {
                next_id: 1,
                list: Vec::new(),
            });
        };
        let table = Table::decode(&bytes).map_err(|reason| Error::CorruptSuperblock {
            path: storage.describe(TABLE),
            reason,
        })?;
        let list = table
            .entries
            .into_iter()
            .map(|e| Snap::open(storage, e))
            .collect::<Result<Vec<_>>>()?;
        Ok(Snapshots {
            next_id: table.next_id.max(1),
            list,
        })
    }

    /// The table as it stands in memory.
    pub(crate) fn table(&self) -> Table {
        Table {
            next_id: self.next_id,
            entries: self.list.iter().map(|s| s.entry.clone()).collect(),
        }
    }

    /// Position of snapshot `id` in the list.
    pub(crate) fn find(&self, id: u64) -> Result<usize> {
        self.list
            .iter()
            .position(|s| s.entry.id == id)
            .ok_or_else(|| Error::NotFound(format!("no snapshot with id {id}")))
    }

    /// The source of block `lba` of snapshot `i`: the index of the first delta store from
    /// `i` on that holds it, or `None` for the base image.
    pub(crate) fn source(&self, i: usize, lba: u64) -> Option<usize> {
        (i..self.list.len()).find(|&j| self.list[j].map.get(lba))
    }

    /// The blocks changed since snapshot `i` was taken and checkpointed since (those some
    /// delta store from `i` on holds), as merged ranges in block order.
    pub(crate) fn changed_ranges(&self, i: usize) -> Vec<(u64, u64)> {
        let mut all: Vec<(u64, u64)> = self.list[i..].iter().flat_map(|s| s.map.ranges()).collect();
        all.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (s, l) in all {
            match out.last_mut() {
                Some((os, ol)) if *os + *ol >= s => *ol = (*ol).max(s + l - *os),
                _ => out.push((s, l)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn table_round_trips(next_id: u64, entries in proptest::collection::vec(
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>(),
             "[a-z0-9-]{0,40}"), 0..5)) {
            let t = Table {
                next_id,
                entries: entries.into_iter().map(|(id, lsn, position, capacity_blocks,
                    created_unix, clones, name)| Entry { id, lsn, position, capacity_blocks,
                    created_unix, clones, name }).collect(),
            };
            let b = t.encode();
            prop_assert_eq!(Table::decode(&b).unwrap(), t);
            let mut bad = b.clone();
            let i = (next_id as usize) % bad.len();
            bad[i] ^= 0x40;
            prop_assert!(Table::decode(&bad).is_err());
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Table::decode(&b);
        }
    }
}
