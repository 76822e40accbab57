//! REPORT LUNS (SPC-4 6.33): the LUN inventory comes from the caller, which owns the mapping
//! of volumes to LUNs on a target.

use super::cdb::Cdb;
use super::sense::Sense;

/// Encodes a LUN (SAM-5 4.7): peripheral addressing below 256, flat addressing up to 16383.
pub fn encode_lun(lun: u16) -> [u8; 8] {
    let mut out = [0u8; 8];
    if lun < 256 {
        out[1] = lun as u8;
    } else {
        let l = lun & 0x3FFF;
        out[0] = 0x40 | (l >> 8) as u8;
        out[1] = (l & 0xFF) as u8;
    }
    out
}

/// Builds the REPORT LUNS response for `luns`, truncated to the allocation length.
pub fn report_luns(cdb: &Cdb<'_>, luns: &[u16]) -> Result<Vec<u8>, Sense> {
    let select = cdb.u8(2);
    let list: &[u16] = match select {
        0x00 | 0x02 => luns,
        0x01 => &[], // well-known LUNs only: we have none
        _ => return Err(Sense::invalid_cdb(2, None)),
    };
    let alloc = cdb.u32(6) as usize;
    let mut out = Vec::with_capacity(8 + list.len() * 8);
    out.extend_from_slice(&((list.len() * 8) as u32).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    for l in list {
        out.extend_from_slice(&encode_lun(*l));
    }
    out.truncate(alloc);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::cdb::REPORT_LUNS;

    fn run(select: u8, alloc: u32, luns: &[u16]) -> Result<Vec<u8>, Sense> {
        let mut raw = [0u8; 12];
        raw[0] = REPORT_LUNS;
        raw[2] = select;
        raw[6..10].copy_from_slice(&alloc.to_be_bytes());
        report_luns(&Cdb::parse(&raw).unwrap(), luns)
    }

    #[test]
    fn lists_luns() {
        let d = run(0, 4096, &[0, 1, 300]).unwrap();
        assert_eq!(&d[0..4], &24u32.to_be_bytes());
        assert_eq!(&d[8..16], &[0; 8]);
        assert_eq!(d[17], 1);
        assert_eq!(&d[24..26], &[0x41, 0x2C]);
    }

    #[test]
    fn select_report_and_truncation() {
        assert_eq!(&run(1, 4096, &[0]).unwrap()[0..4], &[0; 4]);
        assert!(run(3, 4096, &[0]).is_err());
        assert_eq!(run(0, 10, &[0, 1]).unwrap().len(), 10);
    }
}
