//! NVMe/TCP PDUs (NVMe/TCP transport specification 1.0, section 3.6): the typed values, the
//! streaming decoder and the encoders for both directions.
//!
//! All multi-byte fields are little-endian. A PDU is an 8-byte common header, a type-specific
//! header up to HLEN, an optional header digest, optional padding up to PDO, the data, and an
//! optional data digest. Digests are CRC32C and are in force only after ICReq/ICResp agreed
//! on them, so the decoder and encoders take the negotiated [`Digests`] as a parameter.

mod decode;
mod encode;
mod error;

use bytes::Bytes;

pub use decode::{decode, Decoded, DecoderConfig};
pub use encode::{encode, encode_to_vec, EncodeOptions};
pub use error::{ErrorAction, Fes, PduError};

use crate::cqe::Cqe;
use crate::sqe::Sqe;

/// PDU type codes (common header byte 0).
pub mod pdu_type {
    /// Initialize Connection Request (host to controller).
    pub const IC_REQ: u8 = 0x00;
    /// Initialize Connection Response (controller to host).
    pub const IC_RESP: u8 = 0x01;
    /// Host to Controller Terminate Connection Request.
    pub const H2C_TERM_REQ: u8 = 0x02;
    /// Controller to Host Terminate Connection Request.
    pub const C2H_TERM_REQ: u8 = 0x03;
    /// Command capsule.
    pub const CAPSULE_CMD: u8 = 0x04;
    /// Response capsule.
    pub const CAPSULE_RESP: u8 = 0x05;
    /// Host to Controller data.
    pub const H2C_DATA: u8 = 0x06;
    /// Controller to Host data.
    pub const C2H_DATA: u8 = 0x07;
    /// Ready to Transfer.
    pub const R2T: u8 = 0x09;
}

/// Common header flag bits (byte 1).
pub mod flags {
    /// A header digest follows the PDU header.
    pub const HDGSTF: u8 = 1 << 0;
    /// A data digest follows the PDU data.
    pub const DDGSTF: u8 = 1 << 1;
    /// Last data PDU of a transfer (C2HData, H2CData).
    pub const LAST_PDU: u8 = 1 << 2;
    /// C2HData only: the command completed successfully, no response capsule follows.
    pub const SUCCESS: u8 = 1 << 3;
}

/// Length of the common header.
pub const COMMON_HEADER_LEN: usize = 8;
/// Length of ICReq and ICResp (header only, never digested).
pub const IC_PDU_LEN: usize = 128;
/// HLEN of a command capsule: common header plus the 64-byte SQE.
pub const CAPSULE_CMD_HLEN: usize = 72;
/// HLEN of a response capsule: common header plus the 16-byte CQE.
pub const CAPSULE_RESP_HLEN: usize = 24;
/// HLEN of H2CData, C2HData and R2T.
pub const DATA_HLEN: usize = 24;
/// HLEN of the terminate-connection PDUs.
pub const TERM_REQ_HLEN: usize = 24;
/// Largest PLEN of a terminate request (header plus the offending PDU header, spec limit 152).
pub const TERM_REQ_MAX_PLEN: usize = 152;
/// Length of a header or data digest.
pub const DIGEST_LEN: usize = 4;
/// Protocol format version 1.0 (PFV field).
pub const PFV_1_0: u16 = 0;
/// Smallest MAXH2CDATA a controller may advertise (the Linux host refuses less).
pub const MIN_MAXH2CDATA: u32 = 4096;

/// Which digests a connection negotiated in ICReq/ICResp.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Digests {
    /// Header digest (HDGST) enabled.
    pub header: bool,
    /// Data digest (DDGST) enabled.
    pub data: bool,
}

impl Digests {
    /// The ICReq/ICResp DGST byte.
    pub fn to_byte(self) -> u8 {
        u8::from(self.header) | (u8::from(self.data) << 1)
    }

    /// Decodes the ICReq/ICResp DGST byte (reserved bits ignored).
    pub fn from_byte(b: u8) -> Self {
        Digests {
            header: b & 1 != 0,
            data: b & 2 != 0,
        }
    }
}

/// CRC32C as NVMe/TCP uses it for header and data digests.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Initialize Connection Request: the first PDU a host sends on every connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IcReq {
    /// Protocol format version (must be 0).
    pub pfv: u16,
    /// Host PDU data alignment, in dwords, 0's based: the controller pads C2HData to it.
    pub hpda: u8,
    /// Digests the host wants.
    pub digests: Digests,
    /// Maximum outstanding R2Ts per command, 0's based.
    pub maxr2t: u32,
}

/// Initialize Connection Response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IcResp {
    /// Protocol format version (0).
    pub pfv: u16,
    /// Controller PDU data alignment, in dwords, 0's based (Linux requires 0).
    pub cpda: u8,
    /// Digests in force: must echo exactly what the ICReq asked.
    pub digests: Digests,
    /// Largest H2CData payload the controller accepts (multiple of 4, >= 4096).
    pub maxh2cdata: u32,
}

/// H2CTermReq or C2HTermReq body: why the sender is closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TermReq {
    /// Fatal error status.
    pub fes: u16,
    /// Fatal error information (e.g. byte offset of the bad header field).
    pub fei: u32,
    /// Copy of the offending PDU header (at most 128 bytes).
    pub data: Bytes,
}

/// A command capsule: the SQE plus in-capsule data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CapsuleCmd {
    /// The submission queue entry.
    pub sqe: Sqe,
    /// In-capsule data (empty when the command moves data by R2T/C2HData or has none).
    pub data: Bytes,
}

/// H2CData or C2HData: one chunk of a command's data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DataPdu {
    /// Command identifier of the command the data belongs to.
    pub cccid: u16,
    /// Transfer tag from the R2T (H2CData); reserved in C2HData.
    pub ttag: u16,
    /// Offset of this chunk within the command's data.
    pub offset: u32,
    /// LAST_PDU flag.
    pub last: bool,
    /// SUCCESS flag (C2HData only).
    pub success: bool,
    /// The data.
    pub data: Bytes,
}

/// Ready to Transfer: the controller asks for a range of a command's write data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct R2t {
    /// Command identifier.
    pub cccid: u16,
    /// Transfer tag the host echoes in its H2CData PDUs.
    pub ttag: u16,
    /// Offset of the requested range.
    pub offset: u32,
    /// Length of the requested range.
    pub length: u32,
}

/// Any NVMe/TCP PDU.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pdu {
    /// ICReq.
    IcReq(IcReq),
    /// ICResp.
    IcResp(IcResp),
    /// H2CTermReq.
    H2cTermReq(TermReq),
    /// C2HTermReq.
    C2hTermReq(TermReq),
    /// CapsuleCmd.
    CapsuleCmd(CapsuleCmd),
    /// CapsuleResp.
    CapsuleResp(Cqe),
    /// H2CData.
    H2cData(DataPdu),
    /// C2HData.
    C2hData(DataPdu),
    /// R2T.
    R2t(R2t),
}

impl Pdu {
    /// The PDU type code.
    pub fn type_code(&self) -> u8 {
        match self {
            Pdu::IcReq(_) => pdu_type::IC_REQ,
            Pdu::IcResp(_) => pdu_type::IC_RESP,
            Pdu::H2cTermReq(_) => pdu_type::H2C_TERM_REQ,
            Pdu::C2hTermReq(_) => pdu_type::C2H_TERM_REQ,
            Pdu::CapsuleCmd(_) => pdu_type::CAPSULE_CMD,
            Pdu::CapsuleResp(_) => pdu_type::CAPSULE_RESP,
            Pdu::H2cData(_) => pdu_type::H2C_DATA,
            Pdu::C2hData(_) => pdu_type::C2H_DATA,
            Pdu::R2t(_) => pdu_type::R2T,
        }
    }

    /// Whether a host sends this PDU type (as opposed to a controller).
    pub fn is_host_to_controller(&self) -> bool {
        matches!(
            self,
            Pdu::IcReq(_) | Pdu::H2cTermReq(_) | Pdu::CapsuleCmd(_) | Pdu::H2cData(_)
        )
    }
}

#[cfg(test)]
mod tests;
