//! The authentication protocol messages AUTH_Send and AUTH_Receive carry (NVMe base 2.0
//! section 8.13.5 and figures 19x: AUTH_Negotiate, DH-HMAC-CHAP_Challenge, _Reply, _Success1,
//! _Success2, _Failure1 and _Failure2), decoded from hostile bytes with typed errors and
//! encoded for the other side.
//!
//! Every message starts with AUTH-Type (00h common, 01h DH-HMAC-CHAP), AUTH-Id, two reserved
//! bytes and the little-endian transaction id T_ID.

/// AUTH-Type of the common messages (AUTH_Negotiate, the failures).
pub const AUTH_TYPE_COMMON: u8 = 0x00;
/// AUTH-Type of the DH-HMAC-CHAP messages.
pub const AUTH_TYPE_DHCHAP: u8 = 0x01;
/// AUTH-Id values.
pub mod auth_id {
    /// AUTH_Negotiate.
    pub const NEGOTIATE: u8 = 0x00;
    /// DH-HMAC-CHAP_Challenge.
    pub const CHALLENGE: u8 = 0x01;
    /// DH-HMAC-CHAP_Reply.
    pub const REPLY: u8 = 0x02;
    /// DH-HMAC-CHAP_Success1.
    pub const SUCCESS1: u8 = 0x03;
    /// DH-HMAC-CHAP_Success2.
    pub const SUCCESS2: u8 = 0x04;
    /// AUTH_Failure2 (host to controller).
    pub const FAILURE2: u8 = 0xF0;
    /// AUTH_Failure1 (controller to host).
    pub const FAILURE1: u8 = 0xF1;
}
/// AUTHID of the DH-HMAC-CHAP protocol descriptor in AUTH_Negotiate.
pub const DHCHAP_AUTH_ID: u8 = 0x01;
/// Identifiers a protocol descriptor can list per kind (hash functions, DH groups).
pub const MAX_IDS: usize = 30;
/// Size of one protocol descriptor.
pub const DESCRIPTOR_LEN: usize = 64;
/// Reason code of a failure: authentication failed.
pub const REASON_FAILED: u8 = 0x01;

/// Reason code explanations of AUTH_Failure1/2.
pub mod explanation {
    /// Authentication failed (a response did not verify).
    pub const FAILED: u8 = 0x01;
    /// Authentication protocol not usable.
    pub const NOT_USABLE: u8 = 0x02;
    /// Secure channel concatenation mismatch.
    pub const CONCAT_MISMATCH: u8 = 0x03;
    /// No offered hash function is usable.
    pub const HASH_UNUSABLE: u8 = 0x04;
    /// No offered DH group is usable.
    pub const DHGROUP_UNUSABLE: u8 = 0x05;
    /// Incorrect payload.
    pub const INCORRECT_PAYLOAD: u8 = 0x06;
    /// Incorrect protocol message.
    pub const INCORRECT_MESSAGE: u8 = 0x07;
}

/// Why bytes are not an authentication message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthDecodeError {
    /// Fewer bytes than the message's fixed part and the lengths it declares.
    #[error("authentication message is {len} bytes, {need} needed")]
    Short {
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// An AUTH-Type / AUTH-Id pair this protocol does not define.
    #[error("unknown authentication message type {auth_type:#04x} id {auth_id:#04x}")]
    Unknown {
        /// AUTH-Type.
        auth_type: u8,
        /// AUTH-Id.
        auth_id: u8,
    },
    /// AUTH_Negotiate without a DH-HMAC-CHAP protocol descriptor.
    #[error("AUTH_Negotiate offers no DH-HMAC-CHAP protocol descriptor")]
    NoDhchap,
    /// A descriptor lists more than 30 hash functions or DH groups.
    #[error(
        "protocol descriptor lists {halen} hash functions and {dhlen} DH groups (at most 30 each)"
    )]
    IdList {
        /// HALEN.
        halen: u8,
        /// DHLEN.
        dhlen: u8,
    },
}

/// AUTH_Negotiate: the host's offer (the DH-HMAC-CHAP descriptor's lists, raw identifiers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiate {
    /// Transaction id.
    pub tid: u16,
    /// Secure channel concatenation (SC_C; 0: none).
    pub sc_c: u8,
    /// HashIDs offered, in the host's order.
    pub hashes: Vec<u8>,
    /// DH group ids offered, in the host's order.
    pub dhgroups: Vec<u8>,
}

/// DH-HMAC-CHAP_Challenge: the controller's challenge C1 and DH value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Transaction id.
    pub tid: u16,
    /// HashID chosen.
    pub hash: u8,
    /// DH group chosen.
    pub dhgroup: u8,
    /// Sequence number S1.
    pub seqnum: u32,
    /// C1 (HL bytes).
    pub challenge: Vec<u8>,
    /// The controller's DH public value (empty with the null group).
    pub dh_value: Vec<u8>,
}

/// DH-HMAC-CHAP_Reply: the host's response R1, its own challenge C2 when it authenticates
/// the controller, and its DH value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Transaction id.
    pub tid: u16,
    /// Sequence number S2 (0: no bidirectional authentication).
    pub seqnum: u32,
    /// R1 (HL bytes).
    pub response: Vec<u8>,
    /// C2 (HL bytes) when CVALID is set.
    pub challenge: Option<Vec<u8>>,
    /// The host's DH public value (empty with the null group).
    pub dh_value: Vec<u8>,
}

/// DH-HMAC-CHAP_Success1: the host is authenticated; R2 when the host asked for the
/// controller's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Success1 {
    /// Transaction id.
    pub tid: u16,
    /// HL.
    pub hash_len: u8,
    /// R2 (HL bytes) when RVALID is set.
    pub response: Option<Vec<u8>>,
}

/// AUTH_Failure1 (from the controller) or AUTH_Failure2 (from the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Transaction id.
    pub tid: u16,
    /// Reason code.
    pub reason: u8,
    /// Reason code explanation.
    pub explanation: u8,
}

/// One authentication protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMessage {
    /// AUTH_Negotiate.
    Negotiate(Negotiate),
    /// DH-HMAC-CHAP_Challenge.
    Challenge(Challenge),
    /// DH-HMAC-CHAP_Reply.
    Reply(Reply),
    /// DH-HMAC-CHAP_Success1.
    Success1(Success1),
    /// DH-HMAC-CHAP_Success2 (the host verified the controller).
    Success2 {
        /// Transaction id.
        tid: u16,
    },
    /// AUTH_Failure1.
    Failure1(Failure),
    /// AUTH_Failure2.
    Failure2(Failure),
}

fn need(data: &[u8], n: usize) -> Result<&[u8], AuthDecodeError> {
    data.get(..n).ok_or(AuthDecodeError::Short {
        len: data.len(),
        need: n,
    })
}

fn le16(d: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([
        d.get(at).copied().unwrap_or(0),
        d.get(at + 1).copied().unwrap_or(0),
    ])
}

fn le32(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([
        d.get(at).copied().unwrap_or(0),
        d.get(at + 1).copied().unwrap_or(0),
        d.get(at + 2).copied().unwrap_or(0),
        d.get(at + 3).copied().unwrap_or(0),
    ])
}

fn slice(d: &[u8], from: usize, len: usize) -> Vec<u8> {
    d.get(from..from + len).unwrap_or_default().to_vec()
}

impl AuthMessage {
    /// Decodes one message; bytes after it (an AUTH_Receive buffer's padding) are ignored.
    pub fn decode(data: &[u8]) -> Result<AuthMessage, AuthDecodeError> {
        let h = need(data, 6)?;
        let (auth_type, id, tid) = (h[0], h[1], le16(h, 4));
        match (auth_type, id) {
            (AUTH_TYPE_COMMON, auth_id::NEGOTIATE) => {
                let d = need(data, 8)?;
                let (sc_c, napd) = (d[6], usize::from(d[7]));
                let d = need(data, 8 + napd * DESCRIPTOR_LEN)?;
                for i in 0..napd {
                    let desc = &d[8 + i * DESCRIPTOR_LEN..8 + (i + 1) * DESCRIPTOR_LEN];
                    if desc[0] != DHCHAP_AUTH_ID {
                        continue;
                    }
                    let (halen, dhlen) = (desc[2], desc[3]);
                    if usize::from(halen) > MAX_IDS || usize::from(dhlen) > MAX_IDS {
                        return Err(AuthDecodeError::IdList { halen, dhlen });
                    }
                    return Ok(AuthMessage::Negotiate(Negotiate {
                        tid,
                        sc_c,
                        hashes: slice(desc, 4, usize::from(halen)),
                        dhgroups: slice(desc, 4 + MAX_IDS, usize::from(dhlen)),
                    }));
                }
                Err(AuthDecodeError::NoDhchap)
            }
            (AUTH_TYPE_DHCHAP, auth_id::CHALLENGE) => {
                let d = need(data, 16)?;
                let hl = usize::from(d[6]);
                let dhvlen = usize::from(le16(d, 10));
                need(data, 16 + hl + dhvlen)?;
                Ok(AuthMessage::Challenge(Challenge {
                    tid,
                    hash: d[8],
                    dhgroup: d[9],
                    seqnum: le32(d, 12),
                    challenge: slice(data, 16, hl),
                    dh_value: slice(data, 16 + hl, dhvlen),
                }))
            }
            (AUTH_TYPE_DHCHAP, auth_id::REPLY) => {
                let d = need(data, 16)?;
                let hl = usize::from(d[6]);
                let cvalid = d[8] & 1 != 0;
                let dhvlen = usize::from(le16(d, 10));
                need(data, 16 + 2 * hl + dhvlen)?;
                Ok(AuthMessage::Reply(Reply {
                    tid,
                    seqnum: le32(d, 12),
                    response: slice(data, 16, hl),
                    challenge: cvalid.then(|| slice(data, 16 + hl, hl)),
                    dh_value: slice(data, 16 + 2 * hl, dhvlen),
                }))
            }
            (AUTH_TYPE_DHCHAP, auth_id::SUCCESS1) => {
                let d = need(data, 16)?;
                let hl = d[6];
                let rvalid = d[8] & 1 != 0;
                if rvalid {
                    need(data, 16 + usize::from(hl))?;
                }
                Ok(AuthMessage::Success1(Success1 {
                    tid,
                    hash_len: hl,
                    response: rvalid.then(|| slice(data, 16, usize::from(hl))),
                }))
            }
            (AUTH_TYPE_DHCHAP, auth_id::SUCCESS2) => {
                need(data, 16)?;
                Ok(AuthMessage::Success2 { tid })
            }
            (AUTH_TYPE_COMMON | AUTH_TYPE_DHCHAP, auth_id::FAILURE1 | auth_id::FAILURE2) => {
                let d = need(data, 8)?;
                let f = Failure {
                    tid,
                    reason: d[6],
                    explanation: d[7],
                };
                Ok(if id == auth_id::FAILURE1 {
                    AuthMessage::Failure1(f)
                } else {
                    AuthMessage::Failure2(f)
                })
            }
            (auth_type, auth_id) => Err(AuthDecodeError::Unknown { auth_type, auth_id }),
        }
    }

    /// Encodes the message. Lengths that do not fit their fields (HL above 255, a DH value
    /// above 64 KiB, more than 30 ids) are cut to what fits.
    pub fn encode(&self) -> Vec<u8> {
        let head = |auth_type: u8, id: u8, tid: u16, len: usize| {
            let mut v = vec![0u8; len];
            v[0] = auth_type;
            v[1] = id;
            v[4..6].copy_from_slice(&tid.to_le_bytes());
            v
        };
        let hl8 = |n: usize| n.min(255) as u8;
        let dhv = |d: &[u8]| {
            d.get(..d.len().min(usize::from(u16::MAX)))
                .unwrap_or_default()
                .to_vec()
        };
        match self {
            AuthMessage::Negotiate(n) => {
                let mut v = head(
                    AUTH_TYPE_COMMON,
                    auth_id::NEGOTIATE,
                    n.tid,
                    8 + DESCRIPTOR_LEN,
                );
                v[6] = n.sc_c;
                v[7] = 1;
                let hashes = &n.hashes[..n.hashes.len().min(MAX_IDS)];
                let groups = &n.dhgroups[..n.dhgroups.len().min(MAX_IDS)];
                v[8] = DHCHAP_AUTH_ID;
                v[10] = hashes.len() as u8;
                v[11] = groups.len() as u8;
                v[12..12 + hashes.len()].copy_from_slice(hashes);
                v[12 + MAX_IDS..12 + MAX_IDS + groups.len()].copy_from_slice(groups);
                v
            }
            AuthMessage::Challenge(c) => {
                let hl = hl8(c.challenge.len());
                let dh = dhv(&c.dh_value);
                let mut v = head(AUTH_TYPE_DHCHAP, auth_id::CHALLENGE, c.tid, 16);
                v[6] = hl;
                v[8] = c.hash;
                v[9] = c.dhgroup;
                v[10..12].copy_from_slice(&(dh.len() as u16).to_le_bytes());
                v[12..16].copy_from_slice(&c.seqnum.to_le_bytes());
                v.extend_from_slice(&c.challenge[..usize::from(hl)]);
                v.extend_from_slice(&dh);
                v
            }
            AuthMessage::Reply(r) => {
                let hl = usize::from(hl8(r.response.len()));
                let dh = dhv(&r.dh_value);
                let mut v = head(AUTH_TYPE_DHCHAP, auth_id::REPLY, r.tid, 16);
                v[6] = hl as u8;
                v[8] = u8::from(r.challenge.is_some());
                v[10..12].copy_from_slice(&(dh.len() as u16).to_le_bytes());
                v[12..16].copy_from_slice(&r.seqnum.to_le_bytes());
                v.extend_from_slice(&r.response[..hl]);
                let mut c2 = r.challenge.clone().unwrap_or_default();
                c2.resize(hl, 0);
                v.extend_from_slice(&c2);
                v.extend_from_slice(&dh);
                v
            }
            AuthMessage::Success1(s) => {
                let mut v = head(AUTH_TYPE_DHCHAP, auth_id::SUCCESS1, s.tid, 16);
                v[6] = s.hash_len;
                if let Some(r) = &s.response {
                    v[8] = 1;
                    let mut r = r.clone();
                    r.resize(usize::from(s.hash_len), 0);
                    v.extend_from_slice(&r);
                }
                v
            }
            AuthMessage::Success2 { tid } => head(AUTH_TYPE_DHCHAP, auth_id::SUCCESS2, *tid, 16),
            AuthMessage::Failure1(f) | AuthMessage::Failure2(f) => {
                let id = if matches!(self, AuthMessage::Failure1(_)) {
                    auth_id::FAILURE1
                } else {
                    auth_id::FAILURE2
                };
                let mut v = head(AUTH_TYPE_COMMON, id, f.tid, 8);
                v[6] = f.reason;
                v[7] = f.explanation;
                v
            }
        }
    }
}
