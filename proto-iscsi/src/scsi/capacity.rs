//! READ CAPACITY(10)/(16) and the GET LBA STATUS response (SBC-3 5.15, 5.16, 5.6).

use super::cdb::Cdb;
use super::config::LuConfig;
use super::sense::Sense;
use super::task::{LbaExtent, Provisioning};

/// READ CAPACITY(10): last LBA (saturated to FFFFFFFFh) and block length.
pub fn read_capacity_10(cdb: &Cdb<'_>, cfg: &LuConfig, blocks: u64) -> Result<Vec<u8>, Sense> {
    let pmi = cdb.bit(8, 0);
    if !pmi && cdb.u32(2) != 0 {
        return Err(Sense::invalid_cdb(2, None));
    }
    let last = blocks.saturating_sub(1);
    let last32 = u32::try_from(last).unwrap_or(u32::MAX);
    let mut d = Vec::with_capacity(8);
    d.extend_from_slice(&last32.to_be_bytes());
    d.extend_from_slice(&cfg.block_size.to_be_bytes());
    Ok(d)
}

/// READ CAPACITY(16) parameter data (SBC-3 table 65), truncated to the allocation length.
pub fn read_capacity_16(cdb: &Cdb<'_>, cfg: &LuConfig, blocks: u64) -> Result<Vec<u8>, Sense> {
    let alloc = cdb.u32(10) as usize;
    let mut d = vec![0u8; 32];
    d[0..8].copy_from_slice(&blocks.saturating_sub(1).to_be_bytes());
    d[8..12].copy_from_slice(&cfg.block_size.to_be_bytes());
    d[13] = cfg.physical_block_exp & 0x0F;
    d[14] = 0x80 | 0x40; // LBPME | LBPRZ, lowest aligned LBA 0
    d.truncate(alloc);
    Ok(d)
}

/// Builds GET LBA STATUS parameter data (SBC-3 table 43) from the volume's extents, clipped to
/// the capacity and to the allocation length.
pub fn lba_status_data(start: u64, extents: &[LbaExtent], capacity: u64, alloc: usize) -> Vec<u8> {
    let mut d = vec![0u8; 8];
    let mut next = start;
    for e in extents {
        // Only report a contiguous run beginning at the requested LBA.
        if e.lba != next || e.blocks == 0 || e.lba >= capacity {
            break;
        }
        let blocks = u64::from(e.blocks).min(capacity - e.lba) as u32;
        d.extend_from_slice(&e.lba.to_be_bytes());
        d.extend_from_slice(&blocks.to_be_bytes());
        d.push(match e.status {
            Provisioning::Mapped => 0,
            Provisioning::Deallocated => 1,
        });
        d.extend_from_slice(&[0, 0, 0]);
        next = e.lba + u64::from(blocks);
        if d.len() >= alloc {
            break;
        }
    }
    if d.len() == 8 {
        // The volume reported nothing usable: describe one mapped block, which is always true
        // enough for an initiator (it only loses a deallocation hint).
        d.extend_from_slice(&start.to_be_bytes());
        d.extend_from_slice(&1u32.to_be_bytes());
        d.extend_from_slice(&[0, 0, 0, 0]);
    }
    let len = (d.len() - 4) as u32;
    d[0..4].copy_from_slice(&len.to_be_bytes());
    d.truncate(alloc);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::cdb::{READ_CAPACITY_10, SAI_READ_CAPACITY_16, SERVICE_ACTION_IN_16};

    fn rc16(alloc: u32) -> [u8; 16] {
        let mut raw = [0u8; 16];
        raw[0] = SERVICE_ACTION_IN_16;
        raw[1] = SAI_READ_CAPACITY_16;
        raw[10..14].copy_from_slice(&alloc.to_be_bytes());
        raw
    }

    #[test]
    fn rc10_small_and_huge() {
        let cfg = LuConfig::new(512, [0; 16]);
        let raw = [READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let c = Cdb::parse(&raw).unwrap();
        let d = read_capacity_10(&c, &cfg, 2048).unwrap();
        assert_eq!(d, vec![0, 0, 0x07, 0xFF, 0, 0, 2, 0]);
        let d = read_capacity_10(&c, &cfg, 1 << 33).unwrap();
        assert_eq!(&d[..4], &[0xFF; 4]);
    }

    #[test]
    fn rc10_lba_without_pmi_invalid() {
        let cfg = LuConfig::new(512, [0; 16]);
        let raw = [READ_CAPACITY_10, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(read_capacity_10(&Cdb::parse(&raw).unwrap(), &cfg, 10).is_err());
    }

    #[test]
    fn rc16_layout() {
        let mut cfg = LuConfig::new(512, [0; 16]);
        cfg.physical_block_exp = 3;
        let raw = rc16(32);
        let d = read_capacity_16(&Cdb::parse(&raw).unwrap(), &cfg, 1 << 33).unwrap();
        assert_eq!(d.len(), 32);
        assert_eq!(&d[0..8], &((1u64 << 33) - 1).to_be_bytes());
        assert_eq!(&d[8..12], &512u32.to_be_bytes());
        assert_eq!(d[13], 3);
        assert_eq!(d[14] & 0xC0, 0xC0);
        let raw = rc16(12);
        let d = read_capacity_16(&Cdb::parse(&raw).unwrap(), &cfg, 10).unwrap();
        assert_eq!(d.len(), 12);
    }

    #[test]
    fn lba_status_descriptors() {
        let ext = [
            LbaExtent {
                lba: 10,
                blocks: 5,
                status: Provisioning::Mapped,
            },
            LbaExtent {
                lba: 15,
                blocks: 100,
                status: Provisioning::Deallocated,
            },
        ];
        let d = lba_status_data(10, &ext, 50, 4096);
        assert_eq!(u32::from_be_bytes([d[0], d[1], d[2], d[3]]), 4 + 32);
        assert_eq!(&d[8..16], &10u64.to_be_bytes());
        assert_eq!(&d[16..20], &5u32.to_be_bytes());
        assert_eq!(d[20], 0);
        assert_eq!(&d[24..32], &15u64.to_be_bytes());
        // clipped at capacity 50
        assert_eq!(&d[32..36], &35u32.to_be_bytes());
        assert_eq!(d[36], 1);
        assert_eq!(lba_status_data(10, &ext, 50, 8).len(), 8);
    }
}
