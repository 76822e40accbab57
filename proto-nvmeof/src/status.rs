//! NVMe completion status values (NVMe base 2.0 section 4.2.3, NVMe-oF 1.1 figure 22).
//!
//! [`Status`] uses the same packing as the Linux kernel's `NVME_SC_*` constants: SC in bits
//! 7:0, SCT in bits 10:8, CRD in 12:11, MORE bit 13, DNR bit 14. The CQE shifts it left by
//! one to make room for the phase tag.

/// A completion status (without the phase tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Status(pub u16);

impl Status {
    /// Successful completion.
    pub const SUCCESS: Status = Status(0x000);
    /// Invalid command opcode.
    pub const INVALID_OPCODE: Status = Status(0x001);
    /// Invalid field in command.
    pub const INVALID_FIELD: Status = Status(0x002);
    /// Command ID conflict.
    pub const CID_CONFLICT: Status = Status(0x003);
    /// Data transfer error.
    pub const DATA_TRANSFER_ERROR: Status = Status(0x004);
    /// Internal error.
    pub const INTERNAL: Status = Status(0x006);
    /// Command abort requested.
    pub const ABORT_REQUESTED: Status = Status(0x007);
    /// Invalid namespace or format.
    pub const INVALID_NS: Status = Status(0x00B);
    /// Command sequence error.
    pub const COMMAND_SEQUENCE_ERROR: Status = Status(0x00C);
    /// Data SGL length invalid.
    pub const SGL_INVALID_DATA: Status = Status(0x00F);
    /// Host identifier inconsistent format (reservation report without EDS).
    pub const HOST_ID_INCONSISTENT: Status = Status(0x018);
    /// SGL descriptor type invalid.
    pub const SGL_INVALID_TYPE: Status = Status(0x011);
    /// SGL offset invalid.
    pub const SGL_INVALID_OFFSET: Status = Status(0x016);
    /// Keep alive timer expired.
    pub const KEEP_ALIVE_EXPIRED: Status = Status(0x019);
    /// Keep alive timeout invalid.
    pub const KEEP_ALIVE_INVALID: Status = Status(0x01A);
    /// Command Aborted due to Preempt and Abort (a Reservation Acquire by another host).
    pub const ABORTED_PREEMPT: Status = Status(0x01B);
    /// Namespace Is Write Protected (a read-only view of a snapshot).
    pub const NS_WRITE_PROTECTED: Status = Status(0x020);
    /// Transient transport error (e.g. data digest mismatch).
    pub const TRANSIENT_TRANSPORT_ERROR: Status = Status(0x022);
    /// LBA out of range.
    pub const LBA_OUT_OF_RANGE: Status = Status(0x080);
    /// Capacity exceeded.
    pub const CAPACITY_EXCEEDED: Status = Status(0x081);
    /// Namespace not ready.
    pub const NS_NOT_READY: Status = Status(0x082);
    /// Reservation conflict.
    pub const RESERVATION_CONFLICT: Status = Status(0x083);
    /// Asynchronous event request limit exceeded.
    pub const ASYNC_LIMIT: Status = Status(0x105);
    /// Invalid log page.
    pub const INVALID_LOG_PAGE: Status = Status(0x109);
    /// Feature identifier not saveable.
    pub const FEATURE_NOT_SAVEABLE: Status = Status(0x10D);
    /// Feature not changeable.
    pub const FEATURE_NOT_CHANGEABLE: Status = Status(0x10E);
    /// Fabrics Connect: incompatible format.
    pub const CONNECT_FORMAT: Status = Status(0x180);
    /// Fabrics Connect: controller busy.
    pub const CONNECT_CTRL_BUSY: Status = Status(0x181);
    /// Fabrics Connect: invalid parameters (DW0 carries IATTR/IPO).
    pub const CONNECT_INVALID_PARAM: Status = Status(0x182);
    /// Fabrics Connect: restart discovery.
    pub const CONNECT_RESTART_DISC: Status = Status(0x183);
    /// Fabrics Connect: the host is not allowed to connect.
    pub const CONNECT_INVALID_HOST: Status = Status(0x184);
    /// Authentication required: the queue has not completed in-band authentication.
    pub const AUTH_REQUIRED: Status = Status(0x191);
    /// Compare failure.
    pub const COMPARE_FAILED: Status = Status(0x285);
    /// Unrecovered read error.
    pub const READ_ERROR: Status = Status(0x281);
    /// Write fault.
    pub const WRITE_FAULT: Status = Status(0x280);
    /// Internal path error.
    pub const INTERNAL_PATH_ERROR: Status = Status(0x300);
    /// Asymmetric access persistent loss.
    pub const ANA_PERSISTENT_LOSS: Status = Status(0x301);
    /// Asymmetric access inaccessible.
    pub const ANA_INACCESSIBLE: Status = Status(0x302);
    /// Asymmetric access transition.
    pub const ANA_TRANSITION: Status = Status(0x303);

    /// Status code type bits of [`Status::sct`]: path related.
    pub const SCT_PATH: u8 = 3;

    /// Do Not Retry bit.
    pub const DNR: u16 = 1 << 14;
    /// More bit (more status information in the error log).
    pub const MORE: u16 = 1 << 13;

    /// The same status with DNR set: the host must not retry.
    pub const fn dnr(self) -> Status {
        Status(self.0 | Self::DNR)
    }

    /// Status code (SC).
    pub fn sc(self) -> u8 {
        self.0 as u8
    }

    /// Status code type (SCT).
    pub fn sct(self) -> u8 {
        ((self.0 >> 8) & 7) as u8
    }

    /// Whether DNR is set.
    pub fn is_dnr(self) -> bool {
        self.0 & Self::DNR != 0
    }

    /// Whether the command succeeded.
    pub fn is_success(self) -> bool {
        self.0 & 0x7FF == 0
    }

    /// The status code and type without CRD/MORE/DNR.
    pub fn code(self) -> u16 {
        self.0 & 0x7FF
    }

    /// Whether this is one of the ANA path statuses (persistent loss, inaccessible, change):
    /// the answer of a path whose access state does not serve I/O.
    pub fn is_ana_path(self) -> bool {
        matches!(
            Status(self.code()),
            Status::ANA_PERSISTENT_LOSS | Status::ANA_INACCESSIBLE | Status::ANA_TRANSITION
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ana_statuses_are_path_related_and_retryable() {
        for s in [
            Status::ANA_PERSISTENT_LOSS,
            Status::ANA_INACCESSIBLE,
            Status::ANA_TRANSITION,
        ] {
            assert_eq!(s.sct(), Status::SCT_PATH);
            assert!(!s.is_dnr());
            assert!(s.is_ana_path() && s.dnr().is_ana_path());
        }
        assert!(!Status::RESERVATION_CONFLICT.is_ana_path());
        assert!(!Status::SUCCESS.is_ana_path());
        assert_eq!(Status::ANA_TRANSITION.sc(), 0x03);
        assert!(Status::INVALID_FIELD.dnr().is_dnr());
        assert_eq!(Status::CONNECT_INVALID_HOST.sct(), 1);
        assert_eq!(Status::CONNECT_INVALID_HOST.sc(), 0x84);
    }
}
