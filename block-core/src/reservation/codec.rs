//! The durable encoding of a [`ReservationState`], stored with the volume so reservations
//! survive restarts and failover.
//!
//! Layout (version 1, unchanged from the first release, so stored states stay readable):
//! magic `TPRS`, version, generation, APTPL, the reservation (type code, holder), the
//! registrations (key, registrant), and a CRC32C of everything before it. A registrant is a
//! relative port and a name: SCSI initiator ports use their relative port (1 or more); NVMe
//! hosts are stored on port 0 as `<host NQN>,hostid=<32 hex digits>`. Type codes are SPC-4's.

use nom::bytes::complete::take;
use nom::number::complete::{be_u16, be_u32, be_u64, be_u8};
use nom::Parser;

use super::state::{Registration, Reservation, ReservationState};
use super::{Registrant, ReservationType, MAX_NAME, MAX_REGISTRATIONS};

/// Why stored reservation bytes could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer ends before the encoded state does.
    #[error("reservation state truncated")]
    Truncated,
    /// Not a reservation state.
    #[error("reservation state has bad magic")]
    BadMagic,
    /// Written by a newer, unknown format version.
    #[error("unsupported reservation state version {0}")]
    UnsupportedVersion(u8),
    /// Stored checksum does not match the contents.
    #[error("reservation state checksum mismatch")]
    Checksum,
    /// Structurally valid but semantically impossible contents.
    #[error("invalid reservation state: {0}")]
    Invalid(&'static str),
}

const MAGIC: &[u8; 4] = b"TPRS";
const VERSION: u8 = 1;
/// The relative port NVMe registrants are stored on (SCSI relative ports start at 1).
const NVME_PORT: u16 = 0;
/// Separates the host NQN from the host identifier in a stored NVMe registrant.
const HOSTID_TAG: &str = ",hostid=";

fn type_code(t: ReservationType) -> u8 {
    match t {
        ReservationType::WriteExclusive => 1,
        ReservationType::ExclusiveAccess => 3,
        ReservationType::WriteExclusiveRegistrantsOnly => 5,
        ReservationType::ExclusiveAccessRegistrantsOnly => 6,
        ReservationType::WriteExclusiveAllRegistrants => 7,
        ReservationType::ExclusiveAccessAllRegistrants => 8,
    }
}

fn type_of(code: u8) -> Option<ReservationType> {
    ReservationType::ALL
        .into_iter()
        .find(|&t| type_code(t) == code)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

impl Registrant {
    /// The registrant's name as stored and shown to operators: the SCSI initiator port name,
    /// or `<host NQN>,hostid=<32 hex digits>` for an NVMe host.
    pub fn name(&self) -> String {
        match self {
            Registrant::Scsi { initiator_port, .. } => initiator_port.clone(),
            Registrant::Nvme { host_nqn, host_id } => {
                format!("{host_nqn}{HOSTID_TAG}{}", hex(host_id))
            }
        }
    }
}

fn put_registrant(out: &mut Vec<u8>, who: &Registrant) {
    let port = match who {
        Registrant::Scsi { relative_port, .. } => *relative_port,
        Registrant::Nvme { .. } => NVME_PORT,
    };
    let name = who.name();
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
}

type Res<'a, T> = Result<(&'a [u8], T), DecodeError>;

fn nom_err<E>(_: nom::Err<E>) -> DecodeError {
    DecodeError::Truncated
}

fn get_registrant(i: &[u8]) -> Res<'_, Registrant> {
    let (i, (relative_port, len)) = (be_u16::<_, ()>, be_u16).parse(i).map_err(nom_err)?;
    if usize::from(len) > MAX_NAME {
        return Err(DecodeError::Invalid("registrant name too long"));
    }
    let (i, name) = take::<_, _, ()>(len).parse(i).map_err(nom_err)?;
    let name =
        std::str::from_utf8(name).map_err(|_| DecodeError::Invalid("registrant name not UTF-8"))?;
    if relative_port == NVME_PORT {
        if let Some((nqn, id)) = name.rsplit_once(HOSTID_TAG) {
            if let Some(host_id) = unhex(id) {
                let who = Registrant::Nvme {
                    host_nqn: nqn.to_string(),
                    host_id,
                };
                return Ok((i, who));
            }
        }
    }
    let who = Registrant::Scsi {
        initiator_port: name.to_string(),
        relative_port,
    };
    Ok((i, who))
}

impl ReservationState {
    /// Serialises the state: magic, version, fields, CRC32C of everything before it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.push(u8::from(self.aptpl));
        match &self.reservation {
            None => out.push(0),
            Some(r) => {
                out.push(1);
                out.push(type_code(r.kind));
                match &r.holder {
                    None => out.push(0),
                    Some(h) => {
                        out.push(1);
                        put_registrant(&mut out, h);
                    }
                }
            }
        }
        out.extend_from_slice(&(self.registrations.len() as u32).to_be_bytes());
        for r in &self.registrations {
            out.extend_from_slice(&r.key.to_be_bytes());
            put_registrant(&mut out, &r.who);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses bytes produced by [`ReservationState::to_bytes`]; anything truncated, corrupt or
    /// of an unknown version is a typed error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < MAGIC.len() + 1 + 4 {
            return Err(DecodeError::Truncated);
        }
        if &bytes[..4] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if bytes[4] != VERSION {
            return Err(DecodeError::UnsupportedVersion(bytes[4]));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32c::crc32c(body) != stored {
            return Err(DecodeError::Checksum);
        }
        let i = &body[5..];
        let (i, (generation, aptpl, has_res)) =
            (be_u32::<_, ()>, be_u8, be_u8).parse(i).map_err(nom_err)?;
        let (mut i, reservation) = match has_res {
            0 => (i, None),
            1 => {
                let (i, (code, has_holder)) = (be_u8::<_, ()>, be_u8).parse(i).map_err(nom_err)?;
                let kind = type_of(code).ok_or(DecodeError::Invalid("type"))?;
                let (i, holder) = match has_holder {
                    0 => (i, None),
                    1 => {
                        let (i, p) = get_registrant(i)?;
                        (i, Some(p))
                    }
                    _ => return Err(DecodeError::Invalid("holder flag")),
                };
                if kind.all_registrants() != holder.is_none() {
                    return Err(DecodeError::Invalid("holder does not match type"));
                }
                (i, Some(Reservation { kind, holder }))
            }
            _ => return Err(DecodeError::Invalid("reservation flag")),
        };
        let (rest, count) = be_u32::<_, ()>.parse(i).map_err(nom_err)?;
        i = rest;
        if count as usize > MAX_REGISTRATIONS {
            return Err(DecodeError::Invalid("too many registrations"));
        }
        let mut registrations = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let (rest, key) = be_u64::<_, ()>.parse(i).map_err(nom_err)?;
            let (rest, who) = get_registrant(rest)?;
            i = rest;
            if key == 0 {
                return Err(DecodeError::Invalid("zero key"));
            }
            registrations.push(Registration { who, key });
        }
        if !i.is_empty() {
            return Err(DecodeError::Invalid("trailing bytes"));
        }
        if aptpl > 1 {
            return Err(DecodeError::Invalid("aptpl flag"));
        }
        Ok(ReservationState {
            generation,
            aptpl: aptpl == 1,
            registrations,
            reservation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_registrant() -> impl Strategy<Value = Registrant> {
        prop_oneof![
            ("[a-z0-9.:,]{0,40}", 1u16..).prop_map(|(initiator_port, relative_port)| {
                Registrant::Scsi {
                    initiator_port,
                    relative_port,
                }
            }),
            ("[a-z0-9.:]{0,40}", any::<[u8; 16]>())
                .prop_map(|(host_nqn, host_id)| Registrant::Nvme { host_nqn, host_id }),
        ]
    }

    fn arb_state() -> impl Strategy<Value = ReservationState> {
        (
            any::<u32>(),
            any::<bool>(),
            proptest::collection::vec((arb_registrant(), 1u64..), 0..8),
            proptest::option::of((0usize..6, arb_registrant())),
        )
            .prop_map(|(generation, aptpl, regs, res)| ReservationState {
                generation,
                aptpl,
                registrations: regs
                    .into_iter()
                    .map(|(who, key)| Registration { who, key })
                    .collect(),
                reservation: res.map(|(t, h)| {
                    let kind = ReservationType::ALL[t];
                    Reservation {
                        kind,
                        holder: (!kind.all_registrants()).then_some(h),
                    }
                }),
            })
    }

    proptest! {
        #[test]
        fn round_trip(s in arb_state()) {
            prop_assert_eq!(ReservationState::from_bytes(&s.to_bytes()), Ok(s));
        }

        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ReservationState::from_bytes(&b);
        }

        #[test]
        fn any_truncation_is_rejected(s in arb_state(), cut in 1usize..64) {
            let b = s.to_bytes();
            let n = b.len().saturating_sub(cut);
            prop_assert!(ReservationState::from_bytes(&b[..n]).is_err());
        }
    }

    #[test]
    fn typed_errors() {
        let s = ReservationState::default().to_bytes();
        let mut bad = s.clone();
        bad[0] = b'X';
        assert_eq!(
            ReservationState::from_bytes(&bad),
            Err(DecodeError::BadMagic)
        );
        let mut bad = s.clone();
        bad[4] = 9;
        assert_eq!(
            ReservationState::from_bytes(&bad),
            Err(DecodeError::UnsupportedVersion(9))
        );
        let mut bad = s.clone();
        bad[6] ^= 1;
        assert_eq!(
            ReservationState::from_bytes(&bad),
            Err(DecodeError::Checksum)
        );
    }

    #[test]
    fn an_nvme_registrant_is_stored_as_before() {
        // The first release stored NVMe hosts as "<nqn>,hostid=<hex>" on relative port 0.
        let who = Registrant::Nvme {
            host_nqn: "nqn.2014-08.org.nvmexpress:uuid:x".into(),
            host_id: [0x5A; 16],
        };
        let mut out = Vec::new();
        put_registrant(&mut out, &who);
        let name = format!(
            "nqn.2014-08.org.nvmexpress:uuid:x,hostid={}",
            "5a".repeat(16)
        );
        assert_eq!(&out[..2], &[0, 0]);
        assert_eq!(&out[4..], name.as_bytes());
        assert_eq!(get_registrant(&out).unwrap().1, who);
    }
}
