//! Full-feature PDUs an initiator sends and a target receives (RFC 7143 sections 11.3, 11.5,
//! 11.7, 11.14, 11.16, 11.18), each as a struct of its defined fields, with the mapping to and
//! from the raw BHS words. Reserved fields are ignored on receipt and sent as zero. Login and
//! Text requests live in `login_text`.

use bytes::Bytes;

use super::bhs::{bit, set, Lun, RawBhs, FINAL_BIT, W20, W24, W28, W32, W36, W40, W44};
use super::error::{reserved, DecodeError};
use super::fields::{LogoutReason, SnackType, TaskAttribute, TmfFunction};

/// Flag bits of a SCSI Command (byte 1).
const CMD_READ: u8 = 0x40;
const CMD_WRITE: u8 = 0x20;
const CMD_ATTR_MASK: u8 = 0x07;

/// NOP-Out (opcode 0x00): an initiator ping, or the answer to a target's NOP-In.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NopOut {
    /// `I` bit: immediate delivery.
    pub immediate: bool,
    /// LUN (echoed from a NOP-In when answering one).
    pub lun: Lun,
    /// Initiator Task Tag; 0xffffffff when answering a NOP-In.
    pub itt: u32,
    /// Target Transfer Tag; the NOP-In's TTT when answering, else 0xffffffff.
    pub ttt: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// Ping data.
    pub data: Bytes,
}

/// SCSI Command (opcode 0x01): one SCSI task, with optional immediate write data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScsiCommand {
    /// `I` bit: immediate delivery.
    pub immediate: bool,
    /// `F` bit: no unsolicited Data-Out PDUs follow.
    pub final_: bool,
    /// `R` bit: the command reads data from the target.
    pub read: bool,
    /// `W` bit: the command writes data to the target.
    pub write: bool,
    /// Task attribute.
    pub attr: TaskAttribute,
    /// Logical unit addressed.
    pub lun: Lun,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Expected Data Transfer Length (the write length for bidirectional commands).
    pub expected_data_transfer_length: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// The CDB: the 16 BHS bytes followed by any extended CDB AHS bytes. Shorter CDBs are
    /// zero-padded to 16 when encoded, so a decoded CDB is always at least 16 bytes.
    pub cdb: Bytes,
    /// Bidirectional expected read data length AHS, if present.
    pub bidi_read_length: Option<u32>,
    /// Immediate data.
    pub data: Bytes,
}

/// Task Management Function Request (opcode 0x02): abort tasks, reset LUNs and targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    /// `I` bit: immediate delivery.
    pub immediate: bool,
    /// The function requested.
    pub function: TmfFunction,
    /// LUN the function applies to.
    pub lun: Lun,
    /// Initiator Task Tag of this request.
    pub itt: u32,
    /// Referenced Task Tag (ITT of the task to abort), or 0xffffffff.
    pub referenced_task_tag: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// RefCmdSN.
    pub ref_cmd_sn: u32,
    /// ExpDataSN (task reassignment only).
    pub exp_data_sn: u32,
}

/// SCSI Data-Out (opcode 0x05): write data, solicited by an R2T or unsolicited.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataOut {
    /// `F` bit: last PDU of the sequence.
    pub final_: bool,
    /// LUN.
    pub lun: Lun,
    /// Initiator Task Tag of the command.
    pub itt: u32,
    /// Target Transfer Tag of the R2T, or 0xffffffff for unsolicited data.
    pub ttt: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// DataSN within the sequence.
    pub data_sn: u32,
    /// Offset of this data in the command's buffer.
    pub buffer_offset: u32,
    /// The data.
    pub data: Bytes,
}

/// Logout Request (opcode 0x06).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    /// `I` bit: immediate delivery.
    pub immediate: bool,
    /// What to close.
    pub reason: LogoutReason,
    /// Initiator Task Tag.
    pub itt: u32,
    /// CID of the connection to close (reserved for CloseSession).
    pub cid: u16,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
}

/// SNACK Request (opcode 0x10); a target at ErrorRecoveryLevel 0 rejects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnackRequest {
    /// SNACK type.
    pub snack_type: SnackType,
    /// LUN or reserved.
    pub lun: Lun,
    /// Initiator Task Tag or 0xffffffff.
    pub itt: u32,
    /// Target Transfer Tag or SNACK Tag.
    pub ttt_or_snack_tag: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// BegRun.
    pub beg_run: u32,
    /// RunLength.
    pub run_length: u32,
}

impl NopOut {
    pub(crate) fn from_raw(raw: &RawBhs, data: Bytes) -> Self {
        Self {
            immediate: raw.immediate,
            lun: Lun(raw.lun),
            itt: raw.itt,
            ttt: raw.words[W20],
            cmd_sn: raw.words[W24],
            exp_stat_sn: raw.words[W28],
            data,
        }
    }

    pub(crate) fn to_raw(&self) -> RawBhs {
        RawBhs {
            immediate: self.immediate,
            flags: FINAL_BIT,
            lun: self.lun.0,
            itt: self.itt,
            words: [self.ttt, self.cmd_sn, self.exp_stat_sn, 0, 0, 0, 0],
            ..RawBhs::default()
        }
    }
}

impl ScsiCommand {
    pub(crate) fn from_raw(
        raw: &RawBhs,
        cdb: Bytes,
        bidi_read_length: Option<u32>,
        data: Bytes,
    ) -> Result<Self, DecodeError> {
        let attr_raw = raw.flags & CMD_ATTR_MASK;
        Ok(Self {
            immediate: raw.immediate,
            final_: bit(raw.flags, FINAL_BIT),
            read: bit(raw.flags, CMD_READ),
            write: bit(raw.flags, CMD_WRITE),
            attr: TaskAttribute::from_u8(attr_raw).ok_or_else(|| reserved("ATTR", attr_raw))?,
            lun: Lun(raw.lun),
            itt: raw.itt,
            expected_data_transfer_length: raw.words[W20],
            cmd_sn: raw.words[W24],
            exp_stat_sn: raw.words[W28],
            cdb,
            bidi_read_length,
            data,
        })
    }

    /// The raw BHS; CDB bytes 0..16 go into words 32..48.
    pub(crate) fn to_raw(&self) -> RawBhs {
        let mut cdb = [0u8; 16];
        for (dst, src) in cdb.iter_mut().zip(self.cdb.iter()) {
            *dst = *src;
        }
        let word = |i: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&cdb[i * 4..i * 4 + 4]);
            u32::from_be_bytes(w)
        };
        RawBhs {
            immediate: self.immediate,
            flags: set(self.final_, FINAL_BIT)
                | set(self.read, CMD_READ)
                | set(self.write, CMD_WRITE)
                | self.attr.as_u8(),
            lun: self.lun.0,
            itt: self.itt,
            words: [
                self.expected_data_transfer_length,
                self.cmd_sn,
                self.exp_stat_sn,
                word(0),
                word(1),
                word(2),
                word(3),
            ],
            ..RawBhs::default()
        }
    }

    /// The 16 CDB bytes carried in the BHS of a raw header.
    pub(crate) fn bhs_cdb(raw: &RawBhs) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (chunk, word) in out.chunks_exact_mut(4).zip([
            raw.words[W32],
            raw.words[W36],
            raw.words[W40],
            raw.words[W44],
        ]) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

impl TaskMgmtRequest {
    pub(crate) fn from_raw(raw: &RawBhs) -> Self {
        Self {
            immediate: raw.immediate,
            function: TmfFunction::from_u8(raw.flags & 0x7F),
            lun: Lun(raw.lun),
            itt: raw.itt,
            referenced_task_tag: raw.words[W20],
            cmd_sn: raw.words[W24],
            exp_stat_sn: raw.words[W28],
            ref_cmd_sn: raw.words[W32],
            exp_data_sn: raw.words[W36],
        }
    }

    pub(crate) fn to_raw(&self) -> RawBhs {
        RawBhs {
            immediate: self.immediate,
            flags: FINAL_BIT | (self.function.as_u8() & 0x7F),
            lun: self.lun.0,
            itt: self.itt,
            words: [
                self.referenced_task_tag,
                self.cmd_sn,
                self.exp_stat_sn,
                self.ref_cmd_sn,
                self.exp_data_sn,
                0,
                0,
            ],
            ..RawBhs::default()
        }
    }
}

impl DataOut {
    pub(crate) fn from_raw(raw: &RawBhs, data: Bytes) -> Self {
        Self {
            final_: bit(raw.flags, FINAL_BIT),
            lun: Lun(raw.lun),
            itt: raw.itt,
            ttt: raw.words[W20],
            exp_stat_sn: raw.words[W28],
            data_sn: raw.words[W36],
            buffer_offset: raw.words[W40],
            data,
        }
    }

    pub(crate) fn to_raw(&self) -> RawBhs {
        RawBhs {
            flags: set(self.final_, FINAL_BIT),
            lun: self.lun.0,
            itt: self.itt,
            words: [
                self.ttt,
                0,
                self.exp_stat_sn,
                0,
                self.data_sn,
                self.buffer_offset,
                0,
            ],
            ..RawBhs::default()
        }
    }
}

impl LogoutRequest {
    pub(crate) fn from_raw(raw: &RawBhs) -> Result<Self, DecodeError> {
        let reason_raw = raw.flags & 0x7F;
        Ok(Self {
            immediate: raw.immediate,
            reason: LogoutReason::from_u8(reason_raw)
                .ok_or_else(|| reserved("logout reason", reason_raw))?,
            itt: raw.itt,
            cid: (raw.words[W20] >> 16) as u16,
            cmd_sn: raw.words[W24],
            exp_stat_sn: raw.words[W28],
        })
    }

    pub(crate) fn to_raw(&self) -> RawBhs {
        RawBhs {
            immediate: self.immediate,
            flags: FINAL_BIT | self.reason.as_u8(),
            itt: self.itt,
            words: [
                u32::from(self.cid) << 16,
                self.cmd_sn,
                self.exp_stat_sn,
                0,
                0,
                0,
                0,
            ],
            ..RawBhs::default()
        }
    }
}

impl SnackRequest {
    pub(crate) fn from_raw(raw: &RawBhs) -> Self {
        Self {
            snack_type: SnackType::from_u8(raw.flags & 0x0F),
            lun: Lun(raw.lun),
            itt: raw.itt,
            ttt_or_snack_tag: raw.words[W20],
            exp_stat_sn: raw.words[W28],
            beg_run: raw.words[W40],
            run_length: raw.words[W44],
        }
    }

    pub(crate) fn to_raw(&self) -> RawBhs {
        RawBhs {
            flags: FINAL_BIT | (self.snack_type.as_u8() & 0x0F),
            lun: self.lun.0,
            itt: self.itt,
            words: [
                self.ttt_or_snack_tag,
                0,
                self.exp_stat_sn,
                0,
                0,
                self.beg_run,
                self.run_length,
            ],
            ..RawBhs::default()
        }
    }
}
