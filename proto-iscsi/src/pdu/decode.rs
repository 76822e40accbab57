//! Stream framing: finds PDU boundaries in a byte stream that arrives in arbitrary pieces,
//! checks digests and length limits, and hands complete PDUs to the typed decoders.
//!
//! The decoder holds no buffer of its own (sans-IO): the caller keeps the received bytes and
//! asks again when more arrive. It never allocates from a length it has not checked: the
//! header area is bounded by the format (48 + 1020 + 4 bytes), and DataSegmentLength is
//! compared with the negotiated limit before anything of that size is touched.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::bhs::{pad4, Opcode, RawBhs, BHS_LEN, DIGEST_LEN};
use super::digest::{crc32c_of, read_digest, Digests};
use super::error::{DecodeError, FrameError};
use super::Pdu;

/// Data segment limit for Login Request/Response PDUs: RFC 7143 limits login PDU data
/// segments to 8192 bytes, independent of MaxRecvDataSegmentLength, which is only being
/// negotiated while they flow.
pub const DEFAULT_LOGIN_DATA_SEGMENT_LIMIT: u32 = 8192;

/// The MaxRecvDataSegmentLength default of RFC 7143 section 13.12, in force until negotiated.
const DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH: u32 = 8192;

/// Outcome of one decode attempt that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The buffer holds only part of a PDU; at least this many more bytes are needed.
    NeedMore {
        /// Minimum number of additional bytes before another attempt can progress.
        at_least: usize,
    },
    /// One complete PDU was decoded from the front of the buffer.
    Complete {
        /// The PDU.
        pdu: Pdu,
        /// Bytes it occupied (header, AHS, digests, data, padding).
        consumed: usize,
    },
}

/// Receive-side PDU framer for one connection direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PduDecoder {
    digests: Digests,
    max_recv_data_segment_length: u32,
    login_data_segment_limit: u32,
}

impl Default for PduDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the parts of one fully buffered PDU lie.
struct Layout {
    raw: RawBhs,
    ahs: Range<usize>,
    data: Range<usize>,
    total: usize,
}

enum Framed {
    NeedMore(usize),
    Ready(Layout),
}

impl PduDecoder {
    /// A decoder with no digests and the RFC default limits (8192 bytes).
    pub fn new() -> Self {
        Self {
            digests: Digests::NONE,
            max_recv_data_segment_length: DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH,
            login_data_segment_limit: DEFAULT_LOGIN_DATA_SEGMENT_LIMIT,
        }
    }

    /// Switches digests, e.g. after the final Login Response.
    pub fn set_digests(&mut self, digests: Digests) {
        self.digests = digests;
    }

    /// The digests currently expected.
    pub fn digests(&self) -> Digests {
        self.digests
    }

    /// Sets the MaxRecvDataSegmentLength this side declared; applies to every PDU but Login.
    pub fn set_max_recv_data_segment_length(&mut self, limit: u32) {
        self.max_recv_data_segment_length = limit;
    }

    /// Sets the data segment limit for Login Request/Response PDUs (default 8192).
    pub fn set_login_data_segment_limit(&mut self, limit: u32) {
        self.login_data_segment_limit = limit;
    }

    fn limit_for(&self, opcode: u8) -> u32 {
        match Opcode::from_u8(opcode) {
            Some(Opcode::LoginRequest | Opcode::LoginResponse) => self.login_data_segment_limit,
            _ => self.max_recv_data_segment_length,
        }
    }

    /// Finds the extent of the first PDU in `buf`, checking header digest and length limit.
    fn frame(&self, buf: &[u8]) -> Result<Framed, FrameError> {
        let Some(raw) = RawBhs::parse(buf) else {
            return Ok(Framed::NeedMore(BHS_LEN - buf.len()));
        };
        let ahs_end = BHS_LEN + usize::from(raw.total_ahs_len) * 4;
        let header_end = ahs_end + if self.digests.header { DIGEST_LEN } else { 0 };
        if buf.len() < header_end {
            return Ok(Framed::NeedMore(header_end - buf.len()));
        }
        if self.digests.header {
            let covered = buf.get(..ahs_end).unwrap_or_default();
            let computed = crc32c_of(&[covered]);
            let received = buf
                .get(ahs_end..)
                .and_then(read_digest)
                .unwrap_or(!computed);
            if received != computed {
                return Err(FrameError::fatal(DecodeError::HeaderDigest {
                    received,
                    computed,
                }));
            }
        }
        let limit = self.limit_for(raw.opcode);
        if raw.data_segment_len > limit {
            return Err(FrameError::fatal(DecodeError::DataSegmentTooLong {
                length: raw.data_segment_len,
                limit,
            }));
        }
        // Bounded by the limit check above (and by the 24-bit field).
        let data_len = raw.data_segment_len as usize;
        let padded_end = header_end + pad4(data_len);
        let data_digest = self.digests.data && data_len > 0;
        let total = padded_end + if data_digest { DIGEST_LEN } else { 0 };
        if buf.len() < total {
            return Ok(Framed::NeedMore(total - buf.len()));
        }
        let layout = Layout {
            raw,
            ahs: BHS_LEN..ahs_end,
            data: header_end..header_end + data_len,
            total,
        };
        if data_digest {
            let covered = buf.get(header_end..padded_end).unwrap_or_default();
            let computed = crc32c_of(&[covered]);
            let received = buf
                .get(padded_end..)
                .and_then(read_digest)
                .unwrap_or(!computed);
            if received != computed {
                return Err(skippable(
                    DecodeError::DataDigest { received, computed },
                    buf,
                    total,
                ));
            }
        }
        Ok(Framed::Ready(layout))
    }

    /// Core of every entry point; `slice` turns a range of `buf` into the data segment.
    fn decode_with(
        &self,
        buf: &[u8],
        slice: impl FnOnce(Range<usize>) -> Bytes,
    ) -> Result<Decoded, FrameError> {
        let layout = match self.frame(buf)? {
            Framed::NeedMore(at_least) => return Ok(Decoded::NeedMore { at_least }),
            Framed::Ready(layout) => layout,
        };
        let ahs = buf.get(layout.ahs.clone()).unwrap_or_default();
        let data = slice(layout.data.clone());
        match Pdu::from_frame(&layout.raw, ahs, data) {
            Ok(pdu) => Ok(Decoded::Complete {
                pdu,
                consumed: layout.total,
            }),
            Err(error) => Err(skippable(error, buf, layout.total)),
        }
    }

    /// Decodes the first PDU of `buf`, copying its data segment.
    pub fn decode(&self, buf: &[u8]) -> Result<Decoded, FrameError> {
        self.decode_with(buf, |range| {
            Bytes::copy_from_slice(buf.get(range).unwrap_or_default())
        })
    }

    /// Decodes the first PDU of `buf`; the data segment shares `buf`'s memory (no copy).
    pub fn decode_bytes(&self, buf: &Bytes) -> Result<Decoded, FrameError> {
        self.decode_with(buf, |range| buf.slice(range))
    }

    /// Decodes the first PDU of a receive buffer and removes its bytes from the buffer
    /// without copying the data segment. Returns `Ok(None)` when more bytes are needed. On a
    /// skippable error the bad PDU's bytes are removed too (see [`FrameError::skipped`]); on
    /// a fatal one the buffer is left as it was.
    pub fn decode_from(&self, buf: &mut BytesMut) -> Result<Option<Pdu>, FrameError> {
        let layout = match self.frame(buf) {
            Ok(Framed::NeedMore(_)) => return Ok(None),
            Ok(Framed::Ready(layout)) => layout,
            Err(err) => {
                if let Some(skipped) = &err.skipped {
                    let _ = buf.split_to(skipped.consumed.min(buf.len()));
                }
                return Err(err);
            }
        };
        let frame = buf.split_to(layout.total).freeze();
        let ahs = frame.get(layout.ahs.clone()).unwrap_or_default();
        let data = frame.slice(layout.data.clone());
        Pdu::from_frame(&layout.raw, ahs, data)
            .map(Some)
            .map_err(|error| FrameError::skippable(error, layout.total, frame.slice(..BHS_LEN)))
    }
}

/// A FrameError for a fully received PDU of `total` bytes at the front of `buf`.
fn skippable(error: DecodeError, buf: &[u8], total: usize) -> FrameError {
    let header = Bytes::copy_from_slice(buf.get(..BHS_LEN).unwrap_or_default());
    FrameError::skippable(error, total, header)
}
