//! Answers for a LUN that has no logical unit behind it (SPC-4 "incorrect logical unit").
//!
//! INQUIRY reports peripheral qualifier 011b (no unit can be attached here) so hosts skip the
//! LUN, REPORT LUNS lists the LUNs that do exist, REQUEST SENSE reports LOGICAL UNIT NOT
//! SUPPORTED, and every other command fails with ILLEGAL REQUEST 25/00.

use super::cdb::{Cdb, INQUIRY, REPORT_LUNS, REQUEST_SENSE};
use super::luns::report_luns;
use super::sense::{Sense, SenseKey, ASC_LU_NOT_SUPPORTED};
use super::task::Completion;

/// The completion of `cdb` addressed to a LUN that does not exist; `luns` are the ones that do.
pub fn absent_lun(cdb: &[u8], luns: &[u16]) -> Completion {
    let not_supported = Sense::new(SenseKey::IllegalRequest, ASC_LU_NOT_SUPPORTED);
    let cdb = match Cdb::parse(cdb) {
        Ok(c) => c,
        Err(s) => return Completion::check(s),
    };
    match cdb.opcode() {
        INQUIRY => {
            if cdb.u8(1) & 0x01 != 0 {
                // No VPD pages for a unit that is not there.
                return Completion::check(Sense::invalid_cdb(1, Some(0)));
            }
            let mut data = vec![0u8; 36];
            data[0] = 0x7F; // qualifier 011b, device type 1Fh
            data[2] = 0x06; // SPC-4
            data[3] = 0x02; // response data format 2
            data[4] = 31;
            data[8..16].copy_from_slice(b"TANDEM  ");
            Completion::good_data(data, usize::from(cdb.u16(3)))
        }
        REPORT_LUNS => match report_luns(&cdb, luns) {
            Ok(d) => Completion::good_data(d, usize::MAX),
            Err(s) => Completion::check(s),
        },
        REQUEST_SENSE => {
            let alloc = usize::from(cdb.u8(4));
            Completion::good_data(not_supported.to_fixed().to_vec(), alloc)
        }
        _ => Completion::check(not_supported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::task::Status;

    #[test]
    fn inquiry_says_no_unit_and_everything_else_is_lun_not_supported() {
        let c = absent_lun(&[0x12, 0, 0, 0, 96, 0], &[0]);
        assert_eq!(c.status, Status::Good);
        assert_eq!(c.data[0], 0x7F);
        let c = absent_lun(&[0x00, 0, 0, 0, 0, 0], &[0]);
        assert_eq!(c.status, Status::CheckCondition);
        let s = c.sense_bytes().unwrap();
        assert_eq!((s[2] & 0xf, s[12], s[13]), (5, 0x25, 0));
        let c = absent_lun(&[0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[0, 3]);
        assert_eq!(&c.data[..4], &[0, 0, 0, 16]);
        let c = absent_lun(&[0x03, 0, 0, 0, 18, 0], &[0]);
        assert_eq!((c.data[12], c.data[13]), (0x25, 0));
    }
}
