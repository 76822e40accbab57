//! The superblock: the volume's identity, geometry, log checkpoint and persisted role/epoch.
//!
//! It lives in two 4 KiB slots of its own file. Each update goes to the slot the previous update
//! did not use, with a sequence number one higher, and is synced before the update counts; on
//! open the valid slot with the highest sequence wins. A write torn by power loss therefore
//! damages at most the slot being written, and the other still holds the last durable state.

use crate::error::{Error, Result};
use crate::role::Role;
use crate::storage::BlockFile;

/// Size of one slot; slot `i` starts at `i * SLOT_SIZE`.
pub const SLOT_SIZE: usize = 4096;
const MAGIC: &[u8; 8] = b"TANDEMSB";
const VERSION: u32 = 1;
/// Bytes of the encoded fields before the checksum.
const BODY_LEN: usize = 8 + 4 + 8 + 16 + 4 + 8 + 8 + 8 + 8 + 8 + 8 + 1;

/// Everything the engine persists outside the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Incremented on every write; picks the newer slot.
    pub seq: u64,
    /// The volume's identity, reported by both protocols.
    pub uuid: [u8; 16],
    /// Logical block size: 512 or 4096.
    pub block_size: u32,
    /// Capacity in logical blocks.
    pub capacity_blocks: u64,
    /// Size of the circular log file in bytes.
    pub wal_size: u64,
    /// Log generation: records of an earlier run of the volume carry a lower one and are ignored.
    pub generation: u64,
    /// LSN of the first record not yet copied into the extent.
    pub checkpoint_lsn: u64,
    /// Virtual log offset of that record (physical offset = virtual % wal_size).
    pub checkpoint_virt: u64,
    /// Fencing epoch; a role change is persisted with its epoch before it takes effect.
    pub epoch: u64,
    /// The volume's role on this node.
    pub role: Role,
}

impl Superblock {
    fn encode(&self) -> [u8; SLOT_SIZE] {
        let mut b = [0u8; SLOT_SIZE];
        let mut w = Writer {
            buf: &mut b,
            pos: 0,
        };
        w.put(MAGIC);
        w.put(&VERSION.to_le_bytes());
        w.put(&self.seq.to_le_bytes());
        w.put(&self.uuid);
        w.put(&self.block_size.to_le_bytes());
        w.put(&self.capacity_blocks.to_le_bytes());
        w.put(&self.wal_size.to_le_bytes());
        w.put(&self.generation.to_le_bytes());
        w.put(&self.checkpoint_lsn.to_le_bytes());
        w.put(&self.checkpoint_virt.to_le_bytes());
        w.put(&self.epoch.to_le_bytes());
        w.put(&[self.role.to_u8()]);
        debug_assert_eq!(w.pos, BODY_LEN);
        let crc = crc32c::crc32c(&b[..BODY_LEN]);
        b[BODY_LEN..BODY_LEN + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> std::result::Result<Superblock, String> {
        if b.len() < BODY_LEN + 4 {
            return Err("short slot".into());
        }
        if &b[..8] != MAGIC {
            return Err("bad magic".into());
        }
        let stored = u32::from_le_bytes(b[BODY_LEN..BODY_LEN + 4].try_into().unwrap_or([0; 4]));
        if crc32c::crc32c(&b[..BODY_LEN]) != stored {
            return Err("checksum mismatch".into());
        }
        let mut r = Reader { buf: b, pos: 8 };
        let version = r.u32();
        if version != VERSION {
            return Err(format!("unsupported version {version}"));
        }
        let seq = r.u64();
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[r.pos..r.pos + 16]);
        r.pos += 16;
        let sb = Superblock {
            seq,
            uuid,
            block_size: r.u32(),
            capacity_blocks: r.u64(),
            wal_size: r.u64(),
            generation: r.u64(),
            checkpoint_lsn: r.u64(),
            checkpoint_virt: r.u64(),
            epoch: r.u64(),
            role: Role::from_u8(b[r.pos]).ok_or("unknown role")?,
        };
        Ok(sb)
    }

    /// Reads both slots and returns the newest valid one.
    pub fn load(file: &dyn BlockFile, path: &std::path::Path) -> Result<Superblock> {
        let mut buf = vec![0u8; 2 * SLOT_SIZE];
        file.read_at(&mut buf, 0)?;
        let a = Self::decode(&buf[..SLOT_SIZE]);
        let b = Self::decode(&buf[SLOT_SIZE..]);
        match (a, b) {
            (Ok(a), Ok(b)) => Ok(if a.seq >= b.seq { a } else { b }),
            (Ok(a), Err(_)) => Ok(a),
            (Err(_), Ok(b)) => Ok(b),
            (Err(ea), Err(eb)) => Err(Error::CorruptSuperblock {
                path: path.to_path_buf(),
                reason: format!("slot 0: {ea}; slot 1: {eb}"),
            }),
        }
    }

    /// Writes the next version into the other slot and syncs it. `self.seq` is advanced.
    pub fn store(&mut self, file: &dyn BlockFile) -> Result<()> {
        self.seq += 1;
        let slot = self.seq % 2;
        file.write_at(&self.encode(), slot * SLOT_SIZE as u64)?;
        file.sync_data()?;
        Ok(())
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u32(&mut self) -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&self.buf[self.pos..self.pos + 4]);
        self.pos += 4;
        u32::from_le_bytes(a)
    }
    fn u64(&mut self) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&self.buf[self.pos..self.pos + 8]);
        self.pos += 8;
        u64::from_le_bytes(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;
    use crate::storage::Storage;

    fn sample() -> Superblock {
        Superblock {
            seq: 0,
            uuid: [7; 16],
            block_size: 4096,
            capacity_blocks: 1000,
            wal_size: 1 << 20,
            generation: 3,
            checkpoint_lsn: 42,
            checkpoint_virt: 8192,
            epoch: 5,
            role: Role::Primary,
        }
    }

    #[test]
    fn newest_valid_slot_wins_and_a_torn_slot_falls_back() {
        let disk = SimStorage::new();
        let f = disk.create("sb").unwrap();
        let mut sb = sample();
        sb.store(f.as_ref()).unwrap();
        sb.epoch = 6;
        sb.store(f.as_ref()).unwrap();
        let p = std::path::Path::new("sb");
        assert_eq!(Superblock::load(f.as_ref(), p).unwrap().epoch, 6);
        // Damage the newest slot: the previous version is returned.
        disk.corrupt_byte("sb", (sb.seq % 2) * SLOT_SIZE as u64 + 20);
        let got = Superblock::load(f.as_ref(), p).unwrap();
        assert_eq!(got.epoch, 5);
        // Damage the other one too: a typed error.
        disk.corrupt_byte("sb", ((sb.seq + 1) % 2) * SLOT_SIZE as u64 + 20);
        assert!(matches!(
            Superblock::load(f.as_ref(), p),
            Err(Error::CorruptSuperblock { .. })
        ));
    }
}
