//! Vital product data pages (SPC-4 7.8, SBC-3 6.6) that Linux sd and libiscsi ask for:
//! 00h supported pages, 80h unit serial number, 83h device identification, B0h block limits,
//! B1h block device characteristics, B2h logical block provisioning.

use super::config::LuConfig;
use super::task::Nexus;

/// VPD page codes we implement, in ascending order (the 00h page lists exactly these).
pub const SUPPORTED_PAGES: [u8; 6] = [0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2];

/// Builds VPD page `code`, or None when unsupported.
pub fn page(code: u8, cfg: &LuConfig, nexus: &Nexus) -> Option<Vec<u8>> {
    let body = match code {
        0x00 => SUPPORTED_PAGES.to_vec(),
        0x80 => cfg.serial().into_bytes(),
        0x83 => device_identification(cfg, nexus),
        0xB0 => block_limits(cfg),
        0xB1 => block_characteristics(),
        0xB2 => provisioning(),
        _ => return None,
    };
    let mut out = Vec::with_capacity(4 + body.len());
    out.push(0x00); // peripheral qualifier/type
    out.push(code);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    Some(out)
}

/// Appends one designation descriptor (SPC-4 7.8.6.1).
fn designator(out: &mut Vec<u8>, code_set: u8, assoc: u8, kind: u8, value: &[u8]) {
    out.push(code_set & 0x0F);
    out.push(((assoc & 3) << 4) | (kind & 0x0F));
    out.push(0);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

/// Device identification: NAA (LU), T10 vendor id (LU), relative target port and target port
/// group (both associated with the target port the command came through).
fn device_identification(cfg: &LuConfig, nexus: &Nexus) -> Vec<u8> {
    let mut out = Vec::new();
    designator(&mut out, 1, 0, 3, &cfg.naa_designator());
    let mut t10 = cfg.vendor.to_vec();
    t10.extend_from_slice(cfg.serial().as_bytes());
    designator(&mut out, 2, 0, 1, &t10);
    let mut rel = [0u8; 4];
    rel[2..].copy_from_slice(&nexus.relative_port.to_be_bytes());
    designator(&mut out, 1, 1, 4, &rel);
    let mut tpg = [0u8; 4];
    tpg[2..].copy_from_slice(&nexus.target_port_group.to_be_bytes());
    designator(&mut out, 1, 1, 5, &tpg);
    out
}

/// Block limits (SBC-3 table 201), page length 3Ch.
fn block_limits(cfg: &LuConfig) -> Vec<u8> {
    let mut b = vec![0u8; 0x3C];
    // Offsets below are page offsets minus the 4-byte header.
    b[0] = 0x01; // WSNZ: WRITE SAME with zero blocks is not supported
    b[1] = cfg.max_compare_write_blocks;
    b[2..4].copy_from_slice(&(cfg.unmap_granularity.min(0xFFFF) as u16).to_be_bytes());
    b[4..8].copy_from_slice(&cfg.max_transfer_blocks.to_be_bytes());
    b[8..12].copy_from_slice(&cfg.optimal_transfer_blocks.to_be_bytes());
    b[16..20].copy_from_slice(&cfg.max_unmap_blocks.to_be_bytes());
    b[20..24].copy_from_slice(&cfg.max_unmap_descriptors.to_be_bytes());
    b[24..28].copy_from_slice(&cfg.unmap_granularity.to_be_bytes());
    b[28..32].copy_from_slice(&0x8000_0000u32.to_be_bytes()); // UGAVALID, alignment 0
    b[32..40].copy_from_slice(&u64::from(cfg.max_write_same_blocks).to_be_bytes());
    b
}

/// Block device characteristics (SBC-3 table 203): non-rotating medium.
fn block_characteristics() -> Vec<u8> {
    let mut b = vec![0u8; 0x3C];
    b[0..2].copy_from_slice(&1u16.to_be_bytes()); // MEDIUM ROTATION RATE: non-rotating
    b
}

/// Logical block provisioning (SBC-3 table 206): thin, UNMAP and WRITE SAME(10/16) with UNMAP,
/// deallocated blocks read as zeros.
fn provisioning() -> Vec<u8> {
    vec![
        0x00,                      // THRESHOLD EXPONENT
        0x80 | 0x40 | 0x20 | 0x04, // LBPU | LBPWS | LBPWS10 | LBPRZ
        0x02,                      // PROVISIONING TYPE: thin
        0x00,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nexus() -> Nexus {
        Nexus {
            id: 9,
            initiator_port: "iqn.x".into(),
            target_port_group: 0x0102,
            relative_port: 0x0304,
        }
    }

    fn cfg() -> LuConfig {
        LuConfig::new(512, [0x11; 16])
    }

    #[test]
    fn supported_pages_lists_all() {
        let p = page(0x00, &cfg(), &nexus()).unwrap();
        assert_eq!(&p[..4], &[0, 0, 0, 6]);
        assert_eq!(&p[4..], &SUPPORTED_PAGES);
        for code in SUPPORTED_PAGES {
            assert!(page(code, &cfg(), &nexus()).is_some());
        }
    }

    #[test]
    fn serial_page() {
        let p = page(0x80, &cfg(), &nexus()).unwrap();
        assert_eq!(p[1], 0x80);
        assert_eq!(usize::from(p[3]), p.len() - 4);
        assert_eq!(&p[4..], "11".repeat(16).as_bytes());
    }

    #[test]
    fn device_identification_designators() {
        let p = page(0x83, &cfg(), &nexus()).unwrap();
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len() - 4);
        let mut i = 4;
        let mut seen = Vec::new();
        while i + 4 <= p.len() {
            let len = usize::from(p[i + 3]);
            seen.push((
                p[i] & 0xF,
                (p[i + 1] >> 4) & 3,
                p[i + 1] & 0xF,
                p[i + 4..i + 4 + len].to_vec(),
            ));
            i += 4 + len;
        }
        assert_eq!(i, p.len());
        // NAA, binary, LU association
        assert_eq!((seen[0].0, seen[0].1, seen[0].2), (1, 0, 3));
        assert_eq!(seen[0].3.len(), 16);
        assert_eq!(seen[0].3[0] >> 4, 6);
        // relative target port (type 4), target port association
        assert_eq!((seen[2].1, seen[2].2), (1, 4));
        assert_eq!(&seen[2].3, &[0, 0, 3, 4]);
        // target port group (type 5)
        assert_eq!((seen[3].1, seen[3].2), (1, 5));
        assert_eq!(&seen[3].3, &[0, 0, 1, 2]);
    }

    #[test]
    fn block_limits_offsets() {
        let c = cfg();
        let p = page(0xB0, &c, &nexus()).unwrap();
        assert_eq!(p.len(), 64);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 0x3C);
        assert_eq!(p[5], c.max_compare_write_blocks);
        assert_eq!(
            u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
            c.max_transfer_blocks
        );
        assert_eq!(
            u32::from_be_bytes([p[20], p[21], p[22], p[23]]),
            c.max_unmap_blocks
        );
        assert_eq!(
            u32::from_be_bytes([p[24], p[25], p[26], p[27]]),
            c.max_unmap_descriptors
        );
        let mut ws = [0u8; 8];
        ws.copy_from_slice(&p[36..44]);
        assert_eq!(u64::from_be_bytes(ws), u64::from(c.max_write_same_blocks));
    }

    #[test]
    fn characteristics_and_provisioning() {
        let p = page(0xB1, &cfg(), &nexus()).unwrap();
        assert_eq!(&p[4..6], &[0, 1]);
        let p = page(0xB2, &cfg(), &nexus()).unwrap();
        assert_eq!(p[3], 4);
        assert_ne!(p[5] & 0x80, 0, "LBPU");
        assert_ne!(p[5] & 0x40, 0, "LBPWS");
        assert_ne!(p[5] & 0x20, 0, "LBPWS10");
        assert_ne!(p[5] & 0x04, 0, "LBPRZ");
        assert_eq!(p[6] & 0x07, 2, "thin");
    }
}
