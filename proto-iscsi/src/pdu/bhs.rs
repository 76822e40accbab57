//! The 48-byte Basic Header Segment (RFC 7143 section 11.2.1): opcodes, the raw field layout
//! shared by every PDU, and the small value types (LUN, ISID) that sit in it.
//!
//! Every PDU kind reads and writes its fields through `RawBhs`, so byte offsets live in one
//! place and the per-PDU modules only map named fields onto words.

use nom::number::complete::{be_u24, be_u32, be_u64, be_u8};
use nom::{IResult, Parser};

/// Length of the Basic Header Segment; every PDU starts with exactly this many bytes.
pub const BHS_LEN: usize = 48;

/// Length of a CRC32C header or data digest on the wire.
pub const DIGEST_LEN: usize = 4;

/// The largest value the 24-bit DataSegmentLength field can carry.
pub const MAX_DATA_SEGMENT_LENGTH: u32 = 0x00FF_FFFF;

/// The value RFC 7143 uses for "no tag" in ITT/TTT fields (section 11.2.1.8).
pub const RESERVED_TAG: u32 = 0xFFFF_FFFF;

/// Byte-0 bit marking an immediate (non-CmdSN-queued) request (the `I` bit).
pub(crate) const IMMEDIATE_BIT: u8 = 0x40;
/// Byte-0 mask for the 6-bit opcode.
pub(crate) const OPCODE_MASK: u8 = 0x3F;
/// Byte-1 bit `F` (Final) used by most PDUs.
pub(crate) const FINAL_BIT: u8 = 0x80;

/// True when any bit of `mask` is set in a flags byte.
pub(crate) fn bit(flags: u8, mask: u8) -> bool {
    flags & mask != 0
}

/// `mask` when `cond` holds, else 0: builds a flags byte from booleans.
pub(crate) fn set(cond: bool, mask: u8) -> u8 {
    if cond {
        mask
    } else {
        0
    }
}

/// Rounds a segment length up to the 4-byte boundary every iSCSI segment is padded to.
pub(crate) const fn pad4(len: usize) -> usize {
    (len + 3) & !3
}

/// The PDU kinds of RFC 7143 section 11.2.1.2, by opcode value.
///
/// Initiator opcodes are 0x00-0x1f, target opcodes 0x20-0x3f; the session needs the
/// direction to refuse a PDU that a peer in the other role must never send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// NOP-Out (0x00), initiator ping or answer to a NOP-In.
    NopOut,
    /// SCSI Command (0x01).
    ScsiCommand,
    /// SCSI Task Management Function Request (0x02).
    TaskMgmtRequest,
    /// Login Request (0x03).
    LoginRequest,
    /// Text Request (0x04).
    TextRequest,
    /// SCSI Data-Out (0x05), write data from the initiator.
    DataOut,
    /// Logout Request (0x06).
    LogoutRequest,
    /// SNACK Request (0x10).
    SnackRequest,
    /// NOP-In (0x20).
    NopIn,
    /// SCSI Response (0x21).
    ScsiResponse,
    /// SCSI Task Management Function Response (0x22).
    TaskMgmtResponse,
    /// Login Response (0x23).
    LoginResponse,
    /// Text Response (0x24).
    TextResponse,
    /// SCSI Data-In (0x25), read data from the target.
    DataIn,
    /// Logout Response (0x26).
    LogoutResponse,
    /// Ready To Transfer (0x31).
    R2t,
    /// Asynchronous Message (0x32).
    AsyncMessage,
    /// Reject (0x3f).
    Reject,
}

impl Opcode {
    /// Maps a 6-bit opcode value to a PDU kind; `None` for unassigned and vendor-specific codes.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0x00 => Self::NopOut,
            0x01 => Self::ScsiCommand,
            0x02 => Self::TaskMgmtRequest,
            0x03 => Self::LoginRequest,
            0x04 => Self::TextRequest,
            0x05 => Self::DataOut,
            0x06 => Self::LogoutRequest,
            0x10 => Self::SnackRequest,
            0x20 => Self::NopIn,
            0x21 => Self::ScsiResponse,
            0x22 => Self::TaskMgmtResponse,
            0x23 => Self::LoginResponse,
            0x24 => Self::TextResponse,
            0x25 => Self::DataIn,
            0x26 => Self::LogoutResponse,
            0x31 => Self::R2t,
            0x32 => Self::AsyncMessage,
            0x3f => Self::Reject,
            _ => return None,
        })
    }

    /// The wire value of this opcode (without the `I` bit).
    pub fn as_u8(self) -> u8 {
        match self {
            Self::NopOut => 0x00,
            Self::ScsiCommand => 0x01,
            Self::TaskMgmtRequest => 0x02,
            Self::LoginRequest => 0x03,
            Self::TextRequest => 0x04,
            Self::DataOut => 0x05,
            Self::LogoutRequest => 0x06,
            Self::SnackRequest => 0x10,
            Self::NopIn => 0x20,
            Self::ScsiResponse => 0x21,
            Self::TaskMgmtResponse => 0x22,
            Self::LoginResponse => 0x23,
            Self::TextResponse => 0x24,
            Self::DataIn => 0x25,
            Self::LogoutResponse => 0x26,
            Self::R2t => 0x31,
            Self::AsyncMessage => 0x32,
            Self::Reject => 0x3f,
        }
    }

    /// True for opcodes only an initiator may send (the ones a target receives).
    pub fn is_initiator_opcode(self) -> bool {
        self.as_u8() < 0x20
    }
}

/// An 8-byte SAM logical unit number exactly as carried in the BHS.
///
/// Kept as raw bytes so a target echoes back precisely what the initiator sent; the helpers
/// convert the two common single-level addressing methods to a plain index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lun(pub [u8; 8]);

impl Lun {
    /// Encodes a LUN index the way Linux and most initiators expect: peripheral device
    /// addressing below 256, flat space addressing (method 01b) up to 16383.
    pub fn from_index(index: u16) -> Self {
        let index = index & 0x3FFF;
        let [hi, lo] = index.to_be_bytes();
        if index < 256 {
            Lun([0, lo, 0, 0, 0, 0, 0, 0])
        } else {
            Lun([0x40 | hi, lo, 0, 0, 0, 0, 0, 0])
        }
    }

    /// Decodes a single-level peripheral (bus 0) or flat-space LUN to its index; `None` for
    /// other addressing methods or multi-level LUNs, which this target does not assign.
    pub fn index(&self) -> Option<u16> {
        let [b0, b1, rest @ ..] = self.0;
        if rest.iter().any(|b| *b != 0) {
            return None;
        }
        match b0 >> 6 {
            0 if b0 == 0 => Some(u16::from(b1)),
            1 => Some(u16::from_be_bytes([b0 & 0x3F, b1])),
            _ => None,
        }
    }
}

/// The BHS as fixed-position fields, before any per-opcode meaning is given to them.
///
/// `words[k]` is the big-endian 32-bit word at byte offset `20 + 4 * k` (offsets 20..=44).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RawBhs {
    /// Opcode value (byte 0, low 6 bits).
    pub opcode: u8,
    /// The `I` bit of byte 0.
    pub immediate: bool,
    /// Byte 1: the F bit and opcode-specific flags.
    pub flags: u8,
    /// Byte 2, opcode-specific.
    pub b2: u8,
    /// Byte 3, opcode-specific.
    pub b3: u8,
    /// TotalAHSLength in 4-byte words (byte 4).
    pub total_ahs_len: u8,
    /// DataSegmentLength in bytes (bytes 5..8).
    pub data_segment_len: u32,
    /// Bytes 8..16: LUN, or ISID+TSIH for login PDUs.
    pub lun: [u8; 8],
    /// Initiator Task Tag (bytes 16..20).
    pub itt: u32,
    /// Words at offsets 20, 24, ..., 44.
    pub words: [u32; 7],
}

/// Index into [`RawBhs::words`] for the word at byte offset 20.
pub(crate) const W20: usize = 0;
/// Word at byte offset 24.
pub(crate) const W24: usize = 1;
/// Word at byte offset 28.
pub(crate) const W28: usize = 2;
/// Word at byte offset 32.
pub(crate) const W32: usize = 3;
/// Word at byte offset 36.
pub(crate) const W36: usize = 4;
/// Word at byte offset 40.
pub(crate) const W40: usize = 5;
/// Word at byte offset 44.
pub(crate) const W44: usize = 6;

fn parse_raw(input: &[u8]) -> IResult<&[u8], RawBhs> {
    let (input, (b0, flags, b2, b3, total_ahs_len, data_segment_len)) =
        (be_u8, be_u8, be_u8, be_u8, be_u8, be_u24).parse(input)?;
    let (input, (lun, itt)) = (be_u64, be_u32).parse(input)?;
    let (input, (w0, w1, w2, w3, w4, w5, w6)) =
        (be_u32, be_u32, be_u32, be_u32, be_u32, be_u32, be_u32).parse(input)?;
    Ok((
        input,
        RawBhs {
            opcode: b0 & OPCODE_MASK,
            immediate: b0 & IMMEDIATE_BIT != 0,
            flags,
            b2,
            b3,
            total_ahs_len,
            data_segment_len,
            lun: lun.to_be_bytes(),
            itt,
            words: [w0, w1, w2, w3, w4, w5, w6],
        },
    ))
}

impl RawBhs {
    /// Reads the BHS from the first 48 bytes of `input`; `None` if fewer are present.
    pub fn parse(input: &[u8]) -> Option<Self> {
        parse_raw(input).ok().map(|(_, raw)| raw)
    }

    /// Serialises the BHS to its 48 wire bytes.
    pub fn to_bytes(self) -> [u8; BHS_LEN] {
        let mut out = [0u8; BHS_LEN];
        let b0 = (self.opcode & OPCODE_MASK) | if self.immediate { IMMEDIATE_BIT } else { 0 };
        let dsl = self.data_segment_len.to_be_bytes();
        let head = [
            b0,
            self.flags,
            self.b2,
            self.b3,
            self.total_ahs_len,
            dsl[1],
            dsl[2],
            dsl[3],
        ];
        let mut words = [0u32; 10];
        words[0] = u32::from_be_bytes([self.lun[0], self.lun[1], self.lun[2], self.lun[3]]);
        words[1] = u32::from_be_bytes([self.lun[4], self.lun[5], self.lun[6], self.lun[7]]);
        words[2] = self.itt;
        words[3..].copy_from_slice(&self.words);
        for (dst, src) in out.iter_mut().zip(head) {
            *dst = src;
        }
        for (chunk, word) in out[8..].chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_values_match_rfc_7143_section_11_2_1_2() {
        // Initiator opcodes 0x00-0x06 and 0x10, target opcodes 0x20-0x26, 0x31, 0x32, 0x3f.
        let table: [(u8, Opcode); 18] = [
            (0x00, Opcode::NopOut),
            (0x01, Opcode::ScsiCommand),
            (0x02, Opcode::TaskMgmtRequest),
            (0x03, Opcode::LoginRequest),
            (0x04, Opcode::TextRequest),
            (0x05, Opcode::DataOut),
            (0x06, Opcode::LogoutRequest),
            (0x10, Opcode::SnackRequest),
            (0x20, Opcode::NopIn),
            (0x21, Opcode::ScsiResponse),
            (0x22, Opcode::TaskMgmtResponse),
            (0x23, Opcode::LoginResponse),
            (0x24, Opcode::TextResponse),
            (0x25, Opcode::DataIn),
            (0x26, Opcode::LogoutResponse),
            (0x31, Opcode::R2t),
            (0x32, Opcode::AsyncMessage),
            (0x3f, Opcode::Reject),
        ];
        for (value, op) in table {
            assert_eq!(Opcode::from_u8(value), Some(op));
            assert_eq!(op.as_u8(), value);
            assert_eq!(op.is_initiator_opcode(), value < 0x20);
        }
        // Vendor-specific initiator (0x1c-0x1e) and target (0x3c-0x3e) codes are not PDUs we
        // understand.
        for value in [0x07, 0x1c, 0x1d, 0x1e, 0x27, 0x30, 0x3c, 0x3e] {
            assert_eq!(Opcode::from_u8(value), None);
        }
    }

    #[test]
    fn raw_bhs_offsets() {
        let mut bytes = [0u8; BHS_LEN];
        bytes[0] = 0x41; // I + SCSI Command
        bytes[1] = 0xA1;
        bytes[4] = 3;
        bytes[5..8].copy_from_slice(&[0x01, 0x02, 0x03]);
        bytes[8] = 0x40;
        bytes[9] = 0x05;
        bytes[16..20].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        bytes[44..48].copy_from_slice(&[0, 0, 0, 7]);
        let raw = RawBhs::parse(&bytes).unwrap();
        assert_eq!(raw.opcode, 0x01);
        assert!(raw.immediate);
        assert_eq!(raw.flags, 0xA1);
        assert_eq!(raw.total_ahs_len, 3);
        assert_eq!(raw.data_segment_len, 0x010203);
        assert_eq!(raw.itt, 0xdeadbeef);
        assert_eq!(raw.words[W44], 7);
        assert_eq!(Lun(raw.lun).index(), Some(5));
        assert_eq!(raw.to_bytes(), bytes);
        assert!(RawBhs::parse(&bytes[..47]).is_none());
    }

    #[test]
    fn lun_addressing() {
        assert_eq!(Lun::from_index(3).0, [0, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Lun::from_index(0x123).0, [0x41, 0x23, 0, 0, 0, 0, 0, 0]);
        for i in [0u16, 1, 255, 256, 0x3FFF] {
            assert_eq!(Lun::from_index(i).index(), Some(i));
        }
        assert_eq!(Lun([0x80, 0, 0, 0, 0, 0, 0, 0]).index(), None);
        assert_eq!(Lun([0, 1, 0, 0, 0, 0, 0, 1]).index(), None);
    }
}
