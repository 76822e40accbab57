//! Fabrics commands (opcode 7Fh, NVMe-oF 1.1 section 3.3): Connect with its 1024-byte data,
//! Property Get/Set and the controller properties they address.

use crate::padded::nul_padded;
use crate::sqe::Sgl;
use crate::sqe::{Sqe, OPC_FABRICS, SGL_IN_CAPSULE};

/// Fabrics command types (SQE byte 4).
pub mod fctype {
    /// Property Set.
    pub const PROPERTY_SET: u8 = 0x00;
    /// Connect.
    pub const CONNECT: u8 = 0x01;
    /// Property Get.
    pub const PROPERTY_GET: u8 = 0x04;
    /// Authentication Send.
    pub const AUTH_SEND: u8 = 0x05;
    /// Authentication Receive.
    pub const AUTH_RECEIVE: u8 = 0x06;
    /// Disconnect.
    pub const DISCONNECT: u8 = 0x08;
}

/// Controller property offsets.
pub mod property {
    /// Controller Capabilities (8 bytes).
    pub const CAP: u32 = 0x00;
    /// Version (4 bytes).
    pub const VS: u32 = 0x08;
    /// Controller Configuration (4 bytes).
    pub const CC: u32 = 0x14;
    /// Controller Status (4 bytes).
    pub const CSTS: u32 = 0x1C;
}

/// Length of the Connect command data.
pub const CONNECT_DATA_LEN: usize = 1024;
/// CNTLID a host puts in an admin Connect to ask for a dynamically allocated controller.
pub const CNTLID_DYNAMIC: u16 = 0xFFFF;
/// Connect CATTR bit: the host disables SQ flow control (no SQHD tracking needed, C2HData
/// may carry SUCCESS).
pub const CATTR_DISABLE_SQFLOW: u8 = 1 << 2;

/// Byte offsets inside the Connect SQE, for IPO in "invalid parameter" responses.
pub mod connect_sqe_offset {
    /// RECFMT.
    pub const RECFMT: u16 = 40;
    /// QID.
    pub const QID: u16 = 42;
    /// SQSIZE.
    pub const SQSIZE: u16 = 44;
    /// CATTR.
    pub const CATTR: u16 = 46;
    /// KATO.
    pub const KATO: u16 = 48;
}

/// Byte offsets inside the Connect data, for IPO in "invalid parameter" responses.
pub mod connect_data_offset {
    /// HOSTID.
    pub const HOSTID: u16 = 0;
    /// CNTLID.
    pub const CNTLID: u16 = 16;
    /// SUBNQN.
    pub const SUBNQN: u16 = 256;
    /// HOSTNQN.
    pub const HOSTNQN: u16 = 512;
}

/// DW0 of a Connect "invalid parameters" response: IATTR bit 0 set when the offset is in
/// the Connect data (bits 23:16), IPO in bits 15:0.
pub fn invalid_param_dw0(in_data: bool, offset: u16) -> u32 {
    (u32::from(in_data) << 16) | u32::from(offset)
}

/// A decoded Connect command (SQE fields plus the 1024-byte data).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Connect {
    /// Record format (must be 0).
    pub recfmt: u16,
    /// Queue id: 0 for the admin queue.
    pub qid: u16,
    /// Submission queue size, 0's based.
    pub sqsize: u16,
    /// Connect attributes (bit 2: disable SQ flow control).
    pub cattr: u8,
    /// Keep-alive timeout in milliseconds (admin queue only; 0 disables).
    pub kato_ms: u32,
    /// Host identifier.
    pub host_id: [u8; 16],
    /// Controller id: 0xFFFF for a new admin queue, the assigned one for I/O queues.
    pub cntlid: u16,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Host NQN; empty for an anonymous host (admitted only where any host is).
    pub hostnqn: String,
}

/// Why Connect data could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectDataError {
    /// The data is shorter than 1024 bytes.
    #[error("connect data is {0} bytes, 1024 required")]
    Short(usize),
    /// An NQN field is not NUL-terminated printable text (offset of the field).
    #[error("malformed NQN at offset {0}")]
    BadNqn(u16),
}

/// Whether an NQN field may be empty: a host that names no Host NQN (SPDK's host does so by
/// default) is an anonymous host, as Linux nvmet and SPDK's target accept; the subsystem NQN
/// must always be given.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Empty {
    Anonymous,
    Refused,
}

fn nqn_field(data: &[u8], off: u16, empty: Empty) -> Result<String, ConnectDataError> {
    let start = usize::from(off);
    let field = data
        .get(start..start + 256)
        .ok_or(ConnectDataError::Short(data.len()))?;
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let text = field.get(..end).unwrap_or_default();
    if end == field.len() || !text.iter().all(|b| b.is_ascii_graphic()) {
        return Err(ConnectDataError::BadNqn(off));
    }
    if text.is_empty() && empty == Empty::Refused {
        return Err(ConnectDataError::BadNqn(off));
    }
    Ok(String::from_utf8_lossy(text).into_owned())
}

impl Connect {
    /// Decodes a Connect from its SQE and data.
    pub fn parse(sqe: &Sqe, data: &[u8]) -> Result<Self, ConnectDataError> {
        if data.len() < CONNECT_DATA_LEN {
            return Err(ConnectDataError::Short(data.len()));
        }
        let mut host_id = [0u8; 16];
        if let Some(h) = data.get(..16) {
            host_id.copy_from_slice(h);
        }
        Ok(Connect {
            recfmt: sqe.u16_at(40),
            qid: sqe.u16_at(42),
            sqsize: sqe.u16_at(44),
            cattr: sqe.0[46],
            kato_ms: sqe.u32_at(48),
            host_id,
            cntlid: u16::from_le_bytes([data[16], data[17]]),
            subnqn: nqn_field(data, connect_data_offset::SUBNQN, Empty::Refused)?,
            hostnqn: nqn_field(data, connect_data_offset::HOSTNQN, Empty::Anonymous)?,
        })
    }

    /// Encodes the command capsule (host side): SQE with an in-capsule SGL, and the data.
    pub fn encode(&self, cid: u16) -> (Sqe, Vec<u8>) {
        let mut sqe = Sqe::new(OPC_FABRICS, cid);
        sqe.0[4] = fctype::CONNECT;
        sqe.set_sgl(Sgl {
            addr: 0,
            length: CONNECT_DATA_LEN as u32,
            ident: SGL_IN_CAPSULE,
        });
        sqe.put(40, &self.recfmt.to_le_bytes());
        sqe.put(42, &self.qid.to_le_bytes());
        sqe.put(44, &self.sqsize.to_le_bytes());
        sqe.0[46] = self.cattr;
        sqe.put(48, &self.kato_ms.to_le_bytes());
        let mut d = vec![0u8; CONNECT_DATA_LEN];
        d[..16].copy_from_slice(&self.host_id);
        d[16..18].copy_from_slice(&self.cntlid.to_le_bytes());
        d[256..512].copy_from_slice(&nul_padded(&self.subnqn, 256));
        d[512..768].copy_from_slice(&nul_padded(&self.hostnqn, 256));
        (sqe, d)
    }
}

/// A Property Get or Set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PropertyAccess {
    /// Whether the access is 8 bytes (ATTRIB bit 0 = 1) or 4 bytes.
    pub eight_bytes: bool,
    /// Property offset.
    pub offset: u32,
    /// Value to set (Property Set only).
    pub value: u64,
}

impl PropertyAccess {
    /// Decodes the property fields of a Property Get/Set SQE.
    pub fn parse(sqe: &Sqe) -> Self {
        PropertyAccess {
            eight_bytes: sqe.0[40] & 1 != 0,
            offset: sqe.u32_at(44),
            value: sqe.u64_at(48),
        }
    }

    /// Encodes a Property Get (`set` false) or Property Set SQE (host side).
    pub fn encode(&self, cid: u16, set: bool) -> Sqe {
        let mut sqe = Sqe::new(OPC_FABRICS, cid);
        sqe.0[4] = if set {
            fctype::PROPERTY_SET
        } else {
            fctype::PROPERTY_GET
        };
        sqe.0[40] = u8::from(self.eight_bytes);
        sqe.put(44, &self.offset.to_le_bytes());
        if set {
            sqe.put(48, &self.value.to_le_bytes());
        }
        sqe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect() -> Connect {
        Connect {
            recfmt: 0,
            qid: 0,
            sqsize: 31,
            cattr: 0,
            kato_ms: 5000,
            host_id: [7; 16],
            cntlid: CNTLID_DYNAMIC,
            subnqn: "nqn.2024-01.io.tandem:vol".into(),
            hostnqn: "nqn.2014-08.org.nvmexpress:uuid:1".into(),
        }
    }

    #[test]
    fn connect_layout_matches_nvmf_connect_command() {
        let (sqe, data) = connect().encode(9);
        assert_eq!(sqe.0[0], 0x7F);
        assert_eq!(sqe.0[4], 0x01);
        assert_eq!(&sqe.0[44..46], &31u16.to_le_bytes());
        assert_eq!(&sqe.0[48..52], &5000u32.to_le_bytes());
        assert_eq!(&data[16..18], &[0xFF, 0xFF]);
        assert_eq!(&data[256..260], b"nqn.");
        assert_eq!(&data[512..516], b"nqn.");
        assert_eq!(Connect::parse(&sqe, &data), Ok(connect()));
    }

    #[test]
    fn unterminated_nqn_rejected() {
        let (sqe, mut data) = connect().encode(1);
        for b in &mut data[512..768] {
            *b = b'a';
        }
        assert_eq!(
            Connect::parse(&sqe, &data),
            Err(ConnectDataError::BadNqn(512))
        );
        assert_eq!(
            Connect::parse(&sqe, &data[..100]),
            Err(ConnectDataError::Short(100))
        );
    }

    /// The Connect of SPDK's host (`nvme_fabric_qpair_connect`), built byte by byte as it
    /// builds it: a zeroed 1024-byte data buffer, the extended host id, CNTLID 0xFFFF, the
    /// subsystem NQN, and its default Host NQN: none at all (the field stays zeroed).
    fn spdk_connect(subnqn: &str) -> (Sqe, Vec<u8>) {
        let mut sqe = Sqe::new(OPC_FABRICS, 1);
        sqe.0[4] = fctype::CONNECT;
        sqe.set_sgl(Sgl {
            addr: 0,
            length: CONNECT_DATA_LEN as u32,
            ident: SGL_IN_CAPSULE,
        });
        sqe.put(44, &127u16.to_le_bytes()); // num_entries - 1
        sqe.put(48, &10_000u32.to_le_bytes()); // SPDK's default keep-alive
        let mut d = vec![0u8; CONNECT_DATA_LEN];
        d[..16].copy_from_slice(&[0x5a; 16]);
        d[16..18].copy_from_slice(&0xFFFFu16.to_le_bytes());
        d[256..256 + subnqn.len()].copy_from_slice(subnqn.as_bytes());
        (sqe, d)
    }

    #[test]
    fn an_empty_host_nqn_is_an_anonymous_host() {
        let (sqe, data) = spdk_connect("nqn.2024-01.io.tandem:vol");
        let c = Connect::parse(&sqe, &data).unwrap();
        assert_eq!(c.hostnqn, "");
        assert_eq!(c.subnqn, "nqn.2024-01.io.tandem:vol");
        assert_eq!(
            (c.cntlid, c.sqsize, c.kato_ms),
            (CNTLID_DYNAMIC, 127, 10_000)
        );
        assert_eq!(c.host_id, [0x5a; 16]);
    }

    #[test]
    fn an_empty_subsystem_nqn_is_refused() {
        let (sqe, data) = spdk_connect("");
        assert_eq!(
            Connect::parse(&sqe, &data),
            Err(ConnectDataError::BadNqn(256))
        );
    }

    #[test]
    fn invalid_param_encoding() {
        assert_eq!(invalid_param_dw0(true, 256), 0x0001_0100);
        assert_eq!(invalid_param_dw0(false, 44), 44);
    }
}
