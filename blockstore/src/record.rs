//! The write-ahead log record format.
//!
//! A record is a 64-byte header followed by its data, padded to a 512-byte boundary so that a
//! scan can look for records at sector offsets. The CRC32C covers the data and then the header
//! (with the CRC field zero), so the data part can be summed before the log lock is taken.
//!
//! Kinds: write, trim, zero, wrap (padding), and the snapshot operations a replicated volume
//! performs at the same position on every node: snapshot (id in `lba`, name as data) and
//! snapshot delete (id in `lba`), and grow (the new capacity in blocks in `lba`, see
//! [`Kind::Grow`]).
//!
//! Header (little endian): magic u32, crc u32, lsn u64, generation u64, epoch u64, synced_lsn u64,
//! lba u64, blocks u32, data_len u32, kind u8, origin u56.
//!
//! `origin` is, on a standby, the primary's LSN of the record this one applies (0 for a record
//! the node wrote itself; when a primary's record is split into several here, only the last
//! part carries it), so that recovery finds from the log itself how far the standby's image
//! follows the primary's log ([`crate::recovery`]).
//!
//! `synced_lsn` is the LSN below which the log was known durable when the record was written:
//! recovery uses it to tell a torn tail (discard) from damage to a record that was already durable
//! (refuse to open).

/// Header length in bytes.
pub const HEADER_LEN: usize = 64;
/// Record alignment in the log.
pub const ALIGN: u64 = 512;
const MAGIC: u32 = 0x4C41_5754; // "TWAL"
/// The largest origin LSN a header holds (56 bits).
pub const MAX_ORIGIN: u64 = (1 << 56) - 1;

/// What a record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Data for `blocks` blocks at `lba`.
    Write,
    /// Deallocate `blocks` blocks at `lba` (they read as zeros).
    Trim,
    /// Write zeros to `blocks` blocks at `lba` (stored thin, like a trim).
    Zero,
    /// Padding: the rest of the log file is unused; continue at its start.
    Wrap,
    /// A snapshot is taken here: `lba` holds its id, the data its name (UTF-8). Every record
    /// before it is in the snapshot, none after ([`crate::snapshot`]).
    Snapshot,
    /// The snapshot whose id `lba` holds is deleted here.
    SnapshotDelete,
    /// The volume grows here to `lba` blocks (no data, `blocks` 0): records after it may
    /// reach up to the new end. Written by a primary once the extent is extended; the new
    /// capacity is published only once the record is durable (on a replicated volume: on the
    /// in-sync standbys too), and recovery completes a grow whose record it replays.
    Grow,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Write => 1,
            Kind::Trim => 2,
            Kind::Zero => 3,
            Kind::Wrap => 4,
            Kind::Snapshot => 5,
            Kind::SnapshotDelete => 6,
            Kind::Grow => 7,
        }
    }
    fn from_code(c: u8) -> Option<Kind> {
        Some(match c {
            1 => Kind::Write,
            2 => Kind::Trim,
            3 => Kind::Zero,
            4 => Kind::Wrap,
            5 => Kind::Snapshot,
            6 => Kind::SnapshotDelete,
            7 => Kind::Grow,
            _ => return None,
        })
    }
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Log sequence number; consecutive records have consecutive LSNs.
    pub lsn: u64,
    /// Log generation of the run that wrote it.
    pub generation: u64,
    /// Fencing epoch of the writer.
    pub epoch: u64,
    /// LSN below which the log was durable when this record was written.
    pub synced_lsn: u64,
    /// First block.
    pub lba: u64,
    /// Number of blocks.
    pub blocks: u32,
    /// Bytes of data following the header.
    pub data_len: u32,
    /// What the record does.
    pub kind: Kind,
    /// On a standby, the primary's LSN of the record this one applies (at most
    /// [`MAX_ORIGIN`]); 0 otherwise.
    pub origin: u64,
}

/// Total aligned length of a record with `data_len` bytes of data.
pub fn record_len(data_len: usize) -> u64 {
    (HEADER_LEN as u64 + data_len as u64).div_ceil(ALIGN) * ALIGN
}

impl Header {
    fn encode_with_crc(&self, crc: u32) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&crc.to_le_bytes());
        h[8..16].copy_from_slice(&self.lsn.to_le_bytes());
        h[16..24].copy_from_slice(&self.generation.to_le_bytes());
        h[24..32].copy_from_slice(&self.epoch.to_le_bytes());
        h[32..40].copy_from_slice(&self.synced_lsn.to_le_bytes());
        h[40..48].copy_from_slice(&self.lba.to_le_bytes());
        h[48..52].copy_from_slice(&self.blocks.to_le_bytes());
        h[52..56].copy_from_slice(&self.data_len.to_le_bytes());
        h[56] = self.kind.code();
        h[57..HEADER_LEN].copy_from_slice(&(self.origin & MAX_ORIGIN).to_le_bytes()[..7]);
        h
    }

    /// Writes the whole record (header, `data`, zero padding) into `out`, which must be exactly
    /// [`record_len`] long. `data_crc` is `crc32c(data)`, computed by the caller beforehand.
    pub fn encode_record(&self, data: &[u8], data_crc: u32, out: &mut [u8]) {
        self.encode_record_parts(&[data], data_crc, out)
    }

    /// [`Header::encode_record`] with the data given in pieces that follow each other (several
    /// writes to consecutive blocks stored as one record); `data_crc` covers them in order.
    pub fn encode_record_parts(&self, parts: &[&[u8]], data_crc: u32, out: &mut [u8]) {
        let unsummed = self.encode_with_crc(0);
        let crc = crc32c::crc32c_append(data_crc, &unsummed);
        out[..HEADER_LEN].copy_from_slice(&self.encode_with_crc(crc));
        let mut at = HEADER_LEN;
        for p in parts {
            out[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        out[at..].fill(0);
    }

    /// Parses a header without checking the CRC (the data is needed for that). Returns `None`
    /// for anything that is not a plausible header.
    pub fn parse(h: &[u8], max_data: u64) -> Option<(Header, u32)> {
        if h.len() < HEADER_LEN || u32::from_le_bytes(h[0..4].try_into().ok()?) != MAGIC {
            return None;
        }
        let u64at =
            |o: usize| -> Option<u64> { Some(u64::from_le_bytes(h[o..o + 8].try_into().ok()?)) };
        let u32at =
            |o: usize| -> Option<u32> { Some(u32::from_le_bytes(h[o..o + 4].try_into().ok()?)) };
        let hdr = Header {
            lsn: u64at(8)?,
            generation: u64at(16)?,
            epoch: u64at(24)?,
            synced_lsn: u64at(32)?,
            lba: u64at(40)?,
            blocks: u32at(48)?,
            data_len: u32at(52)?,
            kind: Kind::from_code(h[56])?,
            origin: {
                let mut o = [0u8; 8];
                o[..7].copy_from_slice(&h[57..HEADER_LEN]);
                u64::from_le_bytes(o)
            },
        };
        if u64::from(hdr.data_len) > max_data {
            return None;
        }
        Some((hdr, u32at(4)?))
    }

    /// Whether `crc` (from the header) matches the header and `data`.
    pub fn check(&self, crc: u32, data: &[u8]) -> bool {
        let unsummed = self.encode_with_crc(0);
        crc32c::crc32c_append(crc32c::crc32c(data), &unsummed) == crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(lsn: u64, generation: u64, epoch: u64, synced: u64, lba: u64, blocks: u32,
                      data in proptest::collection::vec(any::<u8>(), 0..2000), k in 1u8..8,
                      origin in 0..=MAX_ORIGIN) {
            let hdr = Header { lsn, generation, epoch, synced_lsn: synced, lba, blocks,
                data_len: data.len() as u32, kind: Kind::from_code(k).unwrap(), origin };
            let mut out = vec![0u8; record_len(data.len()) as usize];
            hdr.encode_record(&data, crc32c::crc32c(&data), &mut out);
            prop_assert_eq!(out.len() as u64 % ALIGN, 0);
            let (back, crc) = Header::parse(&out, 1 << 20).unwrap();
            prop_assert_eq!(back, hdr);
            prop_assert!(back.check(crc, &out[HEADER_LEN..HEADER_LEN + data.len()]));
            // Any single flipped bit in header or data is detected.
            let mut bad = out.clone();
            let bit = (lsn as usize) % ((HEADER_LEN + data.len()) * 8);
            bad[bit / 8] ^= 1 << (bit % 8);
            let ok = match Header::parse(&bad, 1 << 20) {
                Some((h, c)) => bad
                    .get(HEADER_LEN..HEADER_LEN + h.data_len as usize)
                    .is_some_and(|d| h.check(c, d)),
                None => false,
            };
            prop_assert!(!ok);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Header::parse(&bytes, 1 << 20);
        }
    }
}
