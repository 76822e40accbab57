//! Reject reasons (RFC 7143 section 11.17.1) and the helper that turns a bad PDU into the
//! Reject PDU answering it, so the session never hand-assembles one.

use bytes::Bytes;

use super::bhs::BHS_LEN;
use super::bhs::{RawBhs, FINAL_BIT, RESERVED_TAG, W24, W28, W32, W36};

/// Reason code of a Reject PDU (RFC 7143 section 11.17.1; IANA "iSCSI Reject Reason Codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// 0x01: reserved.
    Reserved,
    /// 0x02: data (payload) digest error.
    DataDigestError,
    /// 0x03: SNACK reject.
    SnackReject,
    /// 0x04: protocol error (e.g., SNACK for a status already acknowledged, reserved values).
    ProtocolError,
    /// 0x05: command not supported.
    CommandNotSupported,
    /// 0x06: immediate command reject, too many immediate commands.
    ImmediateCommandReject,
    /// 0x07: task in progress.
    TaskInProgress,
    /// 0x08: invalid data ack.
    InvalidDataAck,
    /// 0x09: invalid PDU field.
    InvalidPduField,
    /// 0x0a: long op reject, cannot generate a Target Transfer Tag, out of resources.
    LongOperationReject,
    /// 0x0b: deprecated (was "negotiation reset" in RFC 3720).
    Deprecated,
    /// 0x0c: waiting for logout.
    WaitingForLogout,
    /// Any unassigned value, kept so a received Reject can be reported.
    Other(u8),
}

impl RejectReason {
    /// Maps the wire value; unassigned values become `Other`.
    pub fn from_u8(value: u8) -> Self {
        match value {
            0x01 => Self::Reserved,
            0x02 => Self::DataDigestError,
            0x03 => Self::SnackReject,
            0x04 => Self::ProtocolError,
            0x05 => Self::CommandNotSupported,
            0x06 => Self::ImmediateCommandReject,
            0x07 => Self::TaskInProgress,
            0x08 => Self::InvalidDataAck,
            0x09 => Self::InvalidPduField,
            0x0a => Self::LongOperationReject,
            0x0b => Self::Deprecated,
            0x0c => Self::WaitingForLogout,
            other => Self::Other(other),
        }
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Reserved => 0x01,
            Self::DataDigestError => 0x02,
            Self::SnackReject => 0x03,
            Self::ProtocolError => 0x04,
            Self::CommandNotSupported => 0x05,
            Self::ImmediateCommandReject => 0x06,
            Self::TaskInProgress => 0x07,
            Self::InvalidDataAck => 0x08,
            Self::InvalidPduField => 0x09,
            Self::LongOperationReject => 0x0a,
            Self::Deprecated => 0x0b,
            Self::WaitingForLogout => 0x0c,
            Self::Other(other) => other,
        }
    }
}

/// The sequence numbers a target stamps on every PDU it sends, gathered so helpers that
/// build responses take one argument instead of three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusSeq {
    /// StatSN to carry (a Reject does not advance StatSN).
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
}

/// Builds the Reject PDU answering a PDU whose header is `offending_header`.
///
/// Only the 48-byte BHS is returned to the initiator (what Linux LIO also sends); longer
/// input is truncated and shorter input is zero-padded, so the data segment is always a
/// whole BHS the initiator can match against its outstanding PDUs.
pub fn build_reject(reason: RejectReason, offending_header: &[u8], seq: StatusSeq) -> Reject {
    let mut header = [0u8; BHS_LEN];
    for (dst, src) in header.iter_mut().zip(offending_header) {
        *dst = *src;
    }
    Reject {
        reason,
        stat_sn: seq.stat_sn,
        exp_cmd_sn: seq.exp_cmd_sn,
        max_cmd_sn: seq.max_cmd_sn,
        data_sn_or_r2t_sn: 0,
        header: Bytes::copy_from_slice(&header),
    }
}

/// Reject (opcode 0x3f): the target refuses a PDU, returning its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Why.
    pub reason: RejectReason,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSN/R2TSN (only for rejected SNACKs), else reserved.
    pub data_sn_or_r2t_sn: u32,
    /// The complete header of the rejected PDU (the data segment).
    pub header: Bytes,
}

impl Reject {
    pub(crate) fn from_raw(raw: &RawBhs, header: Bytes) -> Self {
        Self {
            reason: RejectReason::from_u8(raw.b2),
            stat_sn: raw.words[W24],
            exp_cmd_sn: raw.words[W28],
            max_cmd_sn: raw.words[W32],
            data_sn_or_r2t_sn: raw.words[W36],
            header,
        }
    }

    pub(crate) fn to_raw(&self) -> RawBhs {
        RawBhs {
            flags: FINAL_BIT,
            b2: self.reason.as_u8(),
            itt: RESERVED_TAG,
            words: [
                0,
                self.stat_sn,
                self.exp_cmd_sn,
                self.max_cmd_sn,
                self.data_sn_or_r2t_sn,
                0,
                0,
            ],
            ..RawBhs::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_match_rfc_7143() {
        let table = [
            (0x01, RejectReason::Reserved),
            (0x02, RejectReason::DataDigestError),
            (0x03, RejectReason::SnackReject),
            (0x04, RejectReason::ProtocolError),
            (0x05, RejectReason::CommandNotSupported),
            (0x06, RejectReason::ImmediateCommandReject),
            (0x07, RejectReason::TaskInProgress),
            (0x08, RejectReason::InvalidDataAck),
            (0x09, RejectReason::InvalidPduField),
            (0x0a, RejectReason::LongOperationReject),
            (0x0b, RejectReason::Deprecated),
            (0x0c, RejectReason::WaitingForLogout),
        ];
        for (value, reason) in table {
            assert_eq!(RejectReason::from_u8(value), reason);
            assert_eq!(reason.as_u8(), value);
        }
        assert_eq!(RejectReason::from_u8(0x0d), RejectReason::Other(0x0d));
    }

    #[test]
    fn build_reject_pads_and_truncates_header() {
        let seq = StatusSeq {
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 3,
        };
        let r = build_reject(RejectReason::ProtocolError, &[0xAB; 60], seq);
        assert_eq!(r.header.as_ref(), &[0xAB; 48][..]);
        let r = build_reject(RejectReason::ProtocolError, &[0xCD; 4], seq);
        assert_eq!(&r.header[..4], &[0xCD; 4]);
        assert!(r.header[4..].iter().all(|b| *b == 0));
        assert_eq!((r.stat_sn, r.exp_cmd_sn, r.max_cmd_sn), (1, 2, 3));
    }
}
