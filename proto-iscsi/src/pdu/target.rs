//! Full-feature PDUs a target sends (RFC 7143 sections 11.4, 11.6, 11.7, 11.8, 11.9, 11.15,
//! 11.19), each as a struct of its defined fields, with the mapping to and from the raw BHS
//! words. Reserved fields are sent as zero and ignored on receipt. Login/Text responses live
//! in `login_text`, Reject in `reject`.

use bytes::Bytes;

use super::bhs::{
    bit, set, Lun, RawBhs, FINAL_BIT, RESERVED_TAG, W20, W24, W28, W32, W36, W40, W44,
};
use super::fields::{AsyncEvent, LogoutResponseCode, ServiceResponse, TmfResponse};

/// Residual flag bits of SCSI Response and Data-In (byte 1).
const BIDI_OVERFLOW: u8 = 0x10;
const BIDI_UNDERFLOW: u8 = 0x08;
const OVERFLOW: u8 = 0x04;
const UNDERFLOW: u8 = 0x02;
/// Data-In `A` (acknowledge) and `S` (status) bits.
const DATA_ACK: u8 = 0x40;
const DATA_STATUS: u8 = 0x01;

/// NOP-In (opcode 0x20): a target ping, or the answer to an initiator's NOP-Out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NopIn {
    /// LUN.
    pub lun: Lun,
    /// Initiator Task Tag of the NOP-Out answered, or 0xffffffff for a target ping.
    pub itt: u32,
    /// Target Transfer Tag: a tag the initiator must echo, or 0xffffffff.
    pub ttt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Ping data.
    pub data: Bytes,
}

/// SCSI Response (opcode 0x21): the status of a finished SCSI task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiResponse {
    /// `o` bit: bidirectional read residual overflow.
    pub bidi_overflow: bool,
    /// `u` bit: bidirectional read residual underflow.
    pub bidi_underflow: bool,
    /// `O` bit: residual overflow.
    pub overflow: bool,
    /// `U` bit: residual underflow.
    pub underflow: bool,
    /// iSCSI service response.
    pub response: ServiceResponse,
    /// SCSI status byte (valid when `response` is CommandCompleted).
    pub status: u8,
    /// Initiator Task Tag of the command.
    pub itt: u32,
    /// SNACK Tag or reserved.
    pub snack_tag: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// ExpDataSN.
    pub exp_data_sn: u32,
    /// Bidirectional read residual count.
    pub bidi_read_residual_count: u32,
    /// Residual count.
    pub residual_count: u32,
    /// Sense data (2-byte SenseLength + sense bytes) or response data.
    pub data: Bytes,
}

/// Task Management Function Response (opcode 0x22).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    /// Outcome of the function.
    pub response: TmfResponse,
    /// Initiator Task Tag of the TMF request.
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
}

/// SCSI Data-In (opcode 0x25): read data, optionally carrying the command's status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataIn {
    /// `F` bit: last PDU of the sequence.
    pub final_: bool,
    /// `A` bit: the initiator must acknowledge (ErrorRecoveryLevel > 0 only).
    pub ack: bool,
    /// `O` bit: residual overflow (with status).
    pub overflow: bool,
    /// `U` bit: residual underflow (with status).
    pub underflow: bool,
    /// `S` bit and Status byte: the SCSI status when this PDU completes the command.
    pub status: Option<u8>,
    /// LUN or reserved.
    pub lun: Lun,
    /// Initiator Task Tag of the command.
    pub itt: u32,
    /// Target Transfer Tag or 0xffffffff.
    pub ttt: u32,
    /// StatSN (meaningful only with status).
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// DataSN.
    pub data_sn: u32,
    /// Offset of this data in the command's buffer.
    pub buffer_offset: u32,
    /// Residual count (with status).
    pub residual_count: u32,
    /// The data.
    pub data: Bytes,
}

/// Ready To Transfer (opcode 0x31): asks for a range of write data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct R2t {
    /// LUN.
    pub lun: Lun,
    /// Initiator Task Tag of the command.
    pub itt: u32,
    /// Target Transfer Tag the Data-Out PDUs must carry.
    pub ttt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// R2TSN.
    pub r2t_sn: u32,
    /// Offset of the requested data.
    pub buffer_offset: u32,
    /// Desired Data Transfer Length.
    pub desired_data_transfer_length: u32,
}

/// Asynchronous Message (opcode 0x32): target-initiated events (logout requests, SCSI AENs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncMessage {
    /// LUN or reserved.
    pub lun: Lun,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// AsyncEvent.
    pub event: AsyncEvent,
    /// AsyncVCode.
    pub vendor_code: u8,
    /// Parameter1.
    pub parameter1: u16,
    /// Parameter2.
    pub parameter2: u16,
    /// Parameter3.
    pub parameter3: u16,
    /// Sense data and iSCSI event data.
    pub data: Bytes,
}

/// Logout Response (opcode 0x26).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutResponse {
    /// Outcome.
    pub response: LogoutResponseCode,
    /// Initiator Task Tag (echoed).
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Time2Wait.
    pub time2wait: u16,
    /// Time2Retain.
    pub time2retain: u16,
}

impl NopIn {
    pub(crate) fn from_raw(raw: &RawBhs, data: Bytes) -> Self {
        Self {
            lun: Lun(raw.lun),
            itt: raw.itt,
            ttt: raw.words[W20],
            stat_sn: raw.words[W24],
            exp_cmd_sn: raw.words[W28],
            max_cmd_sn: raw.words[W32],
            data,
        }
    }

    pub(crate) fn to_raw(&self) -> RawBhs {
        RawBhs {
            flags: FINAL_BIT,
            lun: self.lun.0,
            itt: self.itt,
            words: [
                self.ttt,
                self.stat_sn,
                self.exp_cmd_sn,
                self.max_cmd_sn,
                0,
                0,
                0,
            ],
            ..RawBhs::default()
        }
    }
}

impl ScsiResponse {
    /// The sense data inside the data segment (after its 2-byte SenseLength), if any; lets
    /// a test initiator read CHECK CONDITION details.
    pub fn sense_data(&self) -> Option<&[u8]> {
        let [hi, lo, rest @ ..] = self.data.as_ref() else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        rest.get(..len).filter(|s| !s.is_empty())
    }

    /// Builds the data segment of a SCSI Response carrying `sense` (SenseLength + bytes).
    pub fn sense_segment(sense: &[u8]) -> Bytes {
        let len = u16::try_from(sense.len()).unwrap_or(u16::MAX);
        let mut out = Vec::with_capacity(2 + sense.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(sense.get(..usize::from(len)).unwrap_or(sense));
        Bytes::from(out)
    }

    pub(crate) fn from_raw(raw: &RawBhs, data: Bytes) -> Self {
        Self {
            bidi_overflow: bit(raw.flags, BIDI_OVERFLOW),
            bidi_underflow: bit(raw.flags, BIDI_UNDERFLOW),
            overflow: bit(raw.flags, OVERFLOW),
            underflow: bit(raw.flags, UNDERFLOW),
            response: ServiceResponse::from_u8(raw.b2),
            status: raw.b3,
            itt: raw.itt,
            snack_tag: raw.words[W20],
            stat_sn: raw.words[W24],
            exp_cmd_sn: raw.words[W28],
            max_cmd_sn: raw.words[W32],
            exp_data_sn: raw.words[W36],
            bidi_read_residual_count: raw.words[W40],
            residual_count: raw.words[W44],
            data,
        }
    }

    pub(crate) fn to_raw(&self) -> RawBhs {
        RawBhs {
            flags: FINAL_BIT
                | set(self.bidi_overflow, BIDI_OVERFLOW)
                | set(self.bidi_underflow, BIDI_UNDERFLOW)
                | set(self.overflow, OVERFLOW)
                | set(self.underflow, UNDERFLOW),
            b2: self.response.as_u8(),
            b3: self.status,
            itt: self.itt,
            words: [
                self.snack_tag,
                self.stat_sn,
                self.exp_cmd_sn,
                self.max_cmd_sn,
                self.exp_data_sn,
                self.bidi_read_residual_count,
                self.residual_count,
            ],
            ..RawBhs::default()
        }
    }
}

impl TaskMgmtResponse {
    pub(crate) fn from_raw(raw: &RawBhs) -> Self {
        Self {
            response: TmfResponse::from_u8(raw.b2),
            itt: raw.itt,
            stat_sn: raw.words[W24],
            exp_cmd_sn: raw.words[W28],
            max_cmd_sn: raw.words[W32],
        }
    }

    pub(crate) fn to_raw(&self) -> RawBhs {
        RawBhs {
            flags: FINAL_BIT,
            b2: self.response.as_u8(),
            itt: self.itt,
            words: [0, self.stat_sn, self.exp_cmd_sn, self.max_cmd_sn, 0, 0, 0],
            ..RawBhs::default()
        }
    }
}

impl DataIn {
    pub(crate) fn from_raw(raw: &RawBhs, data: Bytes) -> Self {
        Self {
            final_: bit(raw.flags, FINAL_BIT),
            ack: bit(raw.flags, DATA_ACK),
            overflow: bit(raw.flags, OVERFLOW),
            underflow: bit(raw.flags, UNDERFLOW),
            status: bit(raw.flags, DATA_STATUS).then_some(raw.b3),
            lun: Lun(raw.lun),
            itt: raw.itt,
            ttt: raw.words[W20],
            stat_sn: raw.words[W24],
            exp_cmd_sn: raw.words[W28],
            max_cmd_sn: raw.words[W32],
            data_sn: raw.words[W36],
            buffer_offset: raw.words[W40],
            residual_count: raw.words[W44],
            data,
        }
    }

    pub(crate) fn to_raw(&self) -> RawBhs {
        RawBhs {
            flags: set(self.final_, FINAL_BIT)
                | set(self.ack, DATA_ACK)
                | set(self.overflow, OVERFLOW)
                | set(self.underflow, UNDERFLOW)
                | set(self.status.is_some(), DATA_STATUS),
            b3: self.status.unwrap_or(0),
            lun: self.lun.0,
            itt: self.itt,
            words: [
                self.ttt,
                self.stat_sn,
                self.exp_cmd_sn,
                self.max_cmd_sn,
                self.data_sn,
                self.buffer_offset,
                self.residual_count,
            ],
            ..RawBhs::default()
        }
    }
}

impl R2t {
    pub(crate) fn from_raw(raw: &RawBhs) -> Self {
        Self {
            lun: Lun(raw.lun),
            itt: raw.itt,
            ttt: raw.words[W20],
            stat_sn: raw.words[W24],
            exp_cmd_sn: raw.words[W28],
            max_cmd_sn: raw.words[W32],
            r2t_sn: raw.words[W36],
            buffer_offset: raw.words[W40],
            desired_data_transfer_length: raw.words[W44],
        }
    }

    pub(crate) fn to_raw(&self) -> RawBhs {
        RawBhs {
            flags: FINAL_BIT,
            lun: self.lun.0,
            itt: self.itt,
            words: [
                self.ttt,
                self.stat_sn,
                self.exp_cmd_sn,
                self.max_cmd_sn,
                self.r2t_sn,
                self.buffer_offset,
                self.desired_data_transfer_length,
            ],
            ..RawBhs::default()
        }
    }
}

impl AsyncMessage {
    pub(crate) fn from_raw(raw: &RawBhs, data: Bytes) -> Self {
        let [event, vendor_code, p1_hi, p1_lo] = raw.words[W36].to_be_bytes();
        let [p2_hi, p2_lo, p3_hi, p3_lo] = raw.words[W40].to_be_bytes();
        Self {
            lun: Lun(raw.lun),
            stat_sn: raw.words[W24],
            exp_cmd_sn: raw.words[W28],
            max_cmd_sn: raw.words[W32],
            event: AsyncEvent::from_u8(event),
            vendor_code,
            parameter1: u16::from_be_bytes([p1_hi, p1_lo]),
            parameter2: u16::from_be_bytes([p2_hi, p2_lo]),
            parameter3: u16::from_be_bytes([p3_hi, p3_lo]),
            data,
        }
    }

    pub(crate) fn to_raw(&self) -> RawBhs {
        let [p1_hi, p1_lo] = self.parameter1.to_be_bytes();
        RawBhs {
            flags: FINAL_BIT,
            lun: self.lun.0,
            itt: RESERVED_TAG,
            words: [
                0,
                self.stat_sn,
                self.exp_cmd_sn,
                self.max_cmd_sn,
                u32::from_be_bytes([self.event.as_u8(), self.vendor_code, p1_hi, p1_lo]),
                (u32::from(self.parameter2) << 16) | u32::from(self.parameter3),
                0,
            ],
            ..RawBhs::default()
        }
    }
}

impl LogoutResponse {
    pub(crate) fn from_raw(raw: &RawBhs) -> Self {
        let [w_hi, w_lo, r_hi, r_lo] = raw.words[W40].to_be_bytes();
        Self {
            response: LogoutResponseCode::from_u8(raw.b2),
            itt: raw.itt,
            stat_sn: raw.words[W24],
            exp_cmd_sn: raw.words[W28],
            max_cmd_sn: raw.words[W32],
            time2wait: u16::from_be_bytes([w_hi, w_lo]),
            time2retain: u16::from_be_bytes([r_hi, r_lo]),
        }
    }

    pub(crate) fn to_raw(&self) -> RawBhs {
        RawBhs {
            flags: FINAL_BIT,
            b2: self.response.as_u8(),
            itt: self.itt,
            words: [
                0,
                self.stat_sn,
                self.exp_cmd_sn,
                self.max_cmd_sn,
                0,
                (u32::from(self.time2wait) << 16) | u32::from(self.time2retain),
                0,
            ],
            ..RawBhs::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sense_segment_round_trip() {
        let seg = ScsiResponse::sense_segment(&[0x70, 0, 5]);
        assert_eq!(seg.as_ref(), &[0, 3, 0x70, 0, 5]);
        let rsp = ScsiResponse::from_raw(&RawBhs::default(), seg);
        assert_eq!(rsp.sense_data(), Some(&[0x70, 0, 5][..]));
        let empty = ScsiResponse::from_raw(&RawBhs::default(), Bytes::new());
        assert_eq!(empty.sense_data(), None);
        // W44 word exists so the residual count is read from offset 44.
        let mut raw = RawBhs::default();
        raw.words[W44] = 9;
        assert_eq!(ScsiResponse::from_raw(&raw, Bytes::new()).residual_count, 9);
    }
}
