//! The copy step of a checkpoint: newest logged versions of blocks into the extent.
//!
//! Given the index entries a checkpoint covers, it reads each block's newest logged version
//! from the log and writes it to its place in the extent, punching holes for trimmed and zeroed
//! ranges. It works on the two files and the entries it is handed, nothing else of the engine,
//! so the engine's checkpoint ([`crate::engine::Engine::flush_once`]) can call it without a
//! circle between the two.

use std::io;

use crate::index::{Entry, Loc};
use crate::storage::BlockFile;

/// Largest write the copy makes at once: neighbouring entries are gathered up to this size.
const RUN_BYTES: u64 = 1 << 20;

/// Writes the newest logged version of each entry into `extent`. Entries are in block order;
/// neighbouring ones are gathered into one buffer (up to 1 MiB) and written with one call, and
/// neighbouring trims become one hole punch. `bs` is the block size, `wal_size` the size of the
/// circular log `wal` (entries name virtual log offsets). Stops at the first I/O error.
pub(crate) fn copy_to_extent(
    entries: &[Entry],
    bs: u64,
    wal: &dyn BlockFile,
    wal_size: u64,
    extent: &dyn BlockFile,
) -> io::Result<()> {
    let mut run: Vec<u8> = Vec::with_capacity(RUN_BYTES as usize);
    let mut run_start = 0u64;
    let mut hole: Option<(u64, u64)> = None;
    let flush_run = |run: &mut Vec<u8>, start: u64| -> io::Result<()> {
        if !run.is_empty() {
            extent.write_at(run, start * bs)?;
            run.clear();
        }
        Ok(())
    };
    let flush_hole = |hole: &mut Option<(u64, u64)>| -> io::Result<()> {
        if let Some((start, len)) = hole.take() {
            extent.punch_hole(start * bs, len * bs)?;
        }
        Ok(())
    };
    for e in entries {
        match e.loc {
            Loc::Zero { .. } => {
                flush_run(&mut run, run_start)?;
                hole = match hole {
                    Some((s, l)) if s + l == e.start => Some((s, l + e.len)),
                    other => {
                        let mut h = other;
                        flush_hole(&mut h)?;
                        Some((e.start, e.len))
                    }
                };
            }
            Loc::Log { virt, .. } => {
                flush_hole(&mut hole)?;
                let run_blocks = run.len() as u64 / bs;
                let len = (e.len * bs) as usize;
                if run.is_empty()
                    || run_start + run_blocks != e.start
                    || run.len() as u64 + e.len * bs > RUN_BYTES
                {
                    flush_run(&mut run, run_start)?;
                    run_start = e.start;
                }
                let at = run.len();
                run.resize(at + len, 0);
                wal.read_at(&mut run[at..], virt % wal_size)?;
            }
        }
    }
    flush_run(&mut run, run_start)?;
    flush_hole(&mut hole)?;
    Ok(())
}
