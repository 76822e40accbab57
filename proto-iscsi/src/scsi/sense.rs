//! Fixed-format sense data (SPC-4 4.5.3): the single place where a SCSI error becomes bytes.
//!
//! Every command handler reports failure as a [`Sense`] value; this module owns the sense keys,
//! the additional sense codes used anywhere in the SCSI layer, and the 18-byte encoding.

/// Length of the fixed-format sense data we produce (additional sense length 10).
pub const FIXED_SENSE_LEN: usize = 18;

/// Sense key (SPC-4 table 27): the coarse class of a failure, which initiators act on first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SenseKey {
    /// No error to report (REQUEST SENSE with nothing pending).
    NoSense = 0x0,
    /// The logical unit cannot be accessed right now (e.g. ALUA standby).
    NotReady = 0x2,
    /// Unrecovered read or write error on the medium (the volume).
    MediumError = 0x3,
    /// The device itself failed (internal error in the gateway).
    HardwareError = 0x4,
    /// The initiator sent something invalid (CDB or parameter list).
    IllegalRequest = 0x5,
    /// Something changed underneath the initiator (reset, capacity, ALUA state, reservations).
    UnitAttention = 0x6,
    /// The medium refuses the write (SBC-3: thin provisioning space allocation failed).
    DataProtect = 0x7,
    /// The command was aborted by the device server.
    AbortedCommand = 0xB,
    /// Source data did not match the medium (COMPARE AND WRITE, VERIFY with BYTCHK).
    Miscompare = 0xE,
}

/// An additional sense code and qualifier pair (ASC/ASCQ, SPC-4 table D.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Asc(pub u8, pub u8);

/// 00/00: no additional sense information.
pub const ASC_NO_ADDITIONAL_SENSE: Asc = Asc(0x00, 0x00);
/// 04/0A: logical unit not accessible, asymmetric access state transition.
pub const ASC_LU_NOT_ACCESSIBLE_TRANSITIONING: Asc = Asc(0x04, 0x0A);
/// 04/0B: logical unit not accessible, target port in standby state.
pub const ASC_LU_NOT_ACCESSIBLE_STANDBY: Asc = Asc(0x04, 0x0B);
/// 04/0C: logical unit not accessible, target port in unavailable state.
pub const ASC_LU_NOT_ACCESSIBLE_UNAVAILABLE: Asc = Asc(0x04, 0x0C);
/// 11/00: unrecovered read error.
pub const ASC_UNRECOVERED_READ_ERROR: Asc = Asc(0x11, 0x00);
/// 0C/00: write error.
pub const ASC_WRITE_ERROR: Asc = Asc(0x0C, 0x00);
/// 1A/00: parameter list length error.
pub const ASC_PARAMETER_LIST_LENGTH_ERROR: Asc = Asc(0x1A, 0x00);
/// 1D/00: miscompare during verify operation.
pub const ASC_MISCOMPARE_DURING_VERIFY: Asc = Asc(0x1D, 0x00);
/// 20/00: invalid command operation code.
pub const ASC_INVALID_OPCODE: Asc = Asc(0x20, 0x00);
/// 21/00: logical block address out of range.
pub const ASC_LBA_OUT_OF_RANGE: Asc = Asc(0x21, 0x00);
/// 24/00: invalid field in CDB.
pub const ASC_INVALID_FIELD_IN_CDB: Asc = Asc(0x24, 0x00);
/// 25/00: logical unit not supported.
pub const ASC_LU_NOT_SUPPORTED: Asc = Asc(0x25, 0x00);
/// 26/00: invalid field in parameter list.
pub const ASC_INVALID_FIELD_IN_PARAM_LIST: Asc = Asc(0x26, 0x00);
/// 29/00: power on, reset, or bus device reset occurred.
pub const ASC_POWER_ON_RESET: Asc = Asc(0x29, 0x00);
/// 2A/03: reservations preempted.
pub const ASC_RESERVATIONS_PREEMPTED: Asc = Asc(0x2A, 0x03);
/// 2A/04: reservations released.
pub const ASC_RESERVATIONS_RELEASED: Asc = Asc(0x2A, 0x04);
/// 2A/05: registrations preempted.
pub const ASC_REGISTRATIONS_PREEMPTED: Asc = Asc(0x2A, 0x05);
/// 2A/06: asymmetric access state changed.
pub const ASC_ASYMMETRIC_ACCESS_STATE_CHANGED: Asc = Asc(0x2A, 0x06);
/// 2A/09: capacity data has changed.
pub const ASC_CAPACITY_DATA_CHANGED: Asc = Asc(0x2A, 0x09);
/// 39/00: saving parameters not supported.
pub const ASC_SAVING_PARAMS_NOT_SUPPORTED: Asc = Asc(0x39, 0x00);
/// 4B/00: the transport lost or reordered data of the command.
pub const ASC_DATA_PHASE_ERROR: Asc = Asc(0x4B, 0x00);
/// 3F/0E: reported LUNs data has changed (a LUN added to or removed from the target).
pub const ASC_REPORTED_LUNS_DATA_CHANGED: Asc = Asc(0x3F, 0x0E);
/// 27/00: write protected (a read-only view of a snapshot; with DATA PROTECT).
pub const ASC_WRITE_PROTECTED: Asc = Asc(0x27, 0x00);
/// 27/07: space allocation failed write protect (thin provisioning hard threshold).
pub const ASC_SPACE_ALLOCATION_FAILED: Asc = Asc(0x27, 0x07);
/// 38/07: thin provisioning soft threshold reached (a unit attention).
pub const ASC_THIN_PROVISIONING_SOFT_THRESHOLD: Asc = Asc(0x38, 0x07);
/// 44/00: internal target failure.
pub const ASC_INTERNAL_TARGET_FAILURE: Asc = Asc(0x44, 0x00);
/// 55/04: insufficient registration resources.
pub const ASC_INSUFFICIENT_REGISTRATION_RESOURCES: Asc = Asc(0x55, 0x04);

/// Where in the CDB or parameter list the offending field is (sense-key specific, SPC-4 4.5.2.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldPointer {
    /// True when the field is in the CDB, false when it is in the parameter list (C/D bit).
    pub in_cdb: bool,
    /// Byte offset of the field.
    pub byte: u16,
    /// Bit of the field's most significant bit, when meaningful (BPV=1).
    pub bit: Option<u8>,
}

/// A SCSI error as the initiator will see it: CHECK CONDITION plus this sense data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sense {
    /// Coarse error class.
    pub key: SenseKey,
    /// Precise error code.
    pub asc: Asc,
    /// INFORMATION field (VALID=1) — e.g. miscompare offset.
    pub information: Option<u32>,
    /// Sense-key specific field pointer (SKSV=1).
    pub field: Option<FieldPointer>,
}

impl Sense {
    /// A sense value with no INFORMATION and no field pointer.
    pub const fn new(key: SenseKey, asc: Asc) -> Self {
        Sense {
            key,
            asc,
            information: None,
            field: None,
        }
    }

    /// ILLEGAL REQUEST / INVALID FIELD IN CDB pointing at `byte` (and `bit`) of the CDB.
    pub const fn invalid_cdb(byte: u16, bit: Option<u8>) -> Self {
        Sense {
            key: SenseKey::IllegalRequest,
            asc: ASC_INVALID_FIELD_IN_CDB,
            information: None,
            field: Some(FieldPointer {
                in_cdb: true,
                byte,
                bit,
            }),
        }
    }

    /// ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST pointing at `byte` of the data-out buffer.
    pub const fn invalid_param(byte: u16, bit: Option<u8>) -> Self {
        Sense {
            key: SenseKey::IllegalRequest,
            asc: ASC_INVALID_FIELD_IN_PARAM_LIST,
            information: None,
            field: Some(FieldPointer {
                in_cdb: false,
                byte,
                bit,
            }),
        }
    }

    /// ILLEGAL REQUEST / PARAMETER LIST LENGTH ERROR.
    pub const fn param_list_length() -> Self {
        Sense::new(SenseKey::IllegalRequest, ASC_PARAMETER_LIST_LENGTH_ERROR)
    }

    /// ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE (field pointer at byte 0).
    pub const fn invalid_opcode() -> Self {
        Sense {
            key: SenseKey::IllegalRequest,
            asc: ASC_INVALID_OPCODE,
            information: None,
            field: Some(FieldPointer {
                in_cdb: true,
                byte: 0,
                bit: None,
            }),
        }
    }

    /// ILLEGAL REQUEST / LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const fn lba_out_of_range() -> Self {
        Sense::new(SenseKey::IllegalRequest, ASC_LBA_OUT_OF_RANGE)
    }

    /// DATA PROTECT / WRITE PROTECTED: a command that would change a write-protected medium.
    pub const fn write_protected() -> Self {
        Sense::new(SenseKey::DataProtect, ASC_WRITE_PROTECTED)
    }

    /// HARDWARE ERROR / INTERNAL TARGET FAILURE.
    pub const fn internal() -> Self {
        Sense::new(SenseKey::HardwareError, ASC_INTERNAL_TARGET_FAILURE)
    }

    /// UNIT ATTENTION with the given code.
    pub const fn unit_attention(asc: Asc) -> Self {
        Sense::new(SenseKey::UnitAttention, asc)
    }

    /// MISCOMPARE / MISCOMPARE DURING VERIFY OPERATION with the byte offset of the first mismatch.
    pub const fn miscompare(offset: u32) -> Self {
        Sense {
            key: SenseKey::Miscompare,
            asc: ASC_MISCOMPARE_DURING_VERIFY,
            information: Some(offset),
            field: None,
        }
    }

    /// Encodes as 18 bytes of current-error fixed-format sense data (response code 70h).
    pub fn to_fixed(&self) -> [u8; FIXED_SENSE_LEN] {
        let mut b = [0u8; FIXED_SENSE_LEN];
        b[0] = 0x70;
        if let Some(info) = self.information {
            b[0] |= 0x80;
            b[3..7].copy_from_slice(&info.to_be_bytes());
        }
        b[2] = self.key as u8;
        b[7] = (FIXED_SENSE_LEN - 8) as u8;
        b[12] = self.asc.0;
        b[13] = self.asc.1;
        if let Some(f) = self.field {
            b[15] = 0x80;
            if f.in_cdb {
                b[15] |= 0x40;
            }
            if let Some(bit) = f.bit {
                b[15] |= 0x08 | (bit & 0x07);
            }
            b[16..18].copy_from_slice(&f.byte.to_be_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_layout_matches_spc4() {
        let s = Sense::invalid_cdb(2, Some(5)).to_fixed();
        assert_eq!(s[0], 0x70);
        assert_eq!(s[2], 0x05);
        assert_eq!(s[7], 10);
        assert_eq!((s[12], s[13]), (0x24, 0x00));
        // SKSV | C/D | BPV | bit 5
        assert_eq!(s[15], 0x80 | 0x40 | 0x08 | 5);
        assert_eq!(u16::from_be_bytes([s[16], s[17]]), 2);
    }

    #[test]
    fn information_sets_valid_bit() {
        let s = Sense::miscompare(0x1234).to_fixed();
        assert_eq!(s[0], 0xF0);
        assert_eq!(s[2], 0x0E);
        assert_eq!(&s[3..7], &[0, 0, 0x12, 0x34]);
        assert_eq!((s[12], s[13]), (0x1D, 0x00));
        assert_eq!(s[15], 0);
    }

    #[test]
    fn param_pointer_clears_cd_bit() {
        let s = Sense::invalid_param(8, None).to_fixed();
        assert_eq!(s[15], 0x80);
        assert_eq!((s[12], s[13]), (0x26, 0x00));
        assert_eq!(s[17], 8);
    }
}
