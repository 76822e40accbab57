//! PDU serialisation: BHS, AHS, header digest, data segment with padding, data digest.
//!
//! The target encodes its responses here; initiator PDUs are encodable too so tests and a
//! future test initiator can produce exact wire bytes.

use bytes::{BufMut, BytesMut};

use super::bhs::{pad4, BHS_LEN, DIGEST_LEN, MAX_DATA_SEGMENT_LENGTH};
use super::digest::{crc32c_of, digest_bytes, Digests};
use super::error::EncodeError;
use super::Pdu;

impl Pdu {
    /// Number of bytes [`Pdu::encode`] will append with these digests.
    pub fn encoded_len(&self, digests: Digests) -> usize {
        let ahs = match self {
            Pdu::ScsiCommand(_) => self.to_raw_and_ahs().1.map_or(0, |a| a.len()),
            _ => 0,
        };
        let data = self.data().len();
        BHS_LEN
            + ahs
            + if digests.header { DIGEST_LEN } else { 0 }
            + pad4(data)
            + if digests.data && data > 0 {
                DIGEST_LEN
            } else {
                0
            }
    }

    /// Appends the wire form of this PDU to `out`, with the digests in force for the
    /// sending direction. Padding bytes are zero and covered by the data digest.
    pub fn encode(&self, digests: Digests, out: &mut BytesMut) -> Result<(), EncodeError> {
        let (mut raw, ahs) = self.to_raw_and_ahs();
        let ahs = match ahs {
            Some(ahs) => ahs,
            None => {
                let cdb_len = match self {
                    Pdu::ScsiCommand(c) => c.cdb.len(),
                    _ => 0,
                };
                return Err(EncodeError::CdbTooLong(cdb_len));
            }
        };
        let data = self.data();
        let data_len = u32::try_from(data.len())
            .ok()
            .filter(|len| *len <= MAX_DATA_SEGMENT_LENGTH)
            .ok_or(EncodeError::DataSegmentTooLong(data.len()))?;
        let ahs_words =
            u8::try_from(ahs.len() / 4).map_err(|_| EncodeError::CdbTooLong(ahs.len()))?;
        raw.opcode = self.opcode().as_u8();
        raw.total_ahs_len = ahs_words;
        raw.data_segment_len = data_len;

        out.reserve(self.encoded_len(digests));
        let bhs = raw.to_bytes();
        out.put_slice(&bhs);
        out.put_slice(&ahs);
        if digests.header {
            out.put_slice(&digest_bytes(crc32c_of(&[&bhs, &ahs])));
        }
        if !data.is_empty() {
            let padding = [0u8; 3];
            let pad = padding
                .get(..pad4(data.len()) - data.len())
                .unwrap_or_default();
            out.put_slice(data);
            out.put_slice(pad);
            if digests.data {
                out.put_slice(&digest_bytes(crc32c_of(&[data, pad])));
            }
        }
        Ok(())
    }
}
