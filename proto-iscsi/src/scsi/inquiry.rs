//! INQUIRY (SPC-4 6.6): standard inquiry data, and dispatch to the VPD pages in [`super::vpd`].

use super::cdb::Cdb;
use super::config::LuConfig;
use super::sense::Sense;
use super::task::Nexus;
use super::vpd;

/// Length of our standard INQUIRY data (through the version descriptors and reserved tail).
pub const STANDARD_INQUIRY_LEN: usize = 96;

/// Version descriptors (SPC-4 table 148): SAM-5, SPC-4, SBC-3, iSCSI.
const VERSION_DESCRIPTORS: [u16; 4] = [0x00A0, 0x0460, 0x04C0, 0x0960];

/// Handles an INQUIRY CDB, returning data truncated to the allocation length.
pub fn inquiry(cdb: &Cdb<'_>, cfg: &LuConfig, nexus: &Nexus) -> Result<Vec<u8>, Sense> {
    let evpd = cdb.bit(1, 0);
    if cdb.u8(1) & 0xFE != 0 {
        // CMDDT (obsolete) or reserved bits.
        return Err(Sense::invalid_cdb(1, Some(1)));
    }
    let page = cdb.u8(2);
    let alloc = usize::from(cdb.u16(3));
    let mut data = if evpd {
        vpd::page(page, cfg, nexus).ok_or(Sense::invalid_cdb(2, None))?
    } else {
        if page != 0 {
            return Err(Sense::invalid_cdb(2, None));
        }
        standard(cfg)
    };
    data.truncate(alloc);
    Ok(data)
}

/// Standard INQUIRY data (SPC-4 table 140) for a direct-access block device.
pub fn standard(cfg: &LuConfig) -> Vec<u8> {
    let mut d = vec![0u8; STANDARD_INQUIRY_LEN];
    d[0] = 0x00; // peripheral qualifier 000b, device type 00h (direct access block)
    d[1] = 0x00; // RMB = 0
    d[2] = 0x06; // VERSION: SPC-4
    d[3] = 0x10 | 0x02; // HISUP, RESPONSE DATA FORMAT 2
    d[4] = (STANDARD_INQUIRY_LEN - 5) as u8; // ADDITIONAL LENGTH
    d[5] = 0x10; // TPGS = 01b: implicit ALUA only
    d[6] = 0x10; // MULTIP: reachable through several ports
    d[7] = 0x02; // CMDQUE
    d[8..16].copy_from_slice(&cfg.vendor);
    d[16..32].copy_from_slice(&LuConfig::padded(&cfg.product, 16));
    d[32..36].copy_from_slice(&LuConfig::padded(&cfg.revision, 4));
    for (i, v) in VERSION_DESCRIPTORS.iter().enumerate() {
        let off = 58 + 2 * i;
        d[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::cdb::INQUIRY;
    use crate::scsi::sense::ASC_INVALID_FIELD_IN_CDB;

    fn nexus() -> Nexus {
        Nexus {
            id: 1,
            initiator_port: "iqn.test,i,0x1".into(),
            target_port_group: 1,
            relative_port: 1,
        }
    }

    fn run(raw: [u8; 6]) -> Result<Vec<u8>, Sense> {
        let cfg = LuConfig::new(512, [7; 16]);
        inquiry(&Cdb::parse(&raw).unwrap(), &cfg, &nexus())
    }

    #[test]
    fn standard_fields() {
        let d = run([INQUIRY, 0, 0, 0, 255, 0]).unwrap();
        assert_eq!(d.len(), STANDARD_INQUIRY_LEN);
        assert_eq!(d[0], 0);
        assert_eq!(d[2], 0x06);
        assert_eq!(d[3] & 0x0F, 2);
        assert_ne!(d[3] & 0x10, 0, "HiSup");
        assert_eq!(usize::from(d[4]) + 5, d.len());
        assert_eq!((d[5] >> 4) & 3, 1, "TPGS implicit");
        assert_ne!(d[7] & 0x02, 0, "CmdQue");
        assert_eq!(&d[8..16], b"TANDEM  ");
        assert_eq!(&d[16..29], b"TANDEM VOLUME");
        assert_eq!(&d[60..62], &[0x04, 0x60]);
    }

    #[test]
    fn truncates_to_alloc_len() {
        assert_eq!(run([INQUIRY, 0, 0, 0, 5, 0]).unwrap().len(), 5);
        assert!(run([INQUIRY, 0, 0, 0, 0, 0]).unwrap().is_empty());
    }

    #[test]
    fn page_code_without_evpd_is_invalid() {
        let e = run([INQUIRY, 0, 0x80, 0, 255, 0]).unwrap_err();
        assert_eq!(e.asc, ASC_INVALID_FIELD_IN_CDB);
        assert_eq!(e.field.unwrap().byte, 2);
    }

    #[test]
    fn unknown_vpd_page_is_invalid() {
        let e = run([INQUIRY, 1, 0x99, 0, 255, 0]).unwrap_err();
        assert_eq!(e.field.unwrap().byte, 2);
    }

    #[test]
    fn cmddt_is_invalid() {
        assert!(run([INQUIRY, 2, 0, 0, 255, 0]).is_err());
    }
}
