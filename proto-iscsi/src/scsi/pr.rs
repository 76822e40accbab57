//! Persistent reservation state (SPC-4 5.13) and its durable encoding.
//!
//! The gateway stores the bytes from [`PrState::to_bytes`] with the volume so reservations
//! survive gateway restarts and fail-over; [`PrState::from_bytes`] rejects anything truncated,
//! corrupted or from an unknown version with a typed error.

use nom::bytes::complete::take;
use nom::number::complete::{be_u16, be_u32, be_u64, be_u8};
use nom::Parser;

use super::opcodes::PrClass;

/// Most registrations kept; more yields INSUFFICIENT REGISTRATION RESOURCES.
pub const MAX_REGISTRATIONS: usize = 256;
/// Longest initiator port name accepted (iSCSI name 223 bytes plus ",i,0x" and ISID).
pub const MAX_PORT_NAME: usize = 255;

/// Persistent reservation type (SPC-4 table 209).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrType {
    /// Write Exclusive.
    WriteExclusive,
    /// Exclusive Access.
    ExclusiveAccess,
    /// Write Exclusive – Registrants Only.
    WriteExclusiveRegistrantsOnly,
    /// Exclusive Access – Registrants Only.
    ExclusiveAccessRegistrantsOnly,
    /// Write Exclusive – All Registrants.
    WriteExclusiveAllRegistrants,
    /// Exclusive Access – All Registrants.
    ExclusiveAccessAllRegistrants,
}

impl PrType {
    /// Decodes the 4-bit TYPE field.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => PrType::WriteExclusive,
            3 => PrType::ExclusiveAccess,
            5 => PrType::WriteExclusiveRegistrantsOnly,
            6 => PrType::ExclusiveAccessRegistrantsOnly,
            7 => PrType::WriteExclusiveAllRegistrants,
            8 => PrType::ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }

    /// The 4-bit TYPE field.
    pub fn code(self) -> u8 {
        match self {
            PrType::WriteExclusive => 1,
            PrType::ExclusiveAccess => 3,
            PrType::WriteExclusiveRegistrantsOnly => 5,
            PrType::ExclusiveAccessRegistrantsOnly => 6,
            PrType::WriteExclusiveAllRegistrants => 7,
            PrType::ExclusiveAccessAllRegistrants => 8,
        }
    }

    /// All-registrants types: every registrant is a reservation holder.
    pub fn all_registrants(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusiveAllRegistrants | PrType::ExclusiveAccessAllRegistrants
        )
    }

    /// Registrants-only or all-registrants: registrants get access too.
    pub fn registrants_access(self) -> bool {
        !matches!(self, PrType::WriteExclusive | PrType::ExclusiveAccess)
    }

    /// Write-exclusive family: non-holders may still read.
    pub fn write_exclusive(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusive
                | PrType::WriteExclusiveRegistrantsOnly
                | PrType::WriteExclusiveAllRegistrants
        )
    }
}

/// An I_T nexus identity that survives reconnects: initiator port name plus target port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortId {
    /// SCSI initiator port name.
    pub initiator_port: String,
    /// Relative target port identifier.
    pub relative_port: u16,
}

/// One registered I_T nexus and its reservation key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Registration {
    /// Who registered.
    pub port: PortId,
    /// The registered reservation key (never zero).
    pub key: u64,
}

/// The persistent reservation, if any.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reservation {
    /// Reservation type.
    pub kind: PrType,
    /// Holder for non-all-registrants types; None for all-registrants types.
    pub holder: Option<PortId>,
}

/// Everything SPC-4 says must persist for a logical unit's persistent reservations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrState {
    /// PRGENERATION counter.
    pub generation: u32,
    /// Activate Persist Through Power Loss, as last set by a REGISTER.
    pub aptpl: bool,
    /// Registered I_T nexuses.
    pub registrations: Vec<Registration>,
    /// The reservation, if one exists.
    pub reservation: Option<Reservation>,
}

/// Why persisted PR bytes could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrDecodeError {
    /// The buffer ends before the encoded state does.
    #[error("persistent reservation state truncated")]
    Truncated,
    /// Not a PR state blob.
    #[error("persistent reservation state has bad magic")]
    BadMagic,
    /// Written by a newer, unknown format version.
    #[error("unsupported persistent reservation state version {0}")]
    UnsupportedVersion(u8),
    /// Stored checksum does not match the contents.
    #[error("persistent reservation state checksum mismatch")]
    Checksum,
    /// Structurally valid but semantically impossible contents.
    #[error("invalid persistent reservation state: {0}")]
    Invalid(&'static str),
}

const MAGIC: &[u8; 4] = b"TPRS";
const VERSION: u8 = 1;

fn put_port(out: &mut Vec<u8>, p: &PortId) {
    out.extend_from_slice(&p.relative_port.to_be_bytes());
    out.extend_from_slice(&(p.initiator_port.len() as u16).to_be_bytes());
    out.extend_from_slice(p.initiator_port.as_bytes());
}

type Res<'a, T> = Result<(&'a [u8], T), PrDecodeError>;

fn nom_err<E>(_: nom::Err<E>) -> PrDecodeError {
    PrDecodeError::Truncated
}

fn get_port(i: &[u8]) -> Res<'_, PortId> {
    let (i, (relative_port, len)) = (be_u16::<_, ()>, be_u16).parse(i).map_err(nom_err)?;
    if usize::from(len) > MAX_PORT_NAME {
        return Err(PrDecodeError::Invalid("port name too long"));
    }
    let (i, name) = take::<_, _, ()>(len).parse(i).map_err(nom_err)?;
    let initiator_port = std::str::from_utf8(name)
        .map_err(|_| PrDecodeError::Invalid("port name not UTF-8"))?
        .to_string();
    Ok((
        i,
        PortId {
            initiator_port,
            relative_port,
        },
    ))
}

impl PrState {
    /// The registration of `port`, if registered.
    pub fn registration(&self, port: &PortId) -> Option<&Registration> {
        self.registrations.iter().find(|r| &r.port == port)
    }

    /// Whether `port` holds the reservation (any registrant does for all-registrants types).
    pub fn is_holder(&self, port: &PortId) -> bool {
        match &self.reservation {
            None => false,
            Some(r) if r.kind.all_registrants() => self.registration(port).is_some(),
            Some(r) => r.holder.as_ref() == Some(port),
        }
    }

    /// Whether a command of `class` from `port` conflicts with the reservation
    /// (SPC-4 table 66 and SBC-3 table 13).
    pub fn conflicts(&self, port: &PortId, class: PrClass) -> bool {
        let Some(res) = &self.reservation else {
            return false;
        };
        if class == PrClass::Allowed || self.is_holder(port) {
            return false;
        }
        if res.kind.registrants_access() && self.registration(port).is_some() {
            return false;
        }
        !(res.kind.write_exclusive() && class == PrClass::Read)
    }

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
                out.push(r.kind.code());
                match &r.holder {
                    None => out.push(0),
                    Some(h) => {
                        out.push(1);
                        put_port(&mut out, h);
                    }
                }
            }
        }
        out.extend_from_slice(&(self.registrations.len() as u32).to_be_bytes());
        for r in &self.registrations {
            out.extend_from_slice(&r.key.to_be_bytes());
            put_port(&mut out, &r.port);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses bytes produced by [`PrState::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PrDecodeError> {
        if bytes.len() < MAGIC.len() + 1 + 4 {
            return Err(PrDecodeError::Truncated);
        }
        if &bytes[..4] != MAGIC {
            return Err(PrDecodeError::BadMagic);
        }
        if bytes[4] != VERSION {
            return Err(PrDecodeError::UnsupportedVersion(bytes[4]));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32c::crc32c(body) != stored {
            return Err(PrDecodeError::Checksum);
        }
        let i = &body[5..];
        let (i, (generation, aptpl, has_res)) =
            (be_u32::<_, ()>, be_u8, be_u8).parse(i).map_err(nom_err)?;
        let (mut i, reservation) = match has_res {
            0 => (i, None),
            1 => {
                let (i, (code, has_holder)) = (be_u8::<_, ()>, be_u8).parse(i).map_err(nom_err)?;
                let kind = PrType::from_code(code).ok_or(PrDecodeError::Invalid("type"))?;
                let (i, holder) = match has_holder {
                    0 => (i, None),
                    1 => {
                        let (i, p) = get_port(i)?;
                        (i, Some(p))
                    }
                    _ => return Err(PrDecodeError::Invalid("holder flag")),
                };
                if kind.all_registrants() != holder.is_none() {
                    return Err(PrDecodeError::Invalid("holder does not match type"));
                }
                (i, Some(Reservation { kind, holder }))
            }
            _ => return Err(PrDecodeError::Invalid("reservation flag")),
        };
        let (rest, count) = be_u32::<_, ()>.parse(i).map_err(nom_err)?;
        i = rest;
        if count as usize > MAX_REGISTRATIONS {
            return Err(PrDecodeError::Invalid("too many registrations"));
        }
        let mut registrations = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let (rest, key) = be_u64::<_, ()>.parse(i).map_err(nom_err)?;
            let (rest, port) = get_port(rest)?;
            i = rest;
            if key == 0 {
                return Err(PrDecodeError::Invalid("zero key"));
            }
            registrations.push(Registration { port, key });
        }
        if !i.is_empty() {
            return Err(PrDecodeError::Invalid("trailing bytes"));
        }
        if aptpl > 1 {
            return Err(PrDecodeError::Invalid("aptpl flag"));
        }
        Ok(PrState {
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

    fn port(n: &str, p: u16) -> PortId {
        PortId {
            initiator_port: n.into(),
            relative_port: p,
        }
    }

    fn arb_port() -> impl Strategy<Value = PortId> {
        ("[a-z0-9.:,]{0,40}", any::<u16>()).prop_map(|(initiator_port, relative_port)| PortId {
            initiator_port,
            relative_port,
        })
    }

    fn arb_state() -> impl Strategy<Value = PrState> {
        (
            any::<u32>(),
            any::<bool>(),
            proptest::collection::vec((arb_port(), 1u64..), 0..8),
            proptest::option::of((
                prop_oneof![Just(1u8), Just(3), Just(5), Just(6), Just(7), Just(8)],
                arb_port(),
            )),
        )
            .prop_map(|(generation, aptpl, regs, res)| PrState {
                generation,
                aptpl,
                registrations: regs
                    .into_iter()
                    .map(|(port, key)| Registration { port, key })
                    .collect(),
                reservation: res.map(|(code, h)| {
                    let kind = PrType::from_code(code).unwrap();
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
            prop_assert_eq!(PrState::from_bytes(&s.to_bytes()), Ok(s));
        }

        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = PrState::from_bytes(&b);
        }

        #[test]
        fn any_truncation_is_rejected(s in arb_state(), cut in 1usize..64) {
            let b = s.to_bytes();
            let n = b.len().saturating_sub(cut);
            prop_assert!(PrState::from_bytes(&b[..n]).is_err());
        }
    }

    #[test]
    fn typed_errors() {
        let s = PrState::default().to_bytes();
        let mut bad = s.clone();
        bad[0] = b'X';
        assert_eq!(PrState::from_bytes(&bad), Err(PrDecodeError::BadMagic));
        let mut bad = s.clone();
        bad[4] = 9;
        assert_eq!(
            PrState::from_bytes(&bad),
            Err(PrDecodeError::UnsupportedVersion(9))
        );
        let mut bad = s.clone();
        bad[6] ^= 1;
        assert_eq!(PrState::from_bytes(&bad), Err(PrDecodeError::Checksum));
    }

    #[test]
    fn conflict_table() {
        let a = port("a", 1);
        let b = port("b", 1);
        let c = port("c", 1);
        let mut s = PrState {
            registrations: vec![
                Registration {
                    port: a.clone(),
                    key: 1,
                },
                Registration {
                    port: b.clone(),
                    key: 2,
                },
            ],
            ..Default::default()
        };
        let set = |s: &mut PrState, kind| {
            s.reservation = Some(Reservation {
                kind,
                holder: (!PrType::all_registrants(kind)).then(|| a.clone()),
            })
        };
        set(&mut s, PrType::WriteExclusive);
        assert!(!s.conflicts(&a, PrClass::Write));
        assert!(s.conflicts(&b, PrClass::Write));
        assert!(!s.conflicts(&b, PrClass::Read));
        assert!(!s.conflicts(&c, PrClass::Read));
        set(&mut s, PrType::ExclusiveAccess);
        assert!(s.conflicts(&b, PrClass::Read));
        assert!(!s.conflicts(&c, PrClass::Allowed));
        set(&mut s, PrType::WriteExclusiveRegistrantsOnly);
        assert!(!s.conflicts(&b, PrClass::Write));
        assert!(s.conflicts(&c, PrClass::Write));
        assert!(!s.conflicts(&c, PrClass::Read));
        set(&mut s, PrType::ExclusiveAccessAllRegistrants);
        assert!(s.is_holder(&b));
        assert!(s.conflicts(&c, PrClass::Read));
    }
}
