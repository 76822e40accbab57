//! Bounds-checked access to command descriptor blocks and the operation codes we implement.
//!
//! CDBs come straight off the wire, so every field read goes through [`Cdb`], which has already
//! checked the CDB is as long as its opcode group demands.

use super::sense::Sense;

/// TEST UNIT READY.
pub const TEST_UNIT_READY: u8 = 0x00;
/// REQUEST SENSE.
pub const REQUEST_SENSE: u8 = 0x03;
/// READ(6).
pub const READ_6: u8 = 0x08;
/// WRITE(6).
pub const WRITE_6: u8 = 0x0A;
/// INQUIRY.
pub const INQUIRY: u8 = 0x12;
/// MODE SELECT(6).
pub const MODE_SELECT_6: u8 = 0x15;
/// RESERVE(6).
pub const RESERVE_6: u8 = 0x16;
/// RELEASE(6).
pub const RELEASE_6: u8 = 0x17;
/// MODE SENSE(6).
pub const MODE_SENSE_6: u8 = 0x1A;
/// START STOP UNIT.
pub const START_STOP_UNIT: u8 = 0x1B;
/// PREVENT ALLOW MEDIUM REMOVAL.
pub const PREVENT_ALLOW: u8 = 0x1E;
/// READ CAPACITY(10).
pub const READ_CAPACITY_10: u8 = 0x25;
/// READ(10).
pub const READ_10: u8 = 0x28;
/// WRITE(10).
pub const WRITE_10: u8 = 0x2A;
/// VERIFY(10).
pub const VERIFY_10: u8 = 0x2F;
/// SYNCHRONIZE CACHE(10).
pub const SYNC_CACHE_10: u8 = 0x35;
/// WRITE SAME(10).
pub const WRITE_SAME_10: u8 = 0x41;
/// UNMAP.
pub const UNMAP: u8 = 0x42;
/// MODE SELECT(10).
pub const MODE_SELECT_10: u8 = 0x55;
/// MODE SENSE(10).
pub const MODE_SENSE_10: u8 = 0x5A;
/// PERSISTENT RESERVE IN.
pub const PR_IN: u8 = 0x5E;
/// PERSISTENT RESERVE OUT.
pub const PR_OUT: u8 = 0x5F;
/// READ(16).
pub const READ_16: u8 = 0x88;
/// COMPARE AND WRITE.
pub const COMPARE_AND_WRITE: u8 = 0x89;
/// WRITE(16).
pub const WRITE_16: u8 = 0x8A;
/// VERIFY(16).
pub const VERIFY_16: u8 = 0x8F;
/// SYNCHRONIZE CACHE(16).
pub const SYNC_CACHE_16: u8 = 0x91;
/// WRITE SAME(16).
pub const WRITE_SAME_16: u8 = 0x93;
/// SERVICE ACTION IN(16): READ CAPACITY(16), GET LBA STATUS.
pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
/// REPORT LUNS.
pub const REPORT_LUNS: u8 = 0xA0;
/// MAINTENANCE IN: REPORT TARGET PORT GROUPS, REPORT SUPPORTED OPERATION CODES.
pub const MAINTENANCE_IN: u8 = 0xA3;
/// READ(12).
pub const READ_12: u8 = 0xA8;
/// WRITE(12).
pub const WRITE_12: u8 = 0xAA;
/// VERIFY(12).
pub const VERIFY_12: u8 = 0xAF;

/// SERVICE ACTION IN(16) / READ CAPACITY(16).
pub const SAI_READ_CAPACITY_16: u8 = 0x10;
/// SERVICE ACTION IN(16) / GET LBA STATUS.
pub const SAI_GET_LBA_STATUS: u8 = 0x12;
/// MAINTENANCE IN / REPORT TARGET PORT GROUPS.
pub const MI_REPORT_TARGET_PGS: u8 = 0x0A;
/// MAINTENANCE IN / REPORT SUPPORTED OPERATION CODES.
pub const MI_REPORT_SUPPORTED_OPCODES: u8 = 0x0C;

/// CDB length implied by the opcode's group code (SPC-4 4.2.5.1), or None for reserved groups.
pub fn cdb_len_for(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}

/// A CDB whose length has been checked against its group code.
#[derive(Debug, Clone, Copy)]
pub struct Cdb<'a> {
    bytes: &'a [u8],
}

impl<'a> Cdb<'a> {
    /// Validates the length and the control byte (NACA is not supported).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Sense> {
        let opcode = *bytes.first().ok_or(Sense::invalid_opcode())?;
        let len = cdb_len_for(opcode).ok_or(Sense::invalid_opcode())?;
        if bytes.len() < len {
            return Err(Sense::invalid_cdb(0, None));
        }
        let cdb = Cdb {
            bytes: &bytes[..len],
        };
        let control = cdb.u8(len - 1);
        if control & 0x04 != 0 {
            return Err(Sense::invalid_cdb((len - 1) as u16, Some(2)));
        }
        Ok(cdb)
    }

    /// Operation code.
    pub fn opcode(&self) -> u8 {
        self.u8(0)
    }

    /// Service action (low 5 bits of byte 1).
    pub fn service_action(&self) -> u8 {
        self.u8(1) & 0x1F
    }

    /// Byte `i`, or 0 beyond the CDB (never panics).
    pub fn u8(&self, i: usize) -> u8 {
        self.bytes.get(i).copied().unwrap_or(0)
    }

    /// Big-endian 16-bit field at `i`.
    pub fn u16(&self, i: usize) -> u16 {
        u16::from_be_bytes([self.u8(i), self.u8(i + 1)])
    }

    /// Big-endian 32-bit field at `i`.
    pub fn u32(&self, i: usize) -> u32 {
        u32::from_be_bytes([self.u8(i), self.u8(i + 1), self.u8(i + 2), self.u8(i + 3)])
    }

    /// Big-endian 64-bit field at `i`.
    pub fn u64(&self, i: usize) -> u64 {
        (u64::from(self.u32(i)) << 32) | u64::from(self.u32(i + 4))
    }

    /// True when bit `bit` of byte `i` is set.
    pub fn bit(&self, i: usize, bit: u8) -> bool {
        self.u8(i) & (1 << bit) != 0
    }
}

/// Big-endian 16-bit read from a parameter list, None when out of bounds.
pub fn be16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

/// Big-endian 32-bit read from a parameter list, None when out of bounds.
pub fn be32(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// Big-endian 64-bit read from a parameter list, None when out of bounds.
pub fn be64(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(i..i + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_lengths() {
        assert_eq!(cdb_len_for(READ_6), Some(6));
        assert_eq!(cdb_len_for(READ_10), Some(10));
        assert_eq!(cdb_len_for(READ_12), Some(12));
        assert_eq!(cdb_len_for(READ_16), Some(16));
        assert_eq!(cdb_len_for(0x60), None);
    }

    #[test]
    fn short_cdb_rejected() {
        assert!(Cdb::parse(&[READ_10, 0, 0]).is_err());
        assert!(Cdb::parse(&[]).is_err());
    }

    #[test]
    fn naca_rejected_with_pointer_to_control() {
        let e = Cdb::parse(&[TEST_UNIT_READY, 0, 0, 0, 0, 0x04]).unwrap_err();
        assert_eq!(e.field.map(|f| f.byte), Some(5));
    }

    #[test]
    fn fields_are_big_endian() {
        let raw = [READ_16, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 1, 0, 0, 0];
        let c = Cdb::parse(&raw).unwrap();
        assert_eq!(c.u64(2), 0x0102_0304_0506_0708);
        assert_eq!(c.u32(10), 0x100);
    }
}
