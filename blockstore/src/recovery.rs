//! Crash recovery: finding the end of the log from the log itself.
//!
//! The scan starts at the checkpoint the superblock names and follows records while each one has
//! the right magic, generation, the next LSN in sequence and a valid CRC. The first record that
//! fails ends the log. Whether that end is a torn tail (writes that were never acknowledged as
//! durable: discard and open) or damage in the middle (refuse to open) is decided by the later
//! records: if any valid record of this generation with a higher LSN states that the failed LSN
//! was already durable when it was written, acknowledged data would be lost.
//!
//! On a standby the scan also finds how far the recovered log follows the primary's log: the
//! highest origin (the primary's LSN, see [`crate::record`]) among the records from the point
//! where that position was last set ([`Scan::max_origin`]). With the position the last
//! checkpoint stored, that is the applied position the standby announces again: exactly what
//! its log holds, never the older position of its last checkpoint.

use crate::error::{Error, Result};
use crate::index::{Index, Loc};
use crate::record::{record_len, Header, Kind, ALIGN, HEADER_LEN};
use crate::storage::BlockFile;
use crate::superblock::Superblock;

/// The longest snapshot name a record carries, in bytes.
pub const MAX_SNAPSHOT_NAME: usize = 255;

/// A snapshot operation found in the replayed log, which open completes if the crash came
/// before it was done ([`crate::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapOp {
    /// A snapshot record: every record before it is in the snapshot.
    Create {
        /// Its LSN in this log.
        lsn: u64,
        /// The primary's LSN (the same as `lsn` on the node that took it).
        position: u64,
        /// The snapshot's id.
        id: u64,
        /// Its name.
        name: String,
    },
    /// A snapshot delete record.
    Delete {
        /// The snapshot's id.
        id: u64,
    },
}

/// What the scan found.
#[derive(Debug)]
pub struct Scan {
    /// Blocks whose newest version is in the log.
    pub index: Index,
    /// LSN the next record gets.
    pub next_lsn: u64,
    /// Virtual offset where the next record goes.
    pub head_virt: u64,
    /// Records replayed.
    pub records: u64,
    /// Why the log ended, when it ended at something that looked like a record but was damaged
    /// (a torn tail: writes never acknowledged as durable, cut off); `None` at a clean end.
    pub torn_tail: Option<String>,
    /// The highest origin (the primary's LSN) among the replayed records whose LSN is at
    /// least the `origin_from` given to [`scan`]; 0 when there is none.
    pub max_origin: u64,
    /// The snapshot operations of the replayed records, in log order.
    pub snap_ops: Vec<SnapOp>,
    /// The capacity in blocks after the replayed grow records (the superblock's when there
    /// is none): open completes a grow whose record survived but whose superblock update did
    /// not.
    pub capacity_blocks: u64,
}

/// Replays the log from the superblock's checkpoint. Origins of records with an LSN below
/// `origin_from` belong to an older position (another primary's log) and are not counted.
pub fn scan(wal: &dyn BlockFile, sb: &Superblock, max_data: u64, origin_from: u64) -> Result<Scan> {
    let w = sb.wal_size;
    let bs = u64::from(sb.block_size);
    let mut index = Index::new(sb.block_size);
    let mut pos = sb.checkpoint_virt;
    let mut expect = sb.checkpoint_lsn;
    let mut records = 0;
    let mut max_origin = 0u64;
    let mut snap_ops = Vec::new();
    // Records after a grow record may reach up to its new end.
    let mut capacity = sb.capacity_blocks;
    let mut hdr_buf = [0u8; HEADER_LEN];
    let mut data = Vec::new();
    // Set when the end is a damaged record rather than the clean end of the log.
    let mut torn = false;
    let end_reason = loop {
        if pos - sb.checkpoint_virt >= w {
            break "log full lap".to_string();
        }
        let phys = pos % w;
        wal.read_at(&mut hdr_buf, phys)?;
        let Some((hdr, crc)) = Header::parse(&hdr_buf, max_data) else {
            break "no valid header".to_string();
        };
        if hdr.generation != sb.generation || hdr.lsn != expect {
            break format!("generation {} lsn {}", hdr.generation, hdr.lsn);
        }
        torn = true;
        let rlen = record_len(hdr.data_len as usize);
        if phys + rlen > w {
            break "record crosses the end of the log".to_string();
        }
        data.resize(hdr.data_len as usize, 0);
        wal.read_at(&mut data, phys + HEADER_LEN as u64)?;
        if !hdr.check(crc, &data) {
            break "checksum mismatch".to_string();
        }
        let in_range = hdr
            .lba
            .checked_add(u64::from(hdr.blocks))
            .is_some_and(|e| e <= capacity);
        let lsn = hdr.lsn;
        match hdr.kind {
            Kind::Wrap => {
                pos = (pos / w + 1) * w;
                expect += 1;
                records += 1;
                continue;
            }
            Kind::Write => {
                if !in_range || u64::from(hdr.data_len) != u64::from(hdr.blocks) * bs {
                    break "write record with bad geometry".to_string();
                }
                let virt = pos + HEADER_LEN as u64;
                index.insert(hdr.lba, u64::from(hdr.blocks), Loc::Log { virt, lsn });
            }
            Kind::Trim | Kind::Zero => {
                if !in_range || hdr.data_len != 0 {
                    break "trim record with bad geometry".to_string();
                }
                index.insert(hdr.lba, u64::from(hdr.blocks), Loc::Zero { lsn });
            }
            Kind::Snapshot => {
                if hdr.blocks != 0 || data.len() > MAX_SNAPSHOT_NAME {
                    break "snapshot record with bad geometry".to_string();
                }
                snap_ops.push(SnapOp::Create {
                    lsn,
                    position: if hdr.origin == 0 { lsn } else { hdr.origin },
                    id: hdr.lba,
                    name: String::from_utf8_lossy(&data).into_owned(),
                });
            }
            Kind::SnapshotDelete => {
                if hdr.blocks != 0 || hdr.data_len != 0 {
                    break "snapshot delete record with bad geometry".to_string();
                }
                snap_ops.push(SnapOp::Delete { id: hdr.lba });
            }
            Kind::Grow => {
                if hdr.blocks != 0 || hdr.data_len != 0 || hdr.lba.checked_mul(bs).is_none() {
                    break "grow record with bad geometry".to_string();
                }
                // A grow to less than the size already reached changes nothing (a standby
                // that took the primary's size from its Hello before the record came).
                capacity = capacity.max(hdr.lba);
            }
        }
        if lsn >= origin_from {
            max_origin = max_origin.max(hdr.origin);
        }
        pos += rlen;
        expect += 1;
        records += 1;
        torn = false;
    };
    check_no_durable_records_after(wal, sb, expect, pos, max_data, &end_reason)?;
    Ok(Scan {
        index,
        next_lsn: expect,
        head_virt: pos,
        records,
        torn_tail: torn.then(|| format!("LSN {expect} at log offset {}: {end_reason}", pos % w)),
        max_origin,
        snap_ops,
        capacity_blocks: capacity,
    })
}

/// Fails with [`Error::CorruptLog`] when a valid later record proves `lsn` had been durable.
fn check_no_durable_records_after(
    wal: &dyn BlockFile,
    sb: &Superblock,
    lsn: u64,
    end_virt: u64,
    max_data: u64,
    reason: &str,
) -> Result<()> {
    let w = sb.wal_size;
    let mut log = vec![0u8; w as usize];
    wal.read_at(&mut log, 0)?;
    let mut off = 0u64;
    while off + HEADER_LEN as u64 <= w {
        let o = off as usize;
        if let Some((hdr, crc)) = Header::parse(&log[o..o + HEADER_LEN], max_data) {
            let data_end = o + HEADER_LEN + hdr.data_len as usize;
            if hdr.generation == sb.generation
                && hdr.lsn > lsn
                && hdr.synced_lsn > lsn
                && data_end <= log.len()
                && hdr.check(crc, &log[o + HEADER_LEN..data_end])
            {
                return Err(Error::CorruptLog {
                    lsn,
                    offset: end_virt % w,
                    reason: format!(
                        "{reason}; record LSN {} at offset {off} shows LSN {lsn} was durable",
                        hdr.lsn
                    ),
                });
            }
        }
        off += ALIGN;
    }
    Ok(())
}
