//! MODE SENSE(6)/(10) and MODE SELECT(6)/(10) (SPC-4 6.11-6.14) over the caching (08h),
//! control (0Ah) and informational exceptions (1Ch) pages.
//!
//! No parameter is changeable: the volume always has a write-back cache that SYNCHRONIZE CACHE
//! and FUA flush, so WCE stays 1. MODE SELECT therefore accepts only the current values.

use super::cdb::{be16, Cdb};
use super::config::LuConfig;
use super::sense::{Sense, SenseKey, ASC_SAVING_PARAMS_NOT_SUPPORTED};

/// Page control field of MODE SENSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageControl {
    Current,
    Changeable,
    Default,
}

/// Caching mode page (SBC-3 6.5.5), 20 bytes.
fn caching(pc: PageControl) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x08;
    p[1] = 0x12;
    if pc != PageControl::Changeable {
        p[2] = 0x04; // WCE
    }
    p
}

/// Control mode page (SPC-4 7.5.7), 12 bytes.
fn control(pc: PageControl) -> Vec<u8> {
    let mut p = vec![0u8; 12];
    p[0] = 0x0A;
    p[1] = 0x0A;
    if pc != PageControl::Changeable {
        p[3] = 0x10; // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering
        p[8..10].copy_from_slice(&0xFFFFu16.to_be_bytes()); // BUSY TIMEOUT PERIOD: unlimited
    }
    p
}

/// Informational exceptions control page (SPC-4 7.5.8), 12 bytes, all zero (no reporting).
fn informational_exceptions(_pc: PageControl) -> Vec<u8> {
    let mut p = vec![0u8; 12];
    p[0] = 0x1C;
    p[1] = 0x0A;
    p
}

/// The pages for `code` (3Fh = all) or None when unsupported.
fn pages(code: u8, pc: PageControl) -> Option<Vec<u8>> {
    Some(match code {
        0x08 => caching(pc),
        0x0A => control(pc),
        0x1C => informational_exceptions(pc),
        0x3F => {
            let mut v = caching(pc);
            v.extend(control(pc));
            v.extend(informational_exceptions(pc));
            v
        }
        _ => return None,
    })
}

/// Handles MODE SENSE(6) (`ten == false`) or MODE SENSE(10), truncated to the allocation length.
pub fn mode_sense(cdb: &Cdb<'_>, ten: bool, cfg: &LuConfig, blocks: u64) -> Result<Vec<u8>, Sense> {
    let dbd = cdb.bit(1, 3);
    let llbaa = ten && cdb.bit(1, 4);
    let pc = match cdb.u8(2) >> 6 {
        0 => PageControl::Current,
        1 => PageControl::Changeable,
        2 => PageControl::Default,
        _ => {
            return Err(Sense {
                field: None,
                ..Sense::new(SenseKey::IllegalRequest, ASC_SAVING_PARAMS_NOT_SUPPORTED)
            })
        }
    };
    let code = cdb.u8(2) & 0x3F;
    let subpage = cdb.u8(3);
    if subpage != 0 && !(code == 0x3F && subpage == 0xFF) {
        return Err(Sense::invalid_cdb(3, None));
    }
    let body = pages(code, pc).ok_or(Sense::invalid_cdb(2, Some(5)))?;
    let alloc = if ten {
        usize::from(cdb.u16(7))
    } else {
        usize::from(cdb.u8(4))
    };
    let desc = if dbd {
        Vec::new()
    } else if llbaa {
        let mut d = vec![0u8; 16];
        d[0..8].copy_from_slice(&blocks.to_be_bytes());
        d[12..16].copy_from_slice(&cfg.block_size.to_be_bytes());
        d
    } else {
        let mut d = vec![0u8; 8];
        let n = u32::try_from(blocks).unwrap_or(u32::MAX);
        d[0..4].copy_from_slice(&n.to_be_bytes());
        d[5..8].copy_from_slice(&cfg.block_size.to_be_bytes()[1..4]);
        d
    };
    // Device-specific parameter (SBC-3 6.5.1): WP (bit 7) on a write-protected unit, DPOFUA=1.
    let dev_specific = if cfg.write_protected { 0x90 } else { 0x10 };
    let mut out = if ten {
        let mut h = vec![0u8; 8];
        h[3] = dev_specific;
        if llbaa && !dbd {
            h[4] = 0x01; // LONGLBA
        }
        h[6..8].copy_from_slice(&(desc.len() as u16).to_be_bytes());
        h
    } else {
        vec![0, 0, dev_specific, desc.len() as u8]
    };
    out.extend(desc);
    out.extend(body);
    if ten {
        let len = (out.len() - 2) as u16;
        out[0..2].copy_from_slice(&len.to_be_bytes());
    } else {
        out[0] = (out.len() - 1) as u8;
    }
    out.truncate(alloc);
    Ok(out)
}

/// Checks the MODE SELECT CDB; returns the parameter list length to fetch.
pub fn mode_select_len(cdb: &Cdb<'_>, ten: bool) -> Result<u32, Sense> {
    if cdb.bit(1, 0) {
        // SP: we cannot save pages.
        return Err(Sense::invalid_cdb(1, Some(0)));
    }
    Ok(if ten {
        u32::from(cdb.u16(7))
    } else {
        u32::from(cdb.u8(4))
    })
}

/// Validates a MODE SELECT parameter list: the header, an optional block descriptor that must
/// match our block size, and pages that must equal their current values.
pub fn mode_select(data: &[u8], ten: bool, cfg: &LuConfig) -> Result<(), Sense> {
    let hdr = if ten { 8 } else { 4 };
    if data.len() < hdr {
        return Err(Sense::param_list_length());
    }
    let (bd_len, long) = if ten {
        (
            usize::from(be16(data, 6).unwrap_or(0)),
            data.get(4).is_some_and(|b| b & 1 != 0),
        )
    } else {
        (usize::from(data.get(3).copied().unwrap_or(0)), false)
    };
    let bd_unit = if long { 16 } else { 8 };
    if bd_len % bd_unit != 0 || hdr + bd_len > data.len() {
        return Err(Sense::invalid_param(if ten { 6 } else { 3 }, None));
    }
    for (i, d) in data[hdr..hdr + bd_len].chunks(bd_unit).enumerate() {
        let bs = if long {
            u32::from_be_bytes([d[12], d[13], d[14], d[15]])
        } else {
            u32::from_be_bytes([0, d[5], d[6], d[7]])
        };
        if bs != cfg.block_size {
            let off = hdr + i * bd_unit + if long { 12 } else { 5 };
            return Err(Sense::invalid_param(off as u16, None));
        }
    }
    let mut off = hdr + bd_len;
    while off < data.len() {
        let rest = &data[off..];
        if rest.len() < 2 {
            return Err(Sense::param_list_length());
        }
        let code = rest[0] & 0x3F;
        if rest[0] & 0x40 != 0 {
            return Err(Sense::invalid_param(off as u16, Some(6))); // SPF: no subpages
        }
        let len = usize::from(rest[1]) + 2;
        let page = rest.get(..len).ok_or(Sense::param_list_length())?;
        let current = match code {
            0x08 | 0x0A | 0x1C => pages(code, PageControl::Current).unwrap_or_default(),
            _ => return Err(Sense::invalid_param(off as u16, Some(5))),
        };
        if page.len() != current.len() {
            return Err(Sense::invalid_param((off + 1) as u16, None));
        }
        for (i, (a, b)) in page.iter().zip(current.iter()).enumerate().skip(2) {
            if a != b {
                return Err(Sense::invalid_param((off + i) as u16, None));
            }
        }
        off += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::cdb::{MODE_SENSE_10, MODE_SENSE_6};
    use crate::scsi::sense::{ASC_INVALID_FIELD_IN_CDB, ASC_INVALID_FIELD_IN_PARAM_LIST};

    fn cfg() -> LuConfig {
        LuConfig::new(512, [0; 16])
    }

    fn sense6(b1: u8, b2: u8, alloc: u8) -> Result<Vec<u8>, Sense> {
        let raw = [MODE_SENSE_6, b1, b2, 0, alloc, 0];
        mode_sense(&Cdb::parse(&raw).unwrap(), false, &cfg(), 1000)
    }

    #[test]
    fn sense6_caching_with_block_descriptor() {
        let d = sense6(0, 0x08, 255).unwrap();
        assert_eq!(usize::from(d[0]) + 1, d.len());
        assert_eq!(d[2], 0x10, "DPOFUA");
        assert_eq!(d[3], 8, "block descriptor length");
        assert_eq!(&d[4..8], &1000u32.to_be_bytes());
        assert_eq!(&d[9..12], &[0, 2, 0]);
        assert_eq!(d[12], 0x08);
        assert_eq!(d[13], 0x12);
        assert_ne!(d[14] & 0x04, 0, "WCE");
    }

    #[test]
    fn sense6_all_pages_dbd() {
        let d = sense6(0x08, 0x3F, 255).unwrap();
        assert_eq!(d[3], 0);
        assert_eq!(d.len(), 4 + 20 + 12 + 12);
        assert_eq!(d[4], 0x08);
        assert_eq!(d[24], 0x0A);
        assert_eq!(d[36], 0x1C);
    }

    #[test]
    fn changeable_reports_nothing_changeable() {
        let d = sense6(0x08, 0x48, 255).unwrap();
        assert!(d[6..].iter().all(|b| *b == 0));
    }

    #[test]
    fn saved_values_not_supported() {
        let e = sense6(0, 0xC8, 255).unwrap_err();
        assert_eq!(e.asc, ASC_SAVING_PARAMS_NOT_SUPPORTED);
    }

    #[test]
    fn unknown_page_invalid_and_truncation() {
        assert_eq!(
            sense6(0, 0x19, 255).unwrap_err().asc,
            ASC_INVALID_FIELD_IN_CDB
        );
        assert_eq!(sense6(0, 0x3F, 3).unwrap().len(), 3);
    }

    #[test]
    fn sense10_long_lba() {
        let raw = [MODE_SENSE_10, 0x10, 0x0A, 0, 0, 0, 0, 0x10, 0, 0];
        let d = mode_sense(&Cdb::parse(&raw).unwrap(), true, &cfg(), 5).unwrap();
        assert_eq!(usize::from(u16::from_be_bytes([d[0], d[1]])) + 2, d.len());
        assert_eq!(d[4] & 1, 1);
        assert_eq!(u16::from_be_bytes([d[6], d[7]]), 16);
        assert_eq!(&d[8..16], &5u64.to_be_bytes());
        assert_eq!(&d[20..24], &512u32.to_be_bytes());
        assert_eq!(d[24], 0x0A);
    }

    #[test]
    fn select_accepts_current_rejects_change() {
        let cur = sense6(0x08, 0x08, 255).unwrap();
        let mut sel = cur.clone();
        sel[0] = 0;
        assert!(mode_select(&sel, false, &cfg()).is_ok());
        sel[6] = 0; // clear WCE
        let e = mode_select(&sel, false, &cfg()).unwrap_err();
        assert_eq!(e.asc, ASC_INVALID_FIELD_IN_PARAM_LIST);
        assert_eq!(e.field.unwrap().byte, 6);
    }
}
