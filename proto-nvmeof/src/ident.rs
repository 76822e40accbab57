//! Namespace identifiers derived from the volume UUID.
//!
//! The SCSI side reports the volume as an NAA IEEE Registered Extended designator (NAA 6,
//! 24-bit company id, low 100 bits of the UUID). The NVMe side reuses exactly those 16 bytes
//! as the NGUID, the same company id plus the low 40 UUID bits as the EUI-64, and the UUID
//! itself as the namespace UUID, so every path and both protocols agree.

/// Company id used when the operator configures none (matches the SCSI default).
pub const DEFAULT_COMPANY_ID: u32 = 0;

/// The three namespace identifiers reported in Identify Namespace and the CNS 03h list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NamespaceIds {
    /// IEEE EUI-64.
    pub eui64: [u8; 8],
    /// Namespace globally unique identifier.
    pub nguid: [u8; 16],
    /// Namespace UUID (RFC 4122 bytes as stored).
    pub uuid: [u8; 16],
}

/// Identifiers of the namespace backed by the volume `volume_uuid`, with company id
/// `company_id` (24 bits).
pub fn namespace_ids(volume_uuid: &[u8; 16], company_id: u32) -> NamespaceIds {
    let uuid = u128::from_be_bytes(*volume_uuid);
    let cid = u128::from(company_id & 0x00FF_FFFF);
    let low100 = uuid & ((1u128 << 100) - 1);
    let nguid = ((6u128 << 124) | (cid << 100) | low100).to_be_bytes();
    let low40 = (uuid as u64) & ((1u64 << 40) - 1);
    let eui64 = ((u64::from(company_id & 0x00FF_FFFF) << 40) | low40).to_be_bytes();
    NamespaceIds {
        eui64,
        nguid,
        uuid: *volume_uuid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_from_uuid_and_company() {
        let mut u = [0u8; 16];
        for (i, b) in u.iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        let ids = namespace_ids(&u, 0xABCDEF);
        assert_eq!(ids.uuid, u);
        assert_eq!(&ids.eui64[..3], &[0xAB, 0xCD, 0xEF]);
        assert_eq!(&ids.eui64[3..], &u[11..]);
        assert_eq!(ids.nguid[0] >> 4, 6);
        assert_eq!(&ids.nguid[4..], &u[4..]);
        let other = namespace_ids(&[9; 16], 0xABCDEF);
        assert_ne!(other.nguid, ids.nguid);
        assert_ne!(other.eui64, ids.eui64);
    }
}
