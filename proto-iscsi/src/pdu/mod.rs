//! Sans-IO iSCSI PDU codec for a target (RFC 7143 section 11).
//!
//! * [`Pdu`] is every PDU kind as a typed struct, all re-exported here.
//! * [`PduDecoder`] frames a byte stream that arrives in arbitrary pieces: it reports how many
//!   more bytes it needs, or yields one PDU and the bytes consumed, or a [`FrameError`] whose
//!   [`FrameError::disposition`] tells the session to reject-and-continue or to close.
//! * [`Pdu::encode`] writes a PDU with the digests in force.
//! * [`reject::build_reject`] answers a bad PDU.
//!
//! Digests ([`Digests`]) and the data segment limits are settable at run time because they
//! are negotiated during login and take effect after it.

mod ahs;
mod bhs;
mod decode;
mod digest;
mod encode;
mod error;
mod fields;
mod initiator;
mod login_text;
mod reject;
mod target;

#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use bhs::{Lun, Opcode, BHS_LEN, MAX_DATA_SEGMENT_LENGTH, RESERVED_TAG};
pub use decode::{Decoded, PduDecoder, DEFAULT_LOGIN_DATA_SEGMENT_LIMIT};
pub use digest::Digests;
pub use error::reject_for;
pub use error::{DecodeError, Disposition, EncodeError, Fault, FrameError, Skipped};
pub use fields::{
    AsyncEvent, LogoutReason, LogoutResponseCode, ServiceResponse, SnackType, Stage, TaskAttribute,
    TmfFunction, TmfResponse,
};
pub use initiator::{DataOut, LogoutRequest, NopOut, ScsiCommand, SnackRequest, TaskMgmtRequest};
pub use login_text::{LoginRequest, LoginResponse, TextRequest, TextResponse};
pub use reject::{build_reject, Reject, RejectReason, StatusSeq};
pub use target::{
    AsyncMessage, DataIn, LogoutResponse, NopIn, R2t, ScsiResponse, TaskMgmtResponse,
};

use bhs::RawBhs;

/// Any iSCSI PDU, initiator- or target-originated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    /// NOP-Out (0x00).
    NopOut(NopOut),
    /// SCSI Command (0x01).
    ScsiCommand(ScsiCommand),
    /// Task Management Function Request (0x02).
    TaskMgmtRequest(TaskMgmtRequest),
    /// Login Request (0x03).
    LoginRequest(LoginRequest),
    /// Text Request (0x04).
    TextRequest(TextRequest),
    /// SCSI Data-Out (0x05).
    DataOut(DataOut),
    /// Logout Request (0x06).
    LogoutRequest(LogoutRequest),
    /// SNACK Request (0x10).
    SnackRequest(SnackRequest),
    /// NOP-In (0x20).
    NopIn(NopIn),
    /// SCSI Response (0x21).
    ScsiResponse(ScsiResponse),
    /// Task Management Function Response (0x22).
    TaskMgmtResponse(TaskMgmtResponse),
    /// Login Response (0x23).
    LoginResponse(LoginResponse),
    /// Text Response (0x24).
    TextResponse(TextResponse),
    /// SCSI Data-In (0x25).
    DataIn(DataIn),
    /// Logout Response (0x26).
    LogoutResponse(LogoutResponse),
    /// Ready To Transfer (0x31).
    R2t(R2t),
    /// Asynchronous Message (0x32).
    AsyncMessage(AsyncMessage),
    /// Reject (0x3f).
    Reject(Reject),
}

/// Opcodes whose PDUs never carry a data segment.
fn forbids_data(op: Opcode) -> bool {
    matches!(
        op,
        Opcode::TaskMgmtRequest
            | Opcode::LogoutRequest
            | Opcode::SnackRequest
            | Opcode::TaskMgmtResponse
            | Opcode::LogoutResponse
            | Opcode::R2t
    )
}

impl Pdu {
    /// The opcode of this PDU.
    pub fn opcode(&self) -> Opcode {
        match self {
            Pdu::NopOut(_) => Opcode::NopOut,
            Pdu::ScsiCommand(_) => Opcode::ScsiCommand,
            Pdu::TaskMgmtRequest(_) => Opcode::TaskMgmtRequest,
            Pdu::LoginRequest(_) => Opcode::LoginRequest,
            Pdu::TextRequest(_) => Opcode::TextRequest,
            Pdu::DataOut(_) => Opcode::DataOut,
            Pdu::LogoutRequest(_) => Opcode::LogoutRequest,
            Pdu::SnackRequest(_) => Opcode::SnackRequest,
            Pdu::NopIn(_) => Opcode::NopIn,
            Pdu::ScsiResponse(_) => Opcode::ScsiResponse,
            Pdu::TaskMgmtResponse(_) => Opcode::TaskMgmtResponse,
            Pdu::LoginResponse(_) => Opcode::LoginResponse,
            Pdu::TextResponse(_) => Opcode::TextResponse,
            Pdu::DataIn(_) => Opcode::DataIn,
            Pdu::LogoutResponse(_) => Opcode::LogoutResponse,
            Pdu::R2t(_) => Opcode::R2t,
            Pdu::AsyncMessage(_) => Opcode::AsyncMessage,
            Pdu::Reject(_) => Opcode::Reject,
        }
    }

    /// The Initiator Task Tag, for PDU kinds that carry one (not Asynchronous Message or
    /// Reject, whose ITT field is fixed at 0xffffffff); lets the session route a PDU to its
    /// task without matching on every kind.
    pub fn itt(&self) -> Option<u32> {
        Some(match self {
            Pdu::NopOut(p) => p.itt,
            Pdu::ScsiCommand(p) => p.itt,
            Pdu::TaskMgmtRequest(p) => p.itt,
            Pdu::LoginRequest(p) => p.itt,
            Pdu::TextRequest(p) => p.itt,
            Pdu::DataOut(p) => p.itt,
            Pdu::LogoutRequest(p) => p.itt,
            Pdu::SnackRequest(p) => p.itt,
            Pdu::NopIn(p) => p.itt,
            Pdu::ScsiResponse(p) => p.itt,
            Pdu::TaskMgmtResponse(p) => p.itt,
            Pdu::LoginResponse(p) => p.itt,
            Pdu::TextResponse(p) => p.itt,
            Pdu::DataIn(p) => p.itt,
            Pdu::LogoutResponse(p) => p.itt,
            Pdu::R2t(p) => p.itt,
            Pdu::AsyncMessage(_) | Pdu::Reject(_) => return None,
        })
    }

    /// The data segment (empty for PDU kinds without one).
    pub fn data(&self) -> &Bytes {
        static EMPTY: Bytes = Bytes::new();
        match self {
            Pdu::NopOut(p) => &p.data,
            Pdu::ScsiCommand(p) => &p.data,
            Pdu::LoginRequest(p) => &p.data,
            Pdu::TextRequest(p) => &p.data,
            Pdu::DataOut(p) => &p.data,
            Pdu::NopIn(p) => &p.data,
            Pdu::ScsiResponse(p) => &p.data,
            Pdu::LoginResponse(p) => &p.data,
            Pdu::TextResponse(p) => &p.data,
            Pdu::DataIn(p) => &p.data,
            Pdu::AsyncMessage(p) => &p.data,
            Pdu::Reject(p) => &p.header,
            Pdu::TaskMgmtRequest(_)
            | Pdu::LogoutRequest(_)
            | Pdu::SnackRequest(_)
            | Pdu::TaskMgmtResponse(_)
            | Pdu::LogoutResponse(_)
            | Pdu::R2t(_) => &EMPTY,
        }
    }

    /// The raw BHS (without lengths) and the AHS area (`None` when the CDB is too long).
    fn to_raw_and_ahs(&self) -> (RawBhs, Option<Vec<u8>>) {
        let raw = match self {
            Pdu::NopOut(p) => p.to_raw(),
            Pdu::ScsiCommand(p) => {
                let ext = p.cdb.get(16..).filter(|e| !e.is_empty());
                let area = ahs::encode(ext, p.bidi_read_length);
                let fits = area.len() <= ahs::MAX_AHS_BYTES;
                return (p.to_raw(), fits.then_some(area));
            }
            Pdu::TaskMgmtRequest(p) => p.to_raw(),
            Pdu::LoginRequest(p) => p.to_raw(),
            Pdu::TextRequest(p) => p.to_raw(),
            Pdu::DataOut(p) => p.to_raw(),
            Pdu::LogoutRequest(p) => p.to_raw(),
            Pdu::SnackRequest(p) => p.to_raw(),
            Pdu::NopIn(p) => p.to_raw(),
            Pdu::ScsiResponse(p) => p.to_raw(),
            Pdu::TaskMgmtResponse(p) => p.to_raw(),
            Pdu::LoginResponse(p) => p.to_raw(),
            Pdu::TextResponse(p) => p.to_raw(),
            Pdu::DataIn(p) => p.to_raw(),
            Pdu::LogoutResponse(p) => p.to_raw(),
            Pdu::R2t(p) => p.to_raw(),
            Pdu::AsyncMessage(p) => p.to_raw(),
            Pdu::Reject(p) => p.to_raw(),
        };
        (raw, Some(Vec::new()))
    }

    /// Builds a PDU from a framed, digest-checked header, its AHS area and its data segment.
    pub(crate) fn from_frame(
        raw: &RawBhs,
        ahs_area: &[u8],
        data: Bytes,
    ) -> Result<Self, DecodeError> {
        let op = Opcode::from_u8(raw.opcode).ok_or(DecodeError::UnknownOpcode(raw.opcode))?;
        if op != Opcode::ScsiCommand && raw.total_ahs_len != 0 {
            return Err(DecodeError::UnexpectedAhs {
                opcode: raw.opcode,
                words: raw.total_ahs_len,
            });
        }
        if forbids_data(op) && raw.data_segment_len != 0 {
            return Err(DecodeError::UnexpectedDataSegment {
                opcode: raw.opcode,
                length: raw.data_segment_len,
            });
        }
        Ok(match op {
            Opcode::NopOut => Pdu::NopOut(NopOut::from_raw(raw, data)),
            Opcode::ScsiCommand => {
                let parsed = ahs::parse(ahs_area)?;
                let bhs_cdb = ScsiCommand::bhs_cdb(raw);
                let cdb = match parsed.extended_cdb {
                    Some(ext) => {
                        let mut all = Vec::with_capacity(16 + ext.len());
                        all.extend_from_slice(&bhs_cdb);
                        all.extend_from_slice(&ext);
                        Bytes::from(all)
                    }
                    None => Bytes::copy_from_slice(&bhs_cdb),
                };
                Pdu::ScsiCommand(ScsiCommand::from_raw(
                    raw,
                    cdb,
                    parsed.bidi_read_length,
                    data,
                )?)
            }
            Opcode::TaskMgmtRequest => Pdu::TaskMgmtRequest(TaskMgmtRequest::from_raw(raw)),
            Opcode::LoginRequest => Pdu::LoginRequest(LoginRequest::from_raw(raw, data)?),
            Opcode::TextRequest => Pdu::TextRequest(TextRequest::from_raw(raw, data)),
            Opcode::DataOut => Pdu::DataOut(DataOut::from_raw(raw, data)),
            Opcode::LogoutRequest => Pdu::LogoutRequest(LogoutRequest::from_raw(raw)?),
            Opcode::SnackRequest => Pdu::SnackRequest(SnackRequest::from_raw(raw)),
            Opcode::NopIn => Pdu::NopIn(NopIn::from_raw(raw, data)),
            Opcode::ScsiResponse => Pdu::ScsiResponse(ScsiResponse::from_raw(raw, data)),
            Opcode::TaskMgmtResponse => Pdu::TaskMgmtResponse(TaskMgmtResponse::from_raw(raw)),
            Opcode::LoginResponse => Pdu::LoginResponse(LoginResponse::from_raw(raw, data)?),
            Opcode::TextResponse => Pdu::TextResponse(TextResponse::from_raw(raw, data)),
            Opcode::DataIn => Pdu::DataIn(DataIn::from_raw(raw, data)),
            Opcode::LogoutResponse => Pdu::LogoutResponse(LogoutResponse::from_raw(raw)),
            Opcode::R2t => Pdu::R2t(R2t::from_raw(raw)),
            Opcode::AsyncMessage => Pdu::AsyncMessage(AsyncMessage::from_raw(raw, data)),
            Opcode::Reject => Pdu::Reject(Reject::from_raw(raw, data)),
        })
    }
}

/// Fuzzing entry point: runs the stream decoder over `input` without digests and with both
/// digests, skipping rejectable PDUs as a session would, and checks that every decoded PDU
/// re-encodes to bytes that decode to the same PDU. Panics only on a codec bug.
#[cfg(any(test, feature = "fuzz"))]
pub fn fuzz_decode(input: &[u8]) {
    for digests in [Digests::NONE, Digests::BOTH] {
        let mut decoder = PduDecoder::new();
        decoder.set_digests(digests);
        decoder.set_max_recv_data_segment_length(MAX_DATA_SEGMENT_LENGTH);
        let bytes = Bytes::copy_from_slice(input);
        let mut offset = 0;
        while offset < bytes.len() {
            let rest = bytes.slice(offset..);
            match decoder.decode_bytes(&rest) {
                Ok(Decoded::NeedMore { at_least }) => {
                    assert!(at_least > 0, "NeedMore must ask for at least one byte");
                    break;
                }
                Ok(Decoded::Complete { pdu, consumed }) => {
                    assert!(consumed > 0 && consumed <= rest.len());
                    let mut out = bytes::BytesMut::new();
                    pdu.encode(digests, &mut out)
                        .expect("a decoded PDU must re-encode");
                    match decoder.decode_bytes(&out.freeze()) {
                        Ok(Decoded::Complete { pdu: again, .. }) => assert_eq!(again, pdu),
                        other => panic!("re-encoded PDU did not decode: {other:?}"),
                    }
                    offset += consumed;
                }
                Err(err) => match err.skipped {
                    Some(skipped) if err.disposition() != Disposition::Close => {
                        assert!(skipped.consumed > 0 && skipped.consumed <= rest.len());
                        assert_eq!(skipped.header.len(), BHS_LEN);
                        offset += skipped.consumed;
                    }
                    _ => break,
                },
            }
        }
    }
}
