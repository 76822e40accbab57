//! Media-access commands (SBC-3): READ/WRITE 6/10/12/16, VERIFY, SYNCHRONIZE CACHE,
//! WRITE SAME, UNMAP, COMPARE AND WRITE and GET LBA STATUS, turned into [`BlockOp`]s.

use bytes::Bytes;

use super::alua::Alua;
use super::capacity::lba_status_data;
use super::cdb::{self, be16, be32, be64, Cdb};
use super::config::LuConfig;
use super::sense::{
    Sense, SenseKey, ASC_SPACE_ALLOCATION_FAILED, ASC_UNRECOVERED_READ_ERROR, ASC_WRITE_ERROR,
};
use super::task::{BlockOp, BlockResult, Completion, PendingTask, Step, TaskKind};

/// Fails with LBA OUT OF RANGE unless `[lba, lba + blocks)` lies within `capacity` blocks.
pub fn check_range(lba: u64, blocks: u64, capacity: u64) -> Result<(), Sense> {
    match lba.checked_add(blocks) {
        Some(end) if lba <= capacity && end <= capacity => Ok(()),
        _ => Err(Sense::lba_out_of_range()),
    }
}

/// LBA, transfer length and byte offset of the transfer length field for a READ/WRITE CDB.
fn rw_fields(c: &Cdb<'_>) -> (u64, u32, u16) {
    match c.opcode() {
        cdb::READ_6 | cdb::WRITE_6 => {
            let lba = u64::from(c.u32(0) & 0x001F_FFFF);
            let n = match c.u8(4) {
                0 => 256,
                n => u32::from(n),
            };
            (lba, n, 4)
        }
        cdb::READ_10 | cdb::WRITE_10 | cdb::VERIFY_10 | cdb::SYNC_CACHE_10 | cdb::WRITE_SAME_10 => {
            (u64::from(c.u32(2)), u32::from(c.u16(7)), 7)
        }
        cdb::READ_12 | cdb::WRITE_12 | cdb::VERIFY_12 => (u64::from(c.u32(2)), c.u32(6), 6),
        _ => (c.u64(2), c.u32(10), 10),
    }
}

/// Whether the opcode is one this module handles.
pub fn is_media_command(c: &Cdb<'_>) -> bool {
    use cdb::*;
    match c.opcode() {
        READ_6 | READ_10 | READ_12 | READ_16 | WRITE_6 | WRITE_10 | WRITE_12 | WRITE_16
        | VERIFY_10 | VERIFY_12 | VERIFY_16 | SYNC_CACHE_10 | SYNC_CACHE_16 | WRITE_SAME_10
        | WRITE_SAME_16 | UNMAP | COMPARE_AND_WRITE => true,
        SERVICE_ACTION_IN_16 => c.service_action() == SAI_GET_LBA_STATUS,
        _ => false,
    }
}

fn task(nexus: u64, kind: TaskKind) -> PendingTask {
    PendingTask { nexus, kind }
}

/// Whether `c` changes the medium (refused on a write-protected unit): WRITE, WRITE SAME,
/// UNMAP and COMPARE AND WRITE.
pub fn changes_medium(c: &Cdb<'_>) -> bool {
    use cdb::*;
    matches!(
        c.opcode(),
        WRITE_6
            | WRITE_10
            | WRITE_12
            | WRITE_16
            | WRITE_SAME_10
            | WRITE_SAME_16
            | UNMAP
            | COMPARE_AND_WRITE
    )
}

/// Bytes a WRITE(6/10/12/16) CDB transfers from the initiator, for residual counts; `None` for
/// other commands.
pub fn write_transfer_bytes(cdb: &[u8], block_size: u32) -> Option<u64> {
    use cdb::*;
    let c = Cdb::parse(cdb).ok()?;
    match c.opcode() {
        WRITE_6 | WRITE_10 | WRITE_12 | WRITE_16 => {
            let (_, blocks, _) = rw_fields(&c);
            Some(u64::from(blocks) * u64::from(block_size))
        }
        _ => None,
    }
}

/// Starts a media-access command.
pub(crate) fn start(
    c: &Cdb<'_>,
    cfg: &LuConfig,
    capacity: u64,
    nexus: u64,
    data_out_len: u32,
) -> Result<Step, Sense> {
    use cdb::*;
    let bs = cfg.block_size;
    let op = c.opcode();
    let (lba, blocks, len_off) = rw_fields(c);
    let protect = c.u8(1) >> 5;
    let need_data = |bytes: u64| -> Result<u32, Sense> {
        let n = u32::try_from(bytes).map_err(|_| Sense::invalid_cdb(len_off, None))?;
        if data_out_len < n {
            return Err(Sense::invalid_cdb(len_off, None));
        }
        Ok(n)
    };
    match op {
        READ_6 | READ_10 | READ_12 | READ_16 | WRITE_6 | WRITE_10 | WRITE_12 | WRITE_16 => {
            let six = op == READ_6 || op == WRITE_6;
            if !six && protect != 0 {
                return Err(Sense::invalid_cdb(1, Some(7)));
            }
            check_range(lba, u64::from(blocks), capacity)?;
            if blocks == 0 {
                return Ok(Step::Done(Completion::good()));
            }
            if blocks > cfg.max_transfer_blocks {
                return Err(Sense::invalid_cdb(len_off, None));
            }
            if matches!(op, READ_6 | READ_10 | READ_12 | READ_16) {
                return Ok(Step::Io {
                    op: BlockOp::Read { lba, blocks },
                    task: task(nexus, TaskKind::Read),
                });
            }
            let fua = !six && c.bit(1, 3);
            // An iSCSI ExpectedDataTransferLength shorter than the CDB's transfer length
            // writes only the whole blocks that arrive (the transport reports the rest as
            // residual overflow), as Linux LIO and the libiscsi conformance suite expect.
            let blocks = blocks.min(data_out_len / bs.max(1));
            if blocks == 0 {
                return Ok(Step::Done(Completion::good()));
            }
            let len = need_data(u64::from(blocks) * u64::from(bs))?;
            Ok(Step::NeedDataOut {
                len,
                task: task(nexus, TaskKind::WriteData { lba, fua }),
            })
        }
        VERIFY_10 | VERIFY_12 | VERIFY_16 => {
            if protect != 0 {
                return Err(Sense::invalid_cdb(1, Some(7)));
            }
            let bytchk = (c.u8(1) >> 1) & 0x03;
            if bytchk == 2 {
                return Err(Sense::invalid_cdb(1, Some(2)));
            }
            check_range(lba, u64::from(blocks), capacity)?;
            if blocks > cfg.max_transfer_blocks {
                return Err(Sense::invalid_cdb(len_off, None));
            }
            if blocks == 0 || bytchk == 0 {
                // Nothing to compare; a virtual volume has no medium to re-verify.
                return Ok(Step::Done(Completion::good()));
            }
            let repeat = bytchk == 3;
            let bytes = if repeat {
                u64::from(bs)
            } else {
                u64::from(blocks) * u64::from(bs)
            };
            Ok(Step::NeedDataOut {
                len: need_data(bytes)?,
                task: task(
                    nexus,
                    TaskKind::VerifyData {
                        lba,
                        blocks,
                        repeat,
                    },
                ),
            })
        }
        SYNC_CACHE_10 | SYNC_CACHE_16 => {
            check_range(lba, u64::from(blocks), capacity)?;
            Ok(Step::Io {
                op: BlockOp::Flush,
                task: task(nexus, TaskKind::Write),
            })
        }
        WRITE_SAME_10 | WRITE_SAME_16 => {
            if protect != 0 {
                return Err(Sense::invalid_cdb(1, Some(7)));
            }
            if c.bit(1, 4) {
                return Err(Sense::invalid_cdb(1, Some(4))); // ANCHOR: not supported
            }
            let unmap = c.bit(1, 3);
            let ndob = op == WRITE_SAME_16 && c.bit(1, 0);
            check_range(lba, u64::from(blocks), capacity)?;
            if blocks == 0 || blocks > cfg.max_write_same_blocks {
                // WSNZ=1: zero blocks is not supported.
                return Err(Sense::invalid_cdb(len_off, None));
            }
            if ndob {
                return Ok(Step::Io {
                    op: BlockOp::WriteZeroes {
                        lba,
                        blocks,
                        deallocate: unmap,
                        fua: false,
                    },
                    task: task(nexus, TaskKind::Write),
                });
            }
            Ok(Step::NeedDataOut {
                len: need_data(u64::from(bs))?,
                task: task(nexus, TaskKind::WriteSameData { lba, blocks, unmap }),
            })
        }
        UNMAP => {
            if c.bit(1, 0) {
                return Err(Sense::invalid_cdb(1, Some(0))); // ANCHOR
            }
            let len = u32::from(c.u16(7));
            if len == 0 {
                return Ok(Step::Done(Completion::good()));
            }
            let len = len.min(data_out_len);
            if len < 8 {
                return Err(Sense::param_list_length());
            }
            Ok(Step::NeedDataOut {
                len,
                task: task(nexus, TaskKind::UnmapData),
            })
        }
        COMPARE_AND_WRITE => {
            if protect != 0 {
                return Err(Sense::invalid_cdb(1, Some(7)));
            }
            let blocks = u32::from(c.u8(13));
            if blocks > u32::from(cfg.max_compare_write_blocks) {
                return Err(Sense::invalid_cdb(13, None));
            }
            check_range(lba, u64::from(blocks), capacity)?;
            if blocks == 0 {
                // Zero blocks transfer nothing; data-out sent anyway means the initiator meant
                // a length the one-byte field cannot hold (256 wraps to 0).
                if data_out_len != 0 {
                    return Err(Sense::invalid_cdb(13, None));
                }
                return Ok(Step::Done(Completion::good()));
            }
            let len = need_data(2 * u64::from(blocks) * u64::from(bs))?;
            // FUA (byte 1 bit 3): the write half must be durable before GOOD.
            let fua = c.bit(1, 3);
            Ok(Step::NeedDataOut {
                len,
                task: task(nexus, TaskKind::CawData { lba, blocks, fua }),
            })
        }
        SERVICE_ACTION_IN_16 => {
            let lba = c.u64(2);
            let alloc = c.u32(10);
            if lba >= capacity {
                return Err(Sense::lba_out_of_range());
            }
            if alloc == 0 {
                return Ok(Step::Done(Completion::good()));
            }
            Ok(Step::Io {
                op: BlockOp::GetLbaStatus { lba },
                task: task(
                    nexus,
                    TaskKind::LbaStatus {
                        lba,
                        alloc_len: alloc,
                    },
                ),
            })
        }
        _ => Err(Sense::invalid_opcode()),
    }
}

/// Continues a media command once its data-out buffer arrived.
pub(crate) fn data_out(
    kind: TaskKind,
    nexus: u64,
    data: Bytes,
    cfg: &LuConfig,
    capacity: u64,
) -> Result<Step, Sense> {
    let bs = cfg.block_size as usize;
    let io = |op, kind| {
        Ok(Step::Io {
            op,
            task: task(nexus, kind),
        })
    };
    match kind {
        TaskKind::WriteData { lba, fua } => {
            if data.is_empty() || data.len().checked_rem(bs) != Some(0) {
                return Err(Sense::internal());
            }
            io(BlockOp::Write { lba, data, fua }, TaskKind::Write)
        }
        TaskKind::WriteSameData { lba, blocks, unmap } => {
            let block = data.get(..bs).ok_or(Sense::internal())?;
            if block.iter().all(|b| *b == 0) {
                return io(
                    BlockOp::WriteZeroes {
                        lba,
                        blocks,
                        deallocate: unmap,
                        fua: false,
                    },
                    TaskKind::Write,
                );
            }
            let mut buf = Vec::with_capacity(bs * blocks as usize);
            for _ in 0..blocks {
                buf.extend_from_slice(block);
            }
            io(
                BlockOp::Write {
                    lba,
                    data: Bytes::from(buf),
                    fua: false,
                },
                TaskKind::Write,
            )
        }
        TaskKind::CawData { lba, blocks, fua } => {
            let half = bs * blocks as usize;
            if data.len() < 2 * half {
                return Err(Sense::internal());
            }
            let compare = data.slice(..half);
            let write = data.slice(half..2 * half);
            io(
                BlockOp::CompareAndWrite {
                    lba,
                    blocks,
                    compare,
                    write,
                    fua,
                },
                TaskKind::Caw,
            )
        }
        TaskKind::VerifyData {
            lba,
            blocks,
            repeat,
        } => {
            let want = if repeat { bs } else { bs * blocks as usize };
            if data.len() < want {
                return Err(Sense::internal());
            }
            let expected = data.slice(..want);
            io(
                BlockOp::Read { lba, blocks },
                TaskKind::VerifyRead { expected },
            )
        }
        TaskKind::UnmapData => unmap_list(&data, cfg, capacity).map(|ranges| {
            if ranges.is_empty() {
                Step::Done(Completion::good())
            } else {
                Step::Io {
                    op: BlockOp::Deallocate { ranges },
                    task: task(nexus, TaskKind::Write),
                }
            }
        }),
        _ => Err(Sense::internal()),
    }
}

/// Parses and validates an UNMAP parameter list (SBC-3 5.28.2).
pub fn unmap_list(d: &[u8], cfg: &LuConfig, capacity: u64) -> Result<Vec<(u64, u32)>, Sense> {
    if d.len() < 8 {
        return Err(Sense::param_list_length());
    }
    let data_len = usize::from(be16(d, 0).unwrap_or(0));
    let bd_len = usize::from(be16(d, 2).unwrap_or(0));
    if data_len != 0 && data_len + 2 > d.len() {
        return Err(Sense::invalid_param(0, None));
    }
    if bd_len + 8 > d.len() {
        return Err(Sense::invalid_param(2, None));
    }
    let count = bd_len / 16;
    if count as u64 > u64::from(cfg.max_unmap_descriptors) {
        return Err(Sense::invalid_param(2, None));
    }
    let mut ranges = Vec::with_capacity(count);
    let mut total: u64 = 0;
    for i in 0..count {
        let off = 8 + i * 16;
        let lba = be64(d, off).ok_or(Sense::param_list_length())?;
        let n = be32(d, off + 8).ok_or(Sense::param_list_length())?;
        check_range(lba, u64::from(n), capacity)?;
        total += u64::from(n);
        if total > u64::from(cfg.max_unmap_blocks) {
            return Err(Sense::invalid_param((off + 8) as u16, None));
        }
        if n > 0 {
            ranges.push((lba, n));
        }
    }
    Ok(ranges)
}

/// Maps a volume failure to sense; `write` picks the medium error code.
pub fn result_sense(r: &BlockResult, write: bool) -> Sense {
    match r {
        BlockResult::OutOfRange => Sense::lba_out_of_range(),
        BlockResult::AccessState(s) => s.not_ready().unwrap_or(Sense::internal()),
        BlockResult::MediumError if write => Sense::new(SenseKey::MediumError, ASC_WRITE_ERROR),
        BlockResult::MediumError => Sense::new(SenseKey::MediumError, ASC_UNRECOVERED_READ_ERROR),
        BlockResult::SpaceExhausted => {
            Sense::new(SenseKey::DataProtect, ASC_SPACE_ALLOCATION_FAILED)
        }
        BlockResult::WriteProtected => Sense::write_protected(),
        _ => Sense::internal(),
    }
}

/// Offset of the first differing byte between `expected` (repeated if shorter) and `actual`.
fn first_difference(expected: &[u8], actual: &[u8]) -> Option<u32> {
    if expected.is_empty() {
        return None;
    }
    actual
        .iter()
        .enumerate()
        .find(|(i, b)| expected.get(i % expected.len()) != Some(b))
        .map(|(i, _)| i as u32)
}

/// Completes a media command from the volume's answer.
pub(crate) fn io_done(kind: TaskKind, result: BlockResult, capacity: u64) -> Completion {
    match (kind, result) {
        (TaskKind::Read, BlockResult::Data(d)) => Completion {
            data: d,
            ..Completion::good()
        },
        (TaskKind::VerifyRead { expected }, BlockResult::Data(d)) => {
            match first_difference(&expected, &d) {
                None => Completion::good(),
                Some(off) => Completion::check(Sense::miscompare(off)),
            }
        }
        (TaskKind::Write | TaskKind::Caw, BlockResult::Ok) => Completion::good(),
        (TaskKind::Caw, BlockResult::Miscompare { offset }) => {
            Completion::check(Sense::miscompare(offset))
        }
        (TaskKind::LbaStatus { lba, alloc_len }, BlockResult::LbaStatus(ext)) => {
            Completion::good_data(
                lba_status_data(lba, &ext, capacity, alloc_len as usize),
                usize::MAX,
            )
        }
        (_, BlockResult::ReservationConflict) => Completion::conflict(),
        (k, r) => {
            let write = matches!(k, TaskKind::Write | TaskKind::Caw);
            Completion::check(result_sense(&r, write))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausted_space_is_the_thin_provisioning_write_protect_answer() {
        let s = result_sense(&BlockResult::SpaceExhausted, true);
        assert_eq!(
            (s.key, s.asc),
            (SenseKey::DataProtect, ASC_SPACE_ALLOCATION_FAILED)
        );
        let c = io_done(TaskKind::Write, BlockResult::SpaceExhausted, 8);
        assert_eq!(
            c.sense.map(|s| (s.key, s.asc)),
            Some((SenseKey::DataProtect, ASC_SPACE_ALLOCATION_FAILED))
        );
    }
}
