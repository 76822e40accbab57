//! Static description of one logical unit and the identity derived from its volume UUID.
//!
//! The NVMe side derives its namespace identity from the same UUID, so a host that sees the
//! volume over both protocols can tell it is one volume.

/// Configuration of one logical unit, fixed for the lifetime of the LU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuConfig {
    /// Logical block size in bytes: 512 or 4096.
    pub block_size: u32,
    /// log2(physical block size / logical block size), reported by READ CAPACITY(16).
    pub physical_block_exp: u8,
    /// Volume UUID: the source of every identifier the LU reports.
    pub volume_uuid: [u8; 16],
    /// IEEE company id (24 bits) placed in the NAA type 6 designator.
    pub ieee_company_id: u32,
    /// T10 vendor identification, 8 ASCII bytes.
    pub vendor: [u8; 8],
    /// Product identification, up to 16 ASCII bytes (space padded).
    pub product: String,
    /// Product revision level, up to 4 ASCII bytes (space padded).
    pub revision: String,
    /// Largest READ/WRITE transfer in blocks (VPD B0 MAXIMUM TRANSFER LENGTH).
    pub max_transfer_blocks: u32,
    /// Preferred transfer size in blocks (VPD B0 OPTIMAL TRANSFER LENGTH).
    pub optimal_transfer_blocks: u32,
    /// Largest UNMAP total in blocks (VPD B0 MAXIMUM UNMAP LBA COUNT).
    pub max_unmap_blocks: u32,
    /// Most UNMAP block descriptors in one command.
    pub max_unmap_descriptors: u32,
    /// Deallocation granularity in blocks (VPD B0 OPTIMAL UNMAP GRANULARITY).
    pub unmap_granularity: u32,
    /// Largest WRITE SAME in blocks (VPD B0 MAXIMUM WRITE SAME LENGTH).
    pub max_write_same_blocks: u32,
    /// Largest COMPARE AND WRITE in blocks (VPD B0, at most 255).
    pub max_compare_write_blocks: u8,
    /// Implicit ALUA transition time in seconds (REPORT TPGS extended header byte 5).
    pub implicit_transition_secs: u8,
    /// The medium is write protected (a read-only view of a snapshot): MODE SENSE reports WP
    /// and every command that would change the medium fails with DATA PROTECT, WRITE
    /// PROTECTED (07/27/00) before it reaches the volume.
    pub write_protected: bool,
}

impl LuConfig {
    /// A configuration with Tandem's defaults for the given block size and UUID.
    pub fn new(block_size: u32, volume_uuid: [u8; 16]) -> Self {
        LuConfig {
            block_size,
            physical_block_exp: 0,
            volume_uuid,
            ieee_company_id: DEFAULT_COMPANY_ID,
            vendor: *b"TANDEM  ",
            product: "TANDEM VOLUME".to_string(),
            revision: "0001".to_string(),
            max_transfer_blocks: (8 << 20) / block_size.max(1),
            optimal_transfer_blocks: (1 << 20) / block_size.max(1),
            max_unmap_blocks: (256 << 20) / block_size.max(1),
            max_unmap_descriptors: 256,
            unmap_granularity: (4096 / block_size.max(1)).max(1),
            max_write_same_blocks: (8 << 20) / block_size.max(1),
            max_compare_write_blocks: 1,
            implicit_transition_secs: 10,
            write_protected: false,
        }
    }

    /// Unit serial number (VPD 0x80): the UUID as 32 lowercase hex digits.
    pub fn serial(&self) -> String {
        hex::encode(self.volume_uuid)
    }

    /// NAA IEEE Registered Extended (type 6) designator: NAA nibble, 24-bit company id, then the
    /// low 100 bits of the volume UUID.
    pub fn naa_designator(&self) -> [u8; 16] {
        let uuid = u128::from_be_bytes(self.volume_uuid);
        let low100 = uuid & ((1u128 << 100) - 1);
        let v = (6u128 << 124) | (u128::from(self.ieee_company_id & 0x00FF_FFFF) << 100) | low100;
        v.to_be_bytes()
    }

    /// `text` as printable ASCII, space padded or cut to `len` bytes (INQUIRY ASCII fields).
    pub(crate) fn padded(text: &str, len: usize) -> Vec<u8> {
        let mut v: Vec<u8> = text
            .bytes()
            .map(|b| if b.is_ascii_graphic() { b } else { b' ' })
            .take(len)
            .collect();
        v.resize(len, b' ');
        v
    }
}

/// Placeholder IEEE company id used when the operator configures none; deployments should set
/// their own OUI/CID so NAA designators are globally unique.
pub const DEFAULT_COMPANY_ID: u32 = 0x00_0000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naa6_layout() {
        let mut cfg = LuConfig::new(512, [0xFF; 16]);
        cfg.ieee_company_id = 0xABCDEF;
        let d = cfg.naa_designator();
        assert_eq!(d[0] >> 4, 6);
        // company id occupies the 24 bits after the NAA nibble
        let cid = (u32::from(d[0] & 0xF) << 20)
            | (u32::from(d[1]) << 12)
            | (u32::from(d[2]) << 4)
            | u32::from(d[3] >> 4);
        assert_eq!(cid, 0xABCDEF);
        assert_eq!(d[3] & 0xF, 0xF);
        assert_eq!(&d[4..], &[0xFF; 12]);
    }

    #[test]
    fn serial_is_hex_uuid() {
        let mut uuid = [0u8; 16];
        uuid[0] = 0x12;
        uuid[15] = 0xAB;
        let s = LuConfig::new(4096, uuid).serial();
        assert_eq!(s.len(), 32);
        assert!(s.starts_with("12") && s.ends_with("ab"));
    }
}
