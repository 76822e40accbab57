//! Typed codec errors and what the session must do about each one.
//!
//! A decode error is always the peer's fault (or the wire's); what matters to the session is
//! whether the byte stream is still framed. If it is, the offending PDU is skipped and answered
//! with a Reject; if not (header digest failed, or a length cannot be trusted or buffered),
//! the connection must be dropped. [`FrameError::disposition`] gives that decision.

use bytes::Bytes;
use thiserror::Error;

use super::reject::{build_reject, Reject, RejectReason, StatusSeq};

/// What the session should do with a PDU that failed to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Skip the PDU, answer it with a Reject PDU carrying this reason, and keep the connection.
    Reject(RejectReason),
    /// Stream framing is lost or cannot be trusted: close the connection.
    Close,
}

/// Who is to blame for a decode error, for logging and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The peer broke a rule of RFC 7143.
    PeerViolation,
    /// The peer used something valid that this implementation does not support.
    Unsupported,
    /// Bits changed on the way (a CRC32C digest did not match).
    Corruption,
}

/// Why a PDU could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The opcode is unassigned or vendor-specific.
    #[error("unsupported opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// A defined field holds a value RFC 7143 reserves; receipt is a protocol error.
    #[error("reserved value {value:#x} in {field}")]
    ReservedValue {
        /// Name of the field.
        field: &'static str,
        /// The value received.
        value: u32,
    },
    /// The DataSegmentLength exceeds what this receiver declared it accepts.
    #[error("data segment of {length} bytes exceeds the limit of {limit}")]
    DataSegmentTooLong {
        /// DataSegmentLength from the header.
        length: u32,
        /// The limit in force (MaxRecvDataSegmentLength, or the login limit).
        limit: u32,
    },
    /// A PDU kind that never carries data arrived with a data segment.
    #[error("{opcode:#04x} PDU carries a {length}-byte data segment it must not have")]
    UnexpectedDataSegment {
        /// Opcode of the PDU.
        opcode: u8,
        /// DataSegmentLength from the header.
        length: u32,
    },
    /// A PDU kind that never carries AHS arrived with TotalAHSLength != 0.
    #[error("{opcode:#04x} PDU carries {words} AHS words it must not have")]
    UnexpectedAhs {
        /// Opcode of the PDU.
        opcode: u8,
        /// TotalAHSLength from the header.
        words: u8,
    },
    /// The Additional Header Segments are malformed.
    #[error("malformed AHS: {0}")]
    BadAhs(&'static str),
    /// The header digest did not match: the header, lengths included, cannot be trusted.
    #[error("header digest mismatch: received {received:#010x}, computed {computed:#010x}")]
    HeaderDigest {
        /// Digest on the wire.
        received: u32,
        /// Digest computed over BHS and AHS.
        computed: u32,
    },
    /// The data digest did not match: the header is good, the data is not.
    #[error("data digest mismatch: received {received:#010x}, computed {computed:#010x}")]
    DataDigest {
        /// Digest on the wire.
        received: u32,
        /// Digest computed over data and padding.
        computed: u32,
    },
}

impl DecodeError {
    /// What RFC 7143 asks the receiver to do about this error, assuming the PDU's extent in
    /// the stream is known (see [`FrameError::disposition`] for the stream-level answer).
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::UnknownOpcode(_) => Disposition::Reject(RejectReason::CommandNotSupported),
            Self::ReservedValue { .. }
            | Self::UnexpectedDataSegment { .. }
            | Self::UnexpectedAhs { .. }
            | Self::BadAhs(_) => Disposition::Reject(RejectReason::ProtocolError),
            Self::DataDigest { .. } => Disposition::Reject(RejectReason::DataDigestError),
            // RFC 7143 section 7.8: after a header digest error the PDU's length is unknown,
            // so the connection is lost. An over-long segment is never buffered, so it cannot
            // be skipped either.
            Self::HeaderDigest { .. } | Self::DataSegmentTooLong { .. } => Disposition::Close,
        }
    }

    /// Who is at fault.
    pub fn fault(&self) -> Fault {
        match self {
            Self::UnknownOpcode(_) => Fault::Unsupported,
            Self::HeaderDigest { .. } | Self::DataDigest { .. } => Fault::Corruption,
            _ => Fault::PeerViolation,
        }
    }
}

/// The error for a reserved value in a defined field.
pub(crate) fn reserved(field: &'static str, value: u8) -> DecodeError {
    DecodeError::ReservedValue {
        field,
        value: u32::from(value),
    }
}

/// The extent and header of a PDU that decoded badly but can be skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Bytes of the stream the bad PDU occupies (header, AHS, digests, data, padding).
    pub consumed: usize,
    /// The 48-byte BHS of the bad PDU, to be returned in the Reject's data segment.
    pub header: Bytes,
}

/// Error returned by the stream decoder: the fault plus, when the stream is still framed,
/// how to step over the bad PDU.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{error}")]
pub struct FrameError {
    /// What went wrong.
    pub error: DecodeError,
    /// Present when the bad PDU was fully received and can be skipped.
    pub skipped: Option<Skipped>,
}

impl FrameError {
    /// An error after which the stream is no longer framed.
    pub(crate) fn fatal(error: DecodeError) -> Self {
        Self {
            error,
            skipped: None,
        }
    }

    /// An error about a fully received PDU of `consumed` bytes with the given BHS.
    pub(crate) fn skippable(error: DecodeError, consumed: usize, header: Bytes) -> Self {
        Self {
            error,
            skipped: Some(Skipped { consumed, header }),
        }
    }

    /// What the session must do: reject and continue only if the bad PDU can be skipped and
    /// the error is rejectable; otherwise close the connection.
    ///
    /// This is the full-feature-phase answer. During login RFC 7143 has no Reject: the login
    /// state machine should answer a rejectable error with a Login Response carrying an
    /// initiator-error status (class 2) and then close.
    pub fn disposition(&self) -> Disposition {
        match (&self.skipped, self.error.disposition()) {
            (Some(_), d @ Disposition::Reject(_)) => d,
            _ => Disposition::Close,
        }
    }
}

/// Why a PDU could not be encoded; always a bug or misuse on our side, never the peer's.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The data segment does not fit the 24-bit DataSegmentLength.
    #[error("data segment of {0} bytes does not fit DataSegmentLength")]
    DataSegmentTooLong(usize),
    /// The CDB is too long for the 255-word TotalAHSLength budget.
    #[error("CDB of {0} bytes is too long for an extended CDB AHS")]
    CdbTooLong(usize),
}
/// Builds the Reject for a stream decode error whose disposition is `Reject`; `None` when the
/// connection must be closed instead.
pub fn reject_for(error: &FrameError, seq: StatusSeq) -> Option<Reject> {
    match (error.disposition(), &error.skipped) {
        (Disposition::Reject(reason), Some(skipped)) => {
            Some(build_reject(reason, &skipped.header, seq))
        }
        _ => None,
    }
}
