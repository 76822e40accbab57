//! Typed PDU-level errors and what each one obliges the receiver to do.
//!
//! NVMe/TCP answers most transport errors with a terminate-connection request carrying a
//! fatal error status (FES) and information (FEI); a data digest error only fails the one
//! command. [`PduError::action`] encodes that decision so the transport never guesses.

/// Fatal error status codes of H2CTermReq/C2HTermReq (NVMe/TCP 1.0, figure 17).
pub struct Fes;

impl Fes {
    /// A PDU header field is invalid; FEI is the byte offset of the field.
    pub const INVALID_HEADER_FIELD: u16 = 0x01;
    /// A PDU arrived that is not valid in the connection's current state.
    pub const PDU_SEQUENCE_ERROR: u16 = 0x02;
    /// The header digest did not match.
    pub const HEADER_DIGEST_ERROR: u16 = 0x03;
    /// Data offset or length outside the command's transfer.
    pub const DATA_OUT_OF_RANGE: u16 = 0x04;
    /// More H2C data or R2Ts than negotiated (R2T limit / data limit exceeded).
    pub const DATA_LIMIT_EXCEEDED: u16 = 0x05;
    /// A parameter value is not supported; FEI is the byte offset of the field.
    pub const UNSUPPORTED_PARAMETER: u16 = 0x06;
}

/// What the receiver of a bad PDU must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorAction {
    /// Send a terminate-connection request with this FES/FEI, then close the connection.
    Terminate {
        /// Fatal error status.
        fes: u16,
        /// Fatal error information.
        fei: u32,
    },
    /// Close the connection without sending anything (the peer already terminated).
    Close,
    /// Fail command `cid` with a transient transport error, skip `consumed` bytes, continue.
    FailCommand {
        /// Command identifier of the affected command.
        cid: u16,
        /// Bytes of the input the bad PDU occupied.
        consumed: usize,
    },
}

/// A PDU the peer sent violates the protocol (or uses an unsupported feature).
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PduError {
    /// The PDU type code is not defined.
    #[error("unknown PDU type {0:#04x}")]
    UnknownType(u8),
    /// HLEN does not match the PDU type.
    #[error("PDU type {pdu_type:#04x}: invalid HLEN {hlen}")]
    BadHlen {
        /// PDU type.
        pdu_type: u8,
        /// HLEN received.
        hlen: u8,
    },
    /// PLEN is inconsistent with HLEN/PDO/digests.
    #[error("PDU type {pdu_type:#04x}: invalid PLEN {plen}")]
    BadPlen {
        /// PDU type.
        pdu_type: u8,
        /// PLEN received.
        plen: u32,
    },
    /// PLEN exceeds what this connection accepts; checked before any allocation.
    #[error("PLEN {plen} exceeds the limit {max}")]
    PlenTooLarge {
        /// PLEN received.
        plen: u32,
        /// Configured limit.
        max: u32,
    },
    /// PDO points inside the header or past the data.
    #[error("PDU type {pdu_type:#04x}: invalid PDO {pdo}")]
    BadPdo {
        /// PDU type.
        pdu_type: u8,
        /// PDO received.
        pdo: u8,
    },
    /// HDGSTF/DDGSTF disagree with what the connection negotiated.
    #[error("digest flags {flags:#04x} disagree with the negotiated digests")]
    DigestFlags {
        /// Flags byte received.
        flags: u8,
    },
    /// The header digest does not match the header.
    #[error("header digest mismatch: expected {expected:#010x}, received {received:#010x}")]
    HeaderDigest {
        /// CRC32C computed over the header.
        expected: u32,
        /// Digest received.
        received: u32,
    },
    /// The data digest does not match the data; only command `cid` fails.
    #[error("data digest mismatch for command {cid}")]
    DataDigest {
        /// Command identifier of the PDU.
        cid: u16,
        /// Bytes the PDU occupied.
        consumed: usize,
    },
    /// A data PDU's DATAL disagrees with the data it carries.
    #[error("DATAL {datal} disagrees with {actual} data bytes")]
    DataLength {
        /// DATAL field.
        datal: u32,
        /// Bytes actually carried.
        actual: usize,
    },
    /// A terminate request is longer than 152 bytes.
    #[error("terminate request PLEN {0} too large")]
    TermReqTooLong(u32),
    /// ICReq/ICResp asks for a protocol version we do not speak.
    #[error("unsupported PDU format version {0}")]
    UnsupportedPfv(u16),
    /// An ICReq field has an unsupported value; `fei` is its byte offset.
    #[error("unsupported parameter at offset {fei}")]
    UnsupportedParameter {
        /// Byte offset of the field.
        fei: u32,
    },
    /// A valid PDU arrived in a state where it is not allowed.
    #[error("PDU type {pdu_type:#04x} not allowed now: {why}")]
    Sequence {
        /// PDU type.
        pdu_type: u8,
        /// Which rule was broken.
        why: &'static str,
    },
    /// A PDU travelling in the wrong direction (e.g. a host sending C2HData).
    #[error("PDU type {0:#04x} is not valid in this direction")]
    WrongDirection(u8),
    /// H2CData outside the range the R2T asked for, or for an unknown transfer.
    #[error("H2CData for command {cid} out of range")]
    DataOutOfRange {
        /// Command identifier.
        cid: u16,
    },
    /// H2CData larger than MAXH2CDATA.
    #[error("H2CData of {len} bytes exceeds MAXH2CDATA {max}")]
    DataLimitExceeded {
        /// Data bytes received.
        len: usize,
        /// Advertised MAXH2CDATA.
        max: u32,
    },
    /// The peer sent a terminate request.
    #[error("peer terminated the connection (FES {fes:#06x})")]
    PeerTerminated {
        /// FES the peer sent.
        fes: u16,
    },
}

impl PduError {
    /// What the receiver must do about this error.
    pub fn action(&self) -> ErrorAction {
        let term = |fes, fei| ErrorAction::Terminate { fes, fei };
        match *self {
            PduError::UnknownType(_) | PduError::WrongDirection(_) => {
                term(Fes::INVALID_HEADER_FIELD, 0)
            }
            PduError::DigestFlags { .. } => term(Fes::INVALID_HEADER_FIELD, 1),
            PduError::BadHlen { .. } => term(Fes::INVALID_HEADER_FIELD, 2),
            PduError::BadPdo { .. } => term(Fes::INVALID_HEADER_FIELD, 3),
            PduError::BadPlen { .. } | PduError::TermReqTooLong(_) => {
                term(Fes::INVALID_HEADER_FIELD, 4)
            }
            PduError::PlenTooLarge { .. } => term(Fes::DATA_LIMIT_EXCEEDED, 4),
            PduError::DataLength { .. } => term(Fes::INVALID_HEADER_FIELD, 16),
            PduError::HeaderDigest { .. } => term(Fes::HEADER_DIGEST_ERROR, 0),
            PduError::UnsupportedPfv(_) => term(Fes::UNSUPPORTED_PARAMETER, 8),
            PduError::UnsupportedParameter { fei } => term(Fes::UNSUPPORTED_PARAMETER, fei),
            PduError::Sequence { .. } => term(Fes::PDU_SEQUENCE_ERROR, 0),
            PduError::DataOutOfRange { .. } => term(Fes::DATA_OUT_OF_RANGE, 12),
            PduError::DataLimitExceeded { .. } => term(Fes::DATA_LIMIT_EXCEEDED, 16),
            PduError::DataDigest { cid, consumed } => ErrorAction::FailCommand { cid, consumed },
            PduError::PeerTerminated { .. } => ErrorAction::Close,
        }
    }
}
