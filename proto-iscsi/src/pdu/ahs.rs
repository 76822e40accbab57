//! Additional Header Segments (RFC 7143 section 11.2.2): the extended CDB AHS (type 1), which
//! carries CDB bytes beyond the 16 that fit in the BHS, and the bidirectional expected read
//! data length AHS (type 2).
//!
//! Each AHS is `AHSLength (2) | AHSType (1) | AHS-Specific (AHSLength bytes)`, padded to a
//! multiple of 4; AHSLength counts the AHS-Specific bytes including their first (reserved) byte.

use super::bhs::pad4;
use super::error::DecodeError;

/// AHSType of the extended CDB AHS.
pub(crate) const AHS_EXTENDED_CDB: u8 = 1;
/// AHSType of the bidirectional expected read data length AHS.
pub(crate) const AHS_BIDI_READ_LENGTH: u8 = 2;
/// The largest AHS area TotalAHSLength can describe (255 four-byte words).
pub(crate) const MAX_AHS_BYTES: usize = 255 * 4;

/// The AHS contents a SCSI Command may carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CommandAhs {
    /// CDB bytes after the first 16.
    pub extended_cdb: Option<Vec<u8>>,
    /// Expected read data transfer length of a bidirectional command.
    pub bidi_read_length: Option<u32>,
}

/// Parses the AHS area (exactly TotalAHSLength * 4 bytes).
pub(crate) fn parse(mut area: &[u8]) -> Result<CommandAhs, DecodeError> {
    let mut ahs = CommandAhs::default();
    while !area.is_empty() {
        let [len_hi, len_lo, ahs_type, ..] = *area else {
            return Err(DecodeError::BadAhs("truncated AHS header"));
        };
        let specific_len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        let total = pad4(3 + specific_len);
        let Some(specific) = area.get(3..3 + specific_len) else {
            return Err(DecodeError::BadAhs("AHSLength exceeds TotalAHSLength"));
        };
        match ahs_type {
            AHS_EXTENDED_CDB => {
                // One reserved byte, then the CDB bytes beyond 16.
                let Some((_reserved, cdb)) = specific.split_first() else {
                    return Err(DecodeError::BadAhs("empty extended CDB AHS"));
                };
                if ahs.extended_cdb.replace(cdb.to_vec()).is_some() {
                    return Err(DecodeError::BadAhs("duplicate extended CDB AHS"));
                }
            }
            AHS_BIDI_READ_LENGTH => {
                let [_reserved, a, b, c, d] = *specific else {
                    return Err(DecodeError::BadAhs(
                        "bidirectional read length AHS is not 5 bytes",
                    ));
                };
                if ahs
                    .bidi_read_length
                    .replace(u32::from_be_bytes([a, b, c, d]))
                    .is_some()
                {
                    return Err(DecodeError::BadAhs(
                        "duplicate bidirectional read length AHS",
                    ));
                }
            }
            _ => return Err(DecodeError::BadAhs("unknown AHSType")),
        }
        area = area.get(total..).unwrap_or_default();
    }
    Ok(ahs)
}

/// Appends one AHS, padded to 4 bytes, to `out`.
fn push(out: &mut Vec<u8>, ahs_type: u8, specific: &[u8]) {
    let len = u16::try_from(specific.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(ahs_type);
    out.extend_from_slice(specific);
    out.resize(pad4(out.len()), 0);
}

/// Serialises the AHS area; callers check the result fits [`MAX_AHS_BYTES`].
pub(crate) fn encode(extended_cdb: Option<&[u8]>, bidi_read_length: Option<u32>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(cdb) = extended_cdb {
        let mut specific = Vec::with_capacity(cdb.len() + 1);
        specific.push(0);
        specific.extend_from_slice(cdb);
        push(&mut out, AHS_EXTENDED_CDB, &specific);
    }
    if let Some(len) = bidi_read_length {
        let [a, b, c, d] = len.to_be_bytes();
        push(&mut out, AHS_BIDI_READ_LENGTH, &[0, a, b, c, d]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_ahs_layout() {
        // RFC 7143 section 11.3.5: AHSLength 0x0005, AHSType 2, reserved, 4-byte length.
        let bytes = encode(None, Some(0x0102_0304));
        assert_eq!(bytes, [0, 5, 2, 0, 1, 2, 3, 4]);
        assert_eq!(parse(&bytes).unwrap().bidi_read_length, Some(0x0102_0304));
    }

    #[test]
    fn extended_cdb_ahs_layout() {
        // A 32-byte CDB: 16 in the BHS, 16 here. AHSLength = CDB length - 15 = 17.
        let ext: Vec<u8> = (16u8..32).collect();
        let bytes = encode(Some(&ext), None);
        assert_eq!(&bytes[..4], &[0, 17, 1, 0]);
        assert_eq!(&bytes[4..20], ext.as_slice());
        assert_eq!(bytes.len(), 20);
        assert_eq!(parse(&bytes).unwrap().extended_cdb, Some(ext));
    }

    #[test]
    fn malformed_ahs() {
        assert!(parse(&[0, 9, 1, 0]).is_err());
        assert!(parse(&[0, 1, 7, 0]).is_err());
        assert!(parse(&[0, 0, 1, 0]).is_err());
        assert!(parse(&[0, 4, 2, 0, 0, 0, 0, 0]).is_err());
        let twice = [encode(None, Some(1)), encode(None, Some(2))].concat();
        assert!(parse(&twice).is_err());
    }
}
