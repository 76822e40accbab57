//! Self-identifying block contents, shared by the crash tests, the crash-loop child process and
//! the benchmarks: every block names the write that produced it, so a reader can tell exactly which
//! write it sees and detect garbage or a torn mix of two writes inside one block. Also a view of
//! the log record format, for tests that inspect the log a crash left behind, and the
//! power-loss driving the model tests share ([`power_loss`]).

pub mod power_loss;

/// The log record format (header layout and record length), which is otherwise internal: tests
/// parse the raw log with it to check what was written and with which fields.
pub use crate::record::{record_len, Header};

/// Fills `buf` (one block) with the pattern of write `id` at `lba`: the id and LBA in the first
/// 16 bytes, then a stream derived from both. A block can be traced back to the write that
/// produced it, and any mix of two writes inside one block is detected.
pub fn fill_block(buf: &mut [u8], id: u64, lba: u64) {
    buf[..8].copy_from_slice(&id.to_le_bytes());
    buf[8..16].copy_from_slice(&lba.to_le_bytes());
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ lba ^ 0xD1B5_4A32_D192_ED03;
    for chunk in buf[16..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// Data for `blocks` blocks of write `id` starting at `lba`.
pub fn write_data(id: u64, lba: u64, blocks: u64, bs: usize) -> Vec<u8> {
    let mut v = vec![0u8; blocks as usize * bs];
    for (i, b) in v.chunks_mut(bs).enumerate() {
        fill_block(b, id, lba + i as u64);
    }
    v
}

/// Which write produced this block: `Ok(0)` for zeros, `Ok(id)` for an intact pattern, `Err`
/// for anything else (garbage or a torn mix).
pub fn identify(block: &[u8], lba: u64) -> Result<u64, String> {
    if block.iter().all(|&b| b == 0) {
        return Ok(0);
    }
    let id = u64::from_le_bytes(block[..8].try_into().unwrap());
    let mut want = vec![0u8; block.len()];
    fill_block(&mut want, id, lba);
    if want == block {
        Ok(id)
    } else {
        let first = want.iter().zip(block).position(|(a, b)| a != b).unwrap();
        Err(format!(
            "block {lba}: not an intact write (claims id {id}, differs at byte {first})"
        ))
    }
}

/// What recovery finds at the end of the log on `storage` now: `Some(where and why)` when the
/// log ends at a damaged record (a torn tail, which opening cuts off and reports), `None` at a
/// clean end.
pub fn torn_tail(storage: &dyn crate::storage::Storage) -> crate::Result<Option<String>> {
    let name = crate::engine::SUPERBLOCK_FILE;
    let meta = storage.open(name)?;
    let sb = crate::superblock::Superblock::load(meta.as_ref(), &storage.describe(name))?;
    let wal = storage.open(crate::engine::WAL_FILE)?;
    // Origins are not asked for here (`u64::MAX`: none counted).
    let scan = crate::recovery::scan(wal.as_ref(), &sb, crate::engine::MAX_RECORD_DATA, u64::MAX)?;
    Ok(scan.torn_tail)
}
