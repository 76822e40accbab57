//! Login and Text PDUs (RFC 7143 sections 11.10-11.13): the key=value carriers of login
//! negotiation and full-feature text exchanges, in both directions, plus the CSG/NSG and
//! ISID/TSIH helpers they share.

use bytes::Bytes;

use super::bhs::{bit, set, Lun, RawBhs, FINAL_BIT, W20, W24, W28, W32, W36};
use super::error::{reserved, DecodeError};
use super::fields::Stage;

/// Transit and Continue bits of Login and Text PDUs (byte 1).
pub(crate) const TRANSIT_BIT: u8 = 0x80;
pub(crate) const CONTINUE_BIT: u8 = 0x40;

/// Login Request (opcode 0x03; the `I` bit is always set on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoginRequest {
    /// `T` bit: the initiator wants to move to `nsg`.
    pub transit: bool,
    /// `C` bit: the text is continued in the next PDU.
    pub continue_: bool,
    /// Current stage.
    pub csg: Stage,
    /// Next stage (meaningful only with `transit`).
    pub nsg: Stage,
    /// Version-max.
    pub version_max: u8,
    /// Version-min.
    pub version_min: u8,
    /// Initiator Session ID.
    pub isid: [u8; 6],
    /// Target Session Identifying Handle (0 for a new session).
    pub tsih: u16,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Connection ID.
    pub cid: u16,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// Login text (key=value pairs).
    pub data: Bytes,
}

/// Text Request (opcode 0x04): text negotiation and SendTargets discovery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextRequest {
    /// `I` bit: immediate delivery.
    pub immediate: bool,
    /// `F` bit: last PDU of the request.
    pub final_: bool,
    /// `C` bit: the text is continued in the next PDU.
    pub continue_: bool,
    /// LUN or reserved.
    pub lun: Lun,
    /// Initiator Task Tag.
    pub itt: u32,
    /// Target Transfer Tag (0xffffffff to start a new exchange).
    pub ttt: u32,
    /// CmdSN.
    pub cmd_sn: u32,
    /// ExpStatSN.
    pub exp_stat_sn: u32,
    /// Text (key=value pairs).
    pub data: Bytes,
}

/// Decodes CSG and NSG from Login/Text flags, refusing the reserved stage value 2.
pub(crate) fn stages(flags: u8) -> Result<(Stage, Stage), DecodeError> {
    let csg_raw = (flags >> 2) & 0x03;
    let nsg_raw = flags & 0x03;
    let csg = Stage::from_u8(csg_raw).ok_or_else(|| reserved("CSG", csg_raw))?;
    let nsg = Stage::from_u8(nsg_raw).ok_or_else(|| reserved("NSG", nsg_raw))?;
    Ok((csg, nsg))
}

/// Builds the flags byte of a Login Request or Response.
pub(crate) fn login_flags(transit: bool, continue_: bool, csg: Stage, nsg: Stage) -> u8 {
    set(transit, TRANSIT_BIT) | set(continue_, CONTINUE_BIT) | (csg.as_u8() << 2) | nsg.as_u8()
}

/// Splits the 8 bytes at offset 8 of a login PDU into ISID and TSIH.
pub(crate) fn isid_tsih(bytes: [u8; 8]) -> ([u8; 6], u16) {
    let [a, b, c, d, e, f, g, h] = bytes;
    ([a, b, c, d, e, f], u16::from_be_bytes([g, h]))
}

/// Joins ISID and TSIH into the 8 bytes at offset 8 of a login PDU.
pub(crate) fn join_isid_tsih(isid: [u8; 6], tsih: u16) -> [u8; 8] {
    let [a, b, c, d, e, f] = isid;
    let [g, h] = tsih.to_be_bytes();
    [a, b, c, d, e, f, g, h]
}

impl LoginRequest {
    pub(crate) fn from_raw(raw: &RawBhs, data: Bytes) -> Result<Self, DecodeError> {
        let (csg, nsg) = stages(raw.flags)?;
        let (isid, tsih) = isid_tsih(raw.lun);
        Ok(Self {
            transit: bit(raw.flags, TRANSIT_BIT),
            continue_: bit(raw.flags, CONTINUE_BIT),
            csg,
            nsg,
            version_max: raw.b2,
            version_min: raw.b3,
            isid,
            tsih,
            itt: raw.itt,
            cid: (raw.words[W20] >> 16) as u16,
            cmd_sn: raw.words[W24],
            exp_stat_sn: raw.words[W28],
            data,
        })
    }

    pub(crate) fn to_raw(&self) -> RawBhs {
        RawBhs {
            immediate: true,
            flags: login_flags(self.transit, self.continue_, self.csg, self.nsg),
            b2: self.version_max,
            b3: self.version_min,
            lun: join_isid_tsih(self.isid, self.tsih),
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

impl TextRequest {
    pub(crate) fn from_raw(raw: &RawBhs, data: Bytes) -> Self {
        Self {
            immediate: raw.immediate,
            final_: bit(raw.flags, FINAL_BIT),
            continue_: bit(raw.flags, CONTINUE_BIT),
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
            flags: set(self.final_, FINAL_BIT) | set(self.continue_, CONTINUE_BIT),
            lun: self.lun.0,
            itt: self.itt,
            words: [self.ttt, self.cmd_sn, self.exp_stat_sn, 0, 0, 0, 0],
            ..RawBhs::default()
        }
    }
}

/// Login Response (opcode 0x23).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoginResponse {
    /// `T` bit: the target agrees to move to `nsg`.
    pub transit: bool,
    /// `C` bit: the text is continued in the next PDU.
    pub continue_: bool,
    /// Current stage.
    pub csg: Stage,
    /// Next stage.
    pub nsg: Stage,
    /// Version-max.
    pub version_max: u8,
    /// Version-active.
    pub version_active: u8,
    /// Initiator Session ID (echoed).
    pub isid: [u8; 6],
    /// Target Session Identifying Handle.
    pub tsih: u16,
    /// Initiator Task Tag (echoed).
    pub itt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Status-Class (see [`super::fields::login_status`]).
    pub status_class: u8,
    /// Status-Detail.
    pub status_detail: u8,
    /// Login text (key=value pairs).
    pub data: Bytes,
}

/// Text Response (opcode 0x24).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextResponse {
    /// `F` bit: last PDU of the response.
    pub final_: bool,
    /// `C` bit: the text is continued in the next PDU.
    pub continue_: bool,
    /// LUN or reserved.
    pub lun: Lun,
    /// Initiator Task Tag (echoed).
    pub itt: u32,
    /// Target Transfer Tag: 0xffffffff when final, else a tag for continuation.
    pub ttt: u32,
    /// StatSN.
    pub stat_sn: u32,
    /// ExpCmdSN.
    pub exp_cmd_sn: u32,
    /// MaxCmdSN.
    pub max_cmd_sn: u32,
    /// Text (key=value pairs).
    pub data: Bytes,
}

impl LoginResponse {
    pub(crate) fn from_raw(raw: &RawBhs, data: Bytes) -> Result<Self, DecodeError> {
        let (csg, nsg) = stages(raw.flags)?;
        let (isid, tsih) = isid_tsih(raw.lun);
        let [status_class, status_detail, _, _] = raw.words[W36].to_be_bytes();
        Ok(Self {
            transit: bit(raw.flags, TRANSIT_BIT),
            continue_: bit(raw.flags, CONTINUE_BIT),
            csg,
            nsg,
            version_max: raw.b2,
            version_active: raw.b3,
            isid,
            tsih,
            itt: raw.itt,
            stat_sn: raw.words[W24],
            exp_cmd_sn: raw.words[W28],
            max_cmd_sn: raw.words[W32],
            status_class,
            status_detail,
            data,
        })
    }

    pub(crate) fn to_raw(&self) -> RawBhs {
        RawBhs {
            flags: login_flags(self.transit, self.continue_, self.csg, self.nsg),
            b2: self.version_max,
            b3: self.version_active,
            lun: join_isid_tsih(self.isid, self.tsih),
            itt: self.itt,
            words: [
                0,
                self.stat_sn,
                self.exp_cmd_sn,
                self.max_cmd_sn,
                u32::from_be_bytes([self.status_class, self.status_detail, 0, 0]),
                0,
                0,
            ],
            ..RawBhs::default()
        }
    }
}

impl TextResponse {
    pub(crate) fn from_raw(raw: &RawBhs, data: Bytes) -> Self {
        Self {
            final_: bit(raw.flags, FINAL_BIT),
            continue_: bit(raw.flags, CONTINUE_BIT),
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
            flags: set(self.final_, FINAL_BIT) | set(self.continue_, CONTINUE_BIT),
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
