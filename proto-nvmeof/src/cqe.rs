//! The 16-byte completion queue entry (NVMe base 2.0 figure 89).

use crate::status::Status;

/// Length of a CQE.
pub const CQE_LEN: usize = 16;

/// One completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cqe {
    /// Command-specific result: DW0 in the low 32 bits, DW1 in the high 32 bits.
    pub result: u64,
    /// Submission queue head pointer.
    pub sqhd: u16,
    /// Submission queue identifier.
    pub sqid: u16,
    /// Command identifier.
    pub cid: u16,
    /// Status (SC, SCT, CRD, MORE, DNR).
    pub status: Status,
    /// Phase tag (meaningless on fabrics; carried for a faithful round trip).
    pub phase: bool,
}

impl Cqe {
    /// Serialises the entry.
    pub fn to_bytes(&self) -> [u8; CQE_LEN] {
        let mut b = [0u8; CQE_LEN];
        b[0..8].copy_from_slice(&self.result.to_le_bytes());
        b[8..10].copy_from_slice(&self.sqhd.to_le_bytes());
        b[10..12].copy_from_slice(&self.sqid.to_le_bytes());
        b[12..14].copy_from_slice(&self.cid.to_le_bytes());
        let field = (self.status.0 << 1) | u16::from(self.phase);
        b[14..16].copy_from_slice(&field.to_le_bytes());
        b
    }

    /// Parses an entry (None when shorter than 16 bytes).
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        let b: &[u8; CQE_LEN] = b.get(..CQE_LEN)?.try_into().ok()?;
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let mut r = [0u8; 8];
        r.copy_from_slice(&b[0..8]);
        let field = u16_at(14);
        Some(Cqe {
            result: u64::from_le_bytes(r),
            sqhd: u16_at(8),
            sqid: u16_at(10),
            cid: u16_at(12),
            status: Status(field >> 1),
            phase: field & 1 != 0,
        })
    }

    /// DW0 of the result.
    pub fn dw0(&self) -> u32 {
        self.result as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_field_layout() {
        let cqe = Cqe {
            result: 0x0000_0001_0000_0002,
            sqhd: 3,
            sqid: 4,
            cid: 0x1234,
            status: Status::ANA_INACCESSIBLE,
            phase: true,
        };
        let b = cqe.to_bytes();
        assert_eq!(&b[0..4], &[2, 0, 0, 0]);
        assert_eq!(&b[4..8], &[1, 0, 0, 0]);
        assert_eq!(&b[12..14], &[0x34, 0x12]);
        // status field: SC 0x02 in bits 8:1, SCT 3 in bits 11:9, phase bit 0
        let field = u16::from_le_bytes([b[14], b[15]]);
        assert_eq!((field >> 1) & 0xFF, 0x02);
        assert_eq!((field >> 9) & 0x7, 3);
        assert_eq!(field & 1, 1);
        assert_eq!(field >> 15, 0, "DNR clear");
        assert_eq!(Cqe::from_slice(&b), Some(cqe));
    }
}

/// A finished command as the controller produces it: status, result dwords and any data
/// to return to the host (sent as C2HData before the response capsule).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// Command identifier.
    pub cid: u16,
    /// Completion status.
    pub status: Status,
    /// DW0 (low) and DW1 (high).
    pub result: u64,
    /// Controller-to-host data.
    pub data: bytes::Bytes,
}

impl Response {
    /// A response with `status` and nothing else.
    pub fn status(cid: u16, status: Status) -> Self {
        Response {
            cid,
            status,
            ..Response::default()
        }
    }

    /// A successful response carrying `data`.
    pub fn data(cid: u16, data: Vec<u8>) -> Self {
        Response {
            cid,
            data: bytes::Bytes::from(data),
            ..Response::default()
        }
    }

    /// A successful response with result DW0.
    pub fn dw0(cid: u16, dw0: u32) -> Self {
        Response {
            cid,
            result: u64::from(dw0),
            ..Response::default()
        }
    }
}
