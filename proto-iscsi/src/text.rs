//! The iSCSI `key=value\0` text format (RFC 7143 sections 6.1 and 6.2).
//!
//! Login and Text PDUs carry their negotiation as a sequence of `key=value` pairs, each followed
//! by one NUL byte. This module turns such a data segment into typed pairs (and back), enforces
//! the RFC length limits, detects duplicated keys, decodes the value encodings (decimal, `0x` hex,
//! `0b` base64, `Yes`/`No`, comma lists) and reassembles text that the peer split over several
//! PDUs with the C (continue) bit.

use thiserror::Error;

/// Longest key name the RFC allows (`standard-label`, RFC 7143 section 6.1).
pub const MAX_KEY_LEN: usize = 63;
/// Longest ordinary value in bytes (RFC 7143 section 6.1: 255 bytes, delimiter excluded).
pub const MAX_VALUE_LEN: usize = 255;
/// Longest encoded value we accept for the large-binary CHAP keys (`CHAP_C`, `CHAP_R`).
///
/// Their binary length is capped at 1024 bytes (RFC 7143 section 12.1.3); 8192 leaves room for
/// any encoding of that.
pub const MAX_LARGE_VALUE_LEN: usize = 8192;
/// Longest binary value (after decoding) of a large-binary value (RFC 7143 section 12.1.3).
pub const MAX_LARGE_BINARY_LEN: usize = 1024;
/// Longest iSCSI name (RFC 7143 section 4.2.7.1: 223 bytes).
pub const MAX_ISCSI_NAME_LEN: usize = 223;
/// Default bound of an [`TextAccumulator`]: every implementation must accept at least 8192
/// bytes of key=value data per negotiation sequence; we allow eight times that.
pub const DEFAULT_TEXT_LIMIT: usize = 64 * 1024;

/// A malformed text data segment. Always the peer's fault: the caller answers with a protocol
/// error (initiator error status during login).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TextError {
    /// The last pair is not followed by the mandatory NUL delimiter.
    #[error("text data does not end with a NUL delimiter")]
    MissingTerminator,
    /// A pair has no `=` separator.
    #[error("text pair at offset {offset} has no '='")]
    MissingEquals {
        /// Byte offset of the pair inside the data segment.
        offset: usize,
    },
    /// A pair has an empty key.
    #[error("text pair at offset {offset} has an empty key")]
    EmptyKey {
        /// Byte offset of the pair inside the data segment.
        offset: usize,
    },
    /// A key is longer than [`MAX_KEY_LEN`].
    #[error("key of {len} bytes exceeds the 63-byte limit")]
    KeyTooLong {
        /// Length of the offending key.
        len: usize,
    },
    /// A key contains a byte outside the `standard-label` alphabet.
    #[error("key contains an invalid character")]
    InvalidKey,
    /// A value is longer than the limit for its key.
    #[error("value of key {key} is {len} bytes, limit {max}")]
    ValueTooLong {
        /// Key whose value is too long.
        key: String,
        /// Length of the value.
        len: usize,
        /// Limit for this key.
        max: usize,
    },
    /// A value is not valid UTF-8.
    #[error("value of key {key} is not UTF-8")]
    InvalidUtf8 {
        /// Key whose value is not UTF-8.
        key: String,
    },
    /// The same key appears twice in one negotiation sequence.
    #[error("key {0} appears more than once")]
    DuplicateKey(String),
    /// Text spread over several PDUs grew beyond the accumulator's bound.
    #[error("text exceeds the {limit}-byte limit")]
    TooLarge {
        /// The configured bound.
        limit: usize,
    },
}

/// A value that does not decode as the type its key requires. The negotiation engine answers
/// such a key with `Reject`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValueError {
    /// Not a decimal, `0x` hex or `0b` base64 number.
    #[error("invalid number")]
    InvalidNumber,
    /// A number that does not fit 64 bits.
    #[error("number out of 64-bit range")]
    NumberTooLarge,
    /// Not `Yes` or `No`.
    #[error("invalid boolean")]
    InvalidBoolean,
    /// Not a valid `0x` hex or `0b` base64 binary value.
    #[error("invalid binary value")]
    InvalidBinary,
    /// A binary value longer than [`MAX_LARGE_BINARY_LEN`] bytes.
    #[error("binary value too long")]
    BinaryTooLong,
}

/// One `key=value` pair as it appears on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key name, e.g. `MaxBurstLength`.
    pub key: String,
    /// The raw value text, e.g. `262144`.
    pub value: String,
}

impl KeyValue {
    /// Builds a pair from anything string-like; used to assemble responses.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// The three special values a responder may answer with (RFC 7143 section 6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialValue {
    /// The responder does not know the key.
    NotUnderstood,
    /// The key does not apply in this context (e.g. to a discovery session).
    Irrelevant,
    /// The offered value is not acceptable or out of range.
    Reject,
}

impl SpecialValue {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SpecialValue::NotUnderstood => "NotUnderstood",
            SpecialValue::Irrelevant => "Irrelevant",
            SpecialValue::Reject => "Reject",
        }
    }

    /// Recognises a special value, so that a peer's answer is not mistaken for an offer.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "NotUnderstood" => Some(SpecialValue::NotUnderstood),
            "Irrelevant" => Some(SpecialValue::Irrelevant),
            "Reject" => Some(SpecialValue::Reject),
            _ => None,
        }
    }
}

/// The value length limit for a key: large-binary CHAP values may be long, everything else is
/// capped at 255 bytes.
pub fn max_value_len(key: &str) -> usize {
    match key {
        "CHAP_C" | "CHAP_R" => MAX_LARGE_VALUE_LEN,
        _ => MAX_VALUE_LEN,
    }
}

fn valid_key(key: &str) -> bool {
    key.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'@' | b'_' | b'#'))
}

/// Parses a complete text data segment into its pairs, in wire order.
///
/// Rejects (rather than truncates) anything outside the RFC limits and any key given twice.
/// Empty entries (two consecutive NULs, e.g. trailing padding) are skipped.
pub fn parse_text(data: &[u8]) -> Result<Vec<KeyValue>, TextError> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    if data.last() != Some(&0) {
        return Err(TextError::MissingTerminator);
    }
    let mut pairs: Vec<KeyValue> = Vec::new();
    let mut offset = 0usize;
    for entry in data.split(|&b| b == 0) {
        let start = offset;
        offset += entry.len() + 1;
        if entry.is_empty() {
            continue;
        }
        let eq = entry
            .iter()
            .position(|&b| b == b'=')
            .ok_or(TextError::MissingEquals { offset: start })?;
        let (key_bytes, rest) = entry.split_at(eq);
        let value_bytes = rest.get(1..).unwrap_or_default();
        if key_bytes.is_empty() {
            return Err(TextError::EmptyKey { offset: start });
        }
        if key_bytes.len() > MAX_KEY_LEN {
            return Err(TextError::KeyTooLong {
                len: key_bytes.len(),
            });
        }
        let key = std::str::from_utf8(key_bytes).map_err(|_| TextError::InvalidKey)?;
        if !valid_key(key) {
            return Err(TextError::InvalidKey);
        }
        let max = max_value_len(key);
        if value_bytes.len() > max {
            return Err(TextError::ValueTooLong {
                key: key.to_string(),
                len: value_bytes.len(),
                max,
            });
        }
        let value = std::str::from_utf8(value_bytes).map_err(|_| TextError::InvalidUtf8 {
            key: key.to_string(),
        })?;
        if pairs.iter().any(|p| p.key == key) {
            return Err(TextError::DuplicateKey(key.to_string()));
        }
        pairs.push(KeyValue::new(key, value));
    }
    Ok(pairs)
}

/// Encodes pairs as `key=value\0...`. Keys may repeat here on purpose: a SendTargets answer lists
/// `TargetName`/`TargetAddress` once per target.
pub fn encode_text(pairs: &[KeyValue]) -> Vec<u8> {
    let len = pairs.iter().map(|p| p.key.len() + p.value.len() + 2).sum();
    let mut out = Vec::with_capacity(len);
    for p in pairs {
        out.extend_from_slice(p.key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(p.value.as_bytes());
        out.push(0);
    }
    out
}

/// Decodes a numerical or binary value of at most 64 bits: decimal, `0x` hex or `0b` base64.
pub fn parse_number(value: &str) -> Result<u64, ValueError> {
    if let Some(hex) = strip_prefix2(value, "0x") {
        if hex.is_empty() || hex.len() > 16 {
            return Err(if hex.is_empty() {
                ValueError::InvalidNumber
            } else {
                ValueError::NumberTooLarge
            });
        }
        return u64::from_str_radix(hex, 16).map_err(|_| ValueError::InvalidNumber);
    }
    if let Some(b64) = strip_prefix2(value, "0b") {
        let bytes = base64_decode(b64).map_err(|_| ValueError::InvalidNumber)?;
        if bytes.is_empty() {
            return Err(ValueError::InvalidNumber);
        }
        if bytes.len() > 8 {
            return Err(ValueError::NumberTooLarge);
        }
        return Ok(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)));
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::InvalidNumber);
    }
    value.parse::<u64>().map_err(|_| ValueError::NumberTooLarge)
}

/// Decodes `Yes`/`No`.
pub fn parse_bool(value: &str) -> Result<bool, ValueError> {
    match value {
        "Yes" => Ok(true),
        "No" => Ok(false),
        _ => Err(ValueError::InvalidBoolean),
    }
}

/// The wire spelling of a boolean.
pub fn bool_str(value: bool) -> &'static str {
    if value {
        "Yes"
    } else {
        "No"
    }
}

/// Splits a `list-of-values` at commas.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',')
}

/// Decodes a large-binary value (`0x` hex or `0b` base64), at most [`MAX_LARGE_BINARY_LEN`]
/// bytes. An odd number of hex digits is read as if a leading zero were present.
pub fn parse_large_binary(value: &str) -> Result<Vec<u8>, ValueError> {
    let bytes = if let Some(hex) = strip_prefix2(value, "0x") {
        if hex.len() > 2 * MAX_LARGE_BINARY_LEN + 1 {
            return Err(ValueError::BinaryTooLong);
        }
        if hex.len() % 2 == 1 {
            let mut padded = String::with_capacity(hex.len() + 1);
            padded.push('0');
            padded.push_str(hex);
            hex::decode(padded).map_err(|_| ValueError::InvalidBinary)?
        } else {
            hex::decode(hex).map_err(|_| ValueError::InvalidBinary)?
        }
    } else if let Some(b64) = strip_prefix2(value, "0b") {
        base64_decode(b64).map_err(|_| ValueError::InvalidBinary)?
    } else {
        return Err(ValueError::InvalidBinary);
    };
    if bytes.is_empty() {
        return Err(ValueError::InvalidBinary);
    }
    if bytes.len() > MAX_LARGE_BINARY_LEN {
        return Err(ValueError::BinaryTooLong);
    }
    Ok(bytes)
}

/// Encodes binary data as a `0x` hex constant, the form every initiator accepts.
pub fn encode_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    s.push_str(&hex::encode(bytes));
    s
}

fn strip_prefix2<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..2)?;
    if head.eq_ignore_ascii_case(prefix) {
        value.get(2..)
    } else {
        None
    }
}

fn b64_digit(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes standard base64 (RFC 4648 section 4); `=` padding is optional but, when present,
/// must be correct.
pub fn base64_decode(input: &str) -> Result<Vec<u8>, ValueError> {
    let bytes = input.as_bytes();
    let pad = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    let body = bytes.get(..bytes.len() - pad).unwrap_or_default();
    if pad > 2 || (pad > 0 && bytes.len() & 3 != 0) || body.len() % 4 == 1 {
        return Err(ValueError::InvalidBinary);
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    for chunk in body.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | b64_digit(c).ok_or(ValueError::InvalidBinary)?;
        }
        match chunk.len() {
            4 => out.extend_from_slice(&acc.to_be_bytes()[1..]),
            3 => {
                if acc & 0x3 != 0 {
                    return Err(ValueError::InvalidBinary);
                }
                out.extend_from_slice(&(acc >> 2).to_be_bytes()[2..]);
            }
            2 => {
                if acc & 0xf != 0 {
                    return Err(ValueError::InvalidBinary);
                }
                out.push((acc >> 4) as u8);
            }
            _ => return Err(ValueError::InvalidBinary),
        }
    }
    Ok(out)
}

/// Reassembles text that spans several PDUs (C bit set on all but the last), with a bound on
/// the total so a peer cannot make us buffer without limit.
#[derive(Debug, Clone)]
pub struct TextAccumulator {
    buf: Vec<u8>,
    limit: usize,
}

impl Default for TextAccumulator {
    fn default() -> Self {
        Self::new(DEFAULT_TEXT_LIMIT)
    }
}

impl TextAccumulator {
    /// An empty accumulator that refuses more than `limit` bytes in one sequence.
    pub fn new(limit: usize) -> Self {
        TextAccumulator {
            buf: Vec::new(),
            limit,
        }
    }

    /// Adds one PDU's data segment. Returns the complete text once a PDU arrives with the
    /// C bit clear, `None` while more is expected.
    pub fn push(&mut self, data: &[u8], more: bool) -> Result<Option<Vec<u8>>, TextError> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            self.buf.clear();
            return Err(TextError::TooLarge { limit: self.limit });
        }
        self.buf.extend_from_slice(data);
        if more {
            Ok(None)
        } else {
            Ok(Some(std::mem::take(&mut self.buf)))
        }
    }

    /// Whether a partial sequence is buffered.
    #[cfg(test)]
    pub fn is_pending(&self) -> bool {
        !self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_rfc_style_login_text() {
        let data = b"InitiatorName=iqn.1991-05.com.microsoft:host\0SessionType=Normal\0AuthMethod=CHAP,None\0";
        let pairs = parse_text(data).unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[2], KeyValue::new("AuthMethod", "CHAP,None"));
        assert_eq!(encode_text(&pairs), data.to_vec());
    }

    #[test]
    fn rejects_malformed_text() {
        assert_eq!(parse_text(b"A=1"), Err(TextError::MissingTerminator));
        assert_eq!(
            parse_text(b"A=1\0B\0"),
            Err(TextError::MissingEquals { offset: 4 })
        );
        assert_eq!(parse_text(b"=1\0"), Err(TextError::EmptyKey { offset: 0 }));
        assert_eq!(
            parse_text(b"A=1\0A=2\0"),
            Err(TextError::DuplicateKey("A".into()))
        );
        assert_eq!(parse_text(b"A b=1\0"), Err(TextError::InvalidKey));
        let long_key = format!("{}=1\0", "K".repeat(64));
        assert_eq!(
            parse_text(long_key.as_bytes()),
            Err(TextError::KeyTooLong { len: 64 })
        );
        let ok_key = format!("{}=1\0", "K".repeat(63));
        assert!(parse_text(ok_key.as_bytes()).is_ok());
        let long_val = format!("K={}\0", "v".repeat(256));
        assert!(matches!(
            parse_text(long_val.as_bytes()),
            Err(TextError::ValueTooLong { max: 255, .. })
        ));
        let chap = format!("CHAP_C=0x{}\0", "ab".repeat(1024));
        assert!(parse_text(chap.as_bytes()).is_ok());
    }

    #[test]
    fn empty_value_and_padding_are_accepted() {
        assert_eq!(
            parse_text(b"SendTargets=\0\0\0").unwrap(),
            vec![KeyValue::new("SendTargets", "")]
        );
        assert_eq!(parse_text(b"").unwrap(), vec![]);
    }

    #[test]
    fn numbers_in_all_encodings() {
        assert_eq!(parse_number("262144"), Ok(262144));
        assert_eq!(parse_number("0x40000"), Ok(262144));
        assert_eq!(parse_number("0X40000"), Ok(262144));
        // 0x04 0x00 0x00 in base64 is "BAAA".
        assert_eq!(parse_number("0bBAAA"), Ok(262144));
        assert_eq!(parse_number("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_number("18446744073709551616"),
            Err(ValueError::NumberTooLarge)
        );
        assert_eq!(parse_number("-1"), Err(ValueError::InvalidNumber));
        assert_eq!(parse_number("+1"), Err(ValueError::InvalidNumber));
        assert_eq!(parse_number(""), Err(ValueError::InvalidNumber));
        assert_eq!(parse_number("0x"), Err(ValueError::InvalidNumber));
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_bool("Yes"), Ok(true));
        assert_eq!(parse_bool("No"), Ok(false));
        assert_eq!(parse_bool("yes"), Err(ValueError::InvalidBoolean));
    }

    #[test]
    fn base64_rfc4648_vectors() {
        for (enc, dec) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
            ("Zm9vYg", "foob"),
        ] {
            assert_eq!(base64_decode(enc).unwrap(), dec.as_bytes(), "{enc}");
        }
        assert!(base64_decode("Zg=").is_err());
        assert!(base64_decode("Z").is_err());
        assert!(base64_decode("Zh==").is_err());
        assert!(base64_decode("Zm9v!").is_err());
    }

    #[test]
    fn large_binary_values() {
        assert_eq!(parse_large_binary("0x0aff"), Ok(vec![0x0a, 0xff]));
        assert_eq!(parse_large_binary("0xaff"), Ok(vec![0x0a, 0xff]));
        assert_eq!(parse_large_binary("0bCv8="), Ok(vec![0x0a, 0xff]));
        assert_eq!(parse_large_binary("aff"), Err(ValueError::InvalidBinary));
        assert_eq!(parse_large_binary("0x"), Err(ValueError::InvalidBinary));
        let too_long = format!("0x{}", "00".repeat(1025));
        assert_eq!(
            parse_large_binary(&too_long),
            Err(ValueError::BinaryTooLong)
        );
        assert_eq!(encode_hex(&[0x0a, 0xff]), "0x0aff");
    }

    #[test]
    fn accumulator_joins_and_bounds() {
        let mut acc = TextAccumulator::new(10);
        assert_eq!(acc.push(b"A=1", true), Ok(None));
        assert!(acc.is_pending());
        assert_eq!(acc.push(b"2\0", false), Ok(Some(b"A=12\0".to_vec())));
        assert!(!acc.is_pending());
        assert_eq!(acc.push(b"123456", true), Ok(None));
        assert_eq!(
            acc.push(b"12345", false),
            Err(TextError::TooLarge { limit: 10 })
        );
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        "[A-Z][A-Za-z0-9._@+-]{0,62}"
    }

    proptest! {
        #[test]
        fn round_trip(map in proptest::collection::btree_map(key_strategy(), "[ -~&&[^=]]{0,255}", 0..20)) {
            let pairs: Vec<KeyValue> = map.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
            let encoded = encode_text(&pairs);
            prop_assert_eq!(parse_text(&encoded).unwrap(), pairs);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_text(&data);
            if let Ok(s) = std::str::from_utf8(&data) {
                let _ = parse_number(s);
                let _ = parse_large_binary(s);
                let _ = base64_decode(s);
            }
        }

        #[test]
        fn number_encodings_round_trip(n in any::<u64>()) {
            prop_assert_eq!(parse_number(&format!("{n}")), Ok(n));
            prop_assert_eq!(parse_number(&format!("0x{n:x}")), Ok(n));
        }
    }
}
