//! CRC32C header and data digests (RFC 7143 sections 11.1 and 13.1).
//!
//! Digests are negotiated during login and switched on after the final Login Response, so the
//! codec takes a [`Digests`] value per direction at run time rather than a build-time choice.
//!
//! Byte order: the CRC32C value is put on the wire least significant byte first. RFC 7143
//! Appendix B.4 gives 32 zero bytes the digest bytes `aa 36 91 8a` in wire order, while the
//! CRC32C of that input is `0x8a9136aa`; the Linux kernel likewise stores the value
//! little-endian. The tests below check the RFC's examples byte for byte.

/// Which CRC32C digests are in force for one direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Digests {
    /// HeaderDigest=CRC32C: a digest follows BHS + AHS.
    pub header: bool,
    /// DataDigest=CRC32C: a digest follows every non-empty data segment.
    pub data: bool,
}

impl Digests {
    /// No digests: the state during login and when both keys negotiated to None.
    pub const NONE: Digests = Digests {
        header: false,
        data: false,
    };
    /// Both digests on.
    pub const BOTH: Digests = Digests {
        header: true,
        data: true,
    };
}

/// CRC32C over a sequence of byte slices, as if they were concatenated.
pub(crate) fn crc32c_of(parts: &[&[u8]]) -> u32 {
    parts
        .iter()
        .fold(0u32, |crc, part| crc32c::crc32c_append(crc, part))
}

/// The four wire bytes of a digest value.
pub(crate) fn digest_bytes(value: u32) -> [u8; 4] {
    value.to_le_bytes()
}

/// Reads a digest value from four wire bytes; `None` if fewer are given.
pub(crate) fn read_digest(bytes: &[u8]) -> Option<u32> {
    let four: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(u32::from_le_bytes(four))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7143 Appendix B.4 (same as RFC 3720 B.4): input and the CRC bytes in wire order.
    #[test]
    fn rfc_7143_appendix_b4_examples() {
        let zeros = [0u8; 32];
        let ones = [0xffu8; 32];
        let incrementing: Vec<u8> = (0u8..32).collect();
        let decrementing: Vec<u8> = (0u8..32).rev().collect();
        // An iSCSI SCSI Read (10) command PDU.
        let read_cmd: [u8; 48] = [
            0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14,
            0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let cases: [(&[u8], [u8; 4]); 5] = [
            (&zeros, [0xaa, 0x36, 0x91, 0x8a]),
            (&ones, [0x43, 0xab, 0xa8, 0x62]),
            (&incrementing, [0x4e, 0x79, 0xdd, 0x46]),
            (&decrementing, [0x5c, 0xdb, 0x3f, 0x11]),
            (&read_cmd, [0x56, 0x3a, 0x96, 0xd9]),
        ];
        for (input, wire) in cases {
            assert_eq!(digest_bytes(crc32c_of(&[input])), wire);
            assert_eq!(read_digest(&wire), Some(crc32c_of(&[input])));
        }
    }

    #[test]
    fn split_input_gives_same_digest() {
        let data: Vec<u8> = (0u8..100).collect();
        let (a, b) = data.split_at(37);
        assert_eq!(crc32c_of(&[a, b]), crc32c_of(&[&data]));
        assert_eq!(read_digest(&[1, 2, 3]), None);
    }
}
