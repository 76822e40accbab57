//! The copy step of a checkpoint: newest logged versions of blocks into the extent.
//!
//! Given the index entries a checkpoint covers, it reads each block's newest logged version
//! from the log and writes it to its place in the extent, punching holes for trimmed and zeroed
//! ranges. It works on the two files and the entries it is handed, nothing else of the engine,
//! so the engine's checkpoint ([`crate::engine::Engine::flush_once`]) can call it without a
//! circle between the two.
//!
//! The log is read in log order, a large piece at a time (one `pread` for many records, where a
//! read per block cost one system call per 4 KiB written under random writes); within a piece
//! the blocks are written in block order, neighbouring blocks gathered into one `pwrite`.

use std::io;

use crate::index::{Entry, Loc};
use crate::storage::BlockFile;

/// Largest write the copy makes at once: neighbouring entries are gathered up to this size.
const RUN_BYTES: u64 = 1 << 20;
/// Largest piece of the log read at once.
const PIECE_BYTES: u64 = 4 << 20;
/// A gap in the log (overwritten or non-data records) larger than this between two entries
/// ends a piece: reading it would cost more than a second `pread`.
const MAX_GAP: u64 = 256 << 10;

/// Writes the newest logged version of each entry into `extent`. Entries are in block order
/// and do not overlap; trims and zeroes become hole punches (neighbouring ones merged), data is
/// read from the log in pieces of up to 4 MiB and written in runs of up to 1 MiB of
/// neighbouring blocks. `bs` is the block size, `wal_size` the size of the circular log `wal`
/// (entries name virtual log offsets). Stops at the first I/O error.
pub(crate) fn copy_to_extent(
    entries: &[Entry],
    bs: u64,
    wal: &dyn BlockFile,
    wal_size: u64,
    extent: &dyn BlockFile,
) -> io::Result<()> {
    // Holes first (the entries do not overlap, so the order between holes and data does not
    // matter), neighbouring ones as one punch.
    let mut hole: Option<(u64, u64)> = None;
    let mut logged: Vec<(u64, u64, u64)> = Vec::new();
    for e in entries {
        match e.loc {
            Loc::Zero { .. } => {
                hole = match hole {
                    Some((s, l)) if s + l == e.start => Some((s, l + e.len)),
                    Some((s, l)) => {
                        extent.punch_hole(s * bs, l * bs)?;
                        Some((e.start, e.len))
                    }
                    None => Some((e.start, e.len)),
                };
            }
            Loc::Log { virt, .. } => logged.push((virt, e.start, e.len)),
        }
    }
    if let Some((s, l)) = hole {
        extent.punch_hole(s * bs, l * bs)?;
    }
    // Data in log order, piece by piece.
    logged.sort_unstable_by_key(|&(virt, _, _)| virt);
    let mut piece: Vec<u8> = Vec::new();
    let mut run: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < logged.len() {
        let first = logged[i].0;
        // A piece never crosses the end of the log file (records do not wrap) nor a large gap.
        let limit = first + PIECE_BYTES.min(wal_size - first % wal_size);
        let mut end = first + logged[i].2 * bs;
        let mut j = i + 1;
        while j < logged.len() {
            let (virt, _, len) = logged[j];
            let e = virt + len * bs;
            if e > limit || virt > end + MAX_GAP {
                break;
            }
            end = end.max(e);
            j += 1;
        }
        piece.resize((end - first) as usize, 0);
        wal.read_at(&mut piece, first % wal_size)?;
        // This piece's entries in block order, neighbouring blocks as one write.
        let chunk = &mut logged[i..j];
        chunk.sort_unstable_by_key(|&(_, start, _)| start);
        let mut k = 0;
        while k < chunk.len() {
            let (virt, start, len) = chunk[k];
            let data = |virt: u64, len: u64| {
                let at = (virt - first) as usize;
                &piece[at..at + (len * bs) as usize]
            };
            let mut next = start + len;
            let mut m = k + 1;
            while m < chunk.len()
                && chunk[m].1 == next
                && (next - start + chunk[m].2) * bs <= RUN_BYTES
            {
                next += chunk[m].2;
                m += 1;
            }
            if m == k + 1 {
                extent.write_at(data(virt, len), start * bs)?;
            } else {
                run.clear();
                for &(v, _, l) in &chunk[k..m] {
                    run.extend_from_slice(data(v, l));
                }
                extent.write_at(&run, start * bs)?;
            }
            k = m;
        }
        i = j;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;
    use crate::storage::Storage;

    /// Entries spread over a wrapped log, out of log order, some neighbours, a gap and holes:
    /// the extent ends up with every block's logged data and zeros where trimmed.
    #[test]
    fn copies_pieces_across_the_wrap_and_gaps() {
        let bs = 512u64;
        let w = 64 * bs;
        let disk = SimStorage::new();
        let (wal, extent) = (disk.create("wal").unwrap(), disk.create("extent").unwrap());
        let mut log = vec![0u8; w as usize];
        for (i, b) in log.chunks_mut(bs as usize).enumerate() {
            b.fill(i as u8 + 1);
        }
        wal.write_at(&log, 0).unwrap();
        extent.write_at(&vec![0xee; (32 * bs) as usize], 0).unwrap();
        let at = |slot: u64| w + slot * bs; // the second lap of the log
        let entries = vec![
            Entry {
                start: 0,
                len: 2,
                loc: Loc::Log {
                    virt: at(62),
                    lsn: 1,
                },
            }, // ends at the wrap
            Entry {
                start: 2,
                len: 1,
                loc: Loc::Log {
                    virt: w * 2,
                    lsn: 2,
                },
            }, // after the wrap
            Entry {
                start: 3,
                len: 2,
                loc: Loc::Zero { lsn: 3 },
            },
            Entry {
                start: 5,
                len: 1,
                loc: Loc::Zero { lsn: 4 },
            },
            Entry {
                start: 6,
                len: 1,
                loc: Loc::Log {
                    virt: at(10),
                    lsn: 5,
                },
            },
            Entry {
                start: 7,
                len: 3,
                loc: Loc::Log {
                    virt: at(3),
                    lsn: 6,
                },
            },
            Entry {
                start: 20,
                len: 1,
                loc: Loc::Log {
                    virt: at(40),
                    lsn: 7,
                },
            },
        ];
        copy_to_extent(&entries, bs, wal.as_ref(), w, extent.as_ref()).unwrap();
        let mut got = vec![0u8; (32 * bs) as usize];
        extent.read_at(&mut got, 0).unwrap();
        let block = |b: u64| &got[(b * bs) as usize..((b + 1) * bs) as usize];
        let slot_fill = |slot: u64| slot as u8 + 1;
        let want: Vec<(u64, u8)> = vec![
            (0, slot_fill(62)),
            (1, slot_fill(63)),
            (2, slot_fill(0)),
            (3, 0),
            (4, 0),
            (5, 0),
            (6, slot_fill(10)),
            (7, slot_fill(3)),
            (8, slot_fill(4)),
            (9, slot_fill(5)),
            (10, 0xee),
            (20, slot_fill(40)),
        ];
        for (b, v) in want {
            assert!(
                block(b).iter().all(|&x| x == v),
                "block {b} should be {v:#x}"
            );
        }
    }
}
