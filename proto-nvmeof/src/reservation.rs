//! NVMe reservations (NVMe base 2.0 section 8.19) expressed as protocol-neutral requests.
//!
//! The reservation state of a volume is shared between iSCSI and NVMe/TCP
//! ([`block_core::reservation`]). This module decodes Reservation Register/Acquire/Release/
//! Report into [`ReservationRequest`]s, applies them to that shared state with NVMe's rules
//! ([`apply`]), and encodes the [`ReservationReport`] as the NVMe Reservation Status data
//! structure.

use block_core::reservation::{
    AcquireAction as CoreAcquire, AcquireRequest, Effect, RegisterAction as CoreRegister,
    RegisterRequest, ReleaseRequest, ReservationState, Reservations,
};
use block_core::ReservationError;
use bytes::Bytes;

use crate::sqe::Sqe;
use crate::status::Status;

/// I/O opcodes of the reservation commands.
pub mod opcode {
    /// Reservation Register.
    pub const REGISTER: u8 = 0x0D;
    /// Reservation Report.
    pub const REPORT: u8 = 0x0E;
    /// Reservation Acquire.
    pub const ACQUIRE: u8 = 0x11;
    /// Reservation Release.
    pub const RELEASE: u8 = 0x15;
}

pub use block_core::ReservationType;

/// NVMe RTYPE code (1..=6) of a reservation type.
pub fn type_code(t: ReservationType) -> u8 {
    ReservationType::ALL
        .iter()
        .position(|&x| x == t)
        .map_or(0, |i| i as u8 + 1)
}

/// Decodes an NVMe RTYPE.
pub fn type_from_code(code: u8) -> Option<ReservationType> {
    ReservationType::ALL
        .get(usize::from(code).checked_sub(1)?)
        .copied()
}

/// Who is asking: NVMe reservations belong to a host (Host Identifier) and are reported per
/// controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Requester {
    /// 128-bit host identifier from the Connect data.
    pub host_id: [u8; 16],
    /// Controller the command arrived on.
    pub cntlid: u16,
}

/// Reservation Register action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterAction {
    /// Register `new_key`.
    Register,
    /// Unregister.
    Unregister,
    /// Replace the current key with `new_key`.
    Replace,
}

/// Change Persist Through Power Loss state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PtplChange {
    /// Leave PTPL unchanged.
    NoChange,
    /// Reservations are released and registrants cleared on power loss.
    Off,
    /// Reservations and registrants persist across power loss.
    On,
}

/// Reservation Acquire action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcquireAction {
    /// Acquire the reservation.
    Acquire,
    /// Preempt registrants holding `preempt_key`.
    Preempt,
    /// Preempt and abort their commands.
    PreemptAndAbort,
}

/// Reservation Release action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReleaseAction {
    /// Release the reservation.
    Release,
    /// Clear the reservation and all registrations.
    Clear,
}

/// A reservation operation for the gateway to apply to the volume's shared state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReservationRequest {
    /// Register, unregister or replace a key.
    Register {
        /// Requesting host/controller.
        requester: Requester,
        /// Action.
        action: RegisterAction,
        /// Current reservation key.
        current_key: u64,
        /// New reservation key.
        new_key: u64,
        /// Ignore existing key (IEKEY).
        ignore_key: bool,
        /// PTPL change.
        ptpl: PtplChange,
    },
    /// Acquire or preempt.
    Acquire {
        /// Requesting host/controller.
        requester: Requester,
        /// Action.
        action: AcquireAction,
        /// Reservation type.
        rtype: ReservationType,
        /// Current reservation key.
        current_key: u64,
        /// Key of the registrants to preempt.
        preempt_key: u64,
        /// Ignore existing key (IEKEY).
        ignore_key: bool,
    },
    /// Release or clear.
    Release {
        /// Requesting host/controller.
        requester: Requester,
        /// Action.
        action: ReleaseAction,
        /// Reservation type (must match the held reservation for Release).
        rtype: Option<ReservationType>,
        /// Current reservation key.
        current_key: u64,
        /// Ignore existing key (IEKEY).
        ignore_key: bool,
    },
    /// Report the reservation status.
    Report {
        /// Requesting host/controller.
        requester: Requester,
    },
}

/// One registrant in a [`ReservationReport`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Registrant {
    /// Host identifier.
    pub host_id: [u8; 16],
    /// Controller id (0xFFFF when the registrant is not an NVMe controller).
    pub cntlid: u16,
    /// Registered key.
    pub key: u64,
    /// Whether this registrant holds the reservation.
    pub holder: bool,
}

/// Snapshot of a volume's reservation state as the gateway reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ReservationReport {
    /// Generation counter.
    pub generation: u32,
    /// Current reservation, if any.
    pub rtype: Option<ReservationType>,
    /// Persist through power loss state.
    pub ptpl: bool,
    /// Registrants.
    pub registrants: Vec<Registrant>,
}

/// The gateway's answer to a [`ReservationRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReservationOutcome {
    /// Applied.
    Done,
    /// Refused with Reservation Conflict.
    Conflict,
    /// Refused with Invalid Field (e.g. bad type for the held reservation).
    Invalid,
    /// The report for a Report request.
    Report(ReservationReport),
}

/// Controller ID reported for registrants that are not one controller: NVMe hosts (the
/// dynamic controller model gives a host a new CNTLID per association) and SCSI nexuses.
const NO_CNTLID: u16 = 0xFFFF;

/// The registrant identity of an NVMe host: its NQN and Host Identifier (all its controllers
/// and paths are one registrant, as NVMe requires).
pub fn registrant(host_nqn: &str, host_id: [u8; 16]) -> block_core::Registrant {
    block_core::Registrant::Nvme {
        host_nqn: host_nqn.to_string(),
        host_id,
    }
}

/// The NVMe Reservation Status of the shared state: NVMe hosts with their Host Identifier,
/// SCSI nexuses with a zero one; CNTLID 0xFFFF for all (none is tied to one controller).
pub fn report(st: &ReservationState) -> ReservationReport {
    ReservationReport {
        generation: st.generation,
        rtype: st.reservation.as_ref().map(|r| r.kind),
        ptpl: st.aptpl,
        registrants: st
            .registrations
            .iter()
            .map(|r| Registrant {
                host_id: r.who.host_id().unwrap_or([0; 16]),
                cntlid: NO_CNTLID,
                key: r.key,
                holder: st.is_holder(&r.who),
            })
            .collect(),
    }
}

/// Applies `req` from NVMe host `who` to the volume's shared reservation state with NVMe's
/// rules (base 2.0 section 7.2-7.6). Returns the outcome and what the change did: when
/// `changed`, the caller persists the state before completing; for preempt-and-abort it aborts
/// the victims' commands.
pub fn apply(
    resv: &mut Reservations,
    who: &block_core::Registrant,
    req: ReservationRequest,
) -> (ReservationOutcome, Effect) {
    let r = match req {
        ReservationRequest::Report { .. } => {
            return (
                ReservationOutcome::Report(report(resv.state())),
                Effect::default(),
            )
        }
        ReservationRequest::Register {
            action,
            current_key,
            new_key,
            ignore_key,
            ptpl,
            ..
        } => resv.apply_register(
            who,
            RegisterRequest {
                action: match action {
                    RegisterAction::Register => CoreRegister::Register { new_key },
                    RegisterAction::Unregister => CoreRegister::Unregister,
                    RegisterAction::Replace => CoreRegister::Replace { new_key },
                },
                current_key,
                ignore_key,
                ptpl: match ptpl {
                    PtplChange::NoChange => None,
                    PtplChange::Off => Some(false),
                    PtplChange::On => Some(true),
                },
            },
        ),
        ReservationRequest::Acquire {
            action,
            rtype,
            current_key,
            preempt_key,
            ignore_key,
            ..
        } => resv.apply_acquire(
            who,
            AcquireRequest {
                action: match action {
                    AcquireAction::Acquire => CoreAcquire::Acquire,
                    AcquireAction::Preempt => CoreAcquire::Preempt { key: preempt_key },
                    AcquireAction::PreemptAndAbort => {
                        CoreAcquire::PreemptAndAbort { key: preempt_key }
                    }
                },
                kind: rtype,
                current_key,
                ignore_key,
            },
        ),
        ReservationRequest::Release {
            action,
            rtype,
            current_key,
            ignore_key,
            ..
        } => resv.apply_release(
            who,
            ReleaseRequest {
                clear: action == ReleaseAction::Clear,
                kind: rtype,
                current_key,
                ignore_key,
            },
        ),
    };
    match r {
        Ok(fx) => (ReservationOutcome::Done, fx),
        Err(ReservationError::Conflict) => (ReservationOutcome::Conflict, Effect::default()),
        Err(_) => (ReservationOutcome::Invalid, Effect::default()),
    }
}

fn keys(data: &[u8], n: usize) -> Result<[u64; 2], Status> {
    let mut out = [0u64; 2];
    for (i, k) in out.iter_mut().enumerate().take(n) {
        let b = data
            .get(i * 8..i * 8 + 8)
            .ok_or(Status::SGL_INVALID_DATA.dnr())?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        *k = u64::from_le_bytes(a);
    }
    Ok(out)
}

/// Decodes a reservation command into a request (Report: see [`report_params`]).
pub fn decode(sqe: &Sqe, data: &Bytes, requester: Requester) -> Result<ReservationRequest, Status> {
    let cdw10 = sqe.cdw(10);
    let ignore_key = cdw10 & (1 << 3) != 0;
    let action = cdw10 & 7;
    let invalid = Status::INVALID_FIELD.dnr();
    Ok(match sqe.opcode() {
        opcode::REGISTER => {
            let [current_key, new_key] = keys(data, 2)?;
            ReservationRequest::Register {
                requester,
                action: match action {
                    0 => RegisterAction::Register,
                    1 => RegisterAction::Unregister,
                    2 => RegisterAction::Replace,
                    _ => return Err(invalid),
                },
                current_key,
                new_key,
                ignore_key,
                ptpl: match cdw10 >> 30 {
                    0 => PtplChange::NoChange,
                    2 => PtplChange::Off,
                    3 => PtplChange::On,
                    _ => return Err(invalid),
                },
            }
        }
        opcode::ACQUIRE => {
            let [current_key, preempt_key] = keys(data, 2)?;
            ReservationRequest::Acquire {
                requester,
                action: match action {
                    0 => AcquireAction::Acquire,
                    1 => AcquireAction::Preempt,
                    2 => AcquireAction::PreemptAndAbort,
                    _ => return Err(invalid),
                },
                rtype: type_from_code((cdw10 >> 8) as u8).ok_or(invalid)?,
                current_key,
                preempt_key,
                ignore_key,
            }
        }
        opcode::RELEASE => {
            let [current_key, _] = keys(data, 1)?;
            let code = (cdw10 >> 8) as u8;
            ReservationRequest::Release {
                requester,
                action: match action {
                    0 => ReleaseAction::Release,
                    1 => ReleaseAction::Clear,
                    _ => return Err(invalid),
                },
                rtype: if code == 0 {
                    None
                } else {
                    Some(type_from_code(code).ok_or(invalid)?)
                },
                current_key,
                ignore_key,
            }
        }
        opcode::REPORT => ReservationRequest::Report { requester },
        _ => return Err(Status::INVALID_OPCODE.dnr()),
    })
}

/// Reservation Report parameters: (bytes requested, extended data structure).
pub fn report_params(sqe: &Sqe) -> (u64, bool) {
    ((u64::from(sqe.cdw(10)) + 1) * 4, sqe.cdw(11) & 1 != 0)
}

/// Encodes the Reservation Status (extended: 64-byte header and entries with 128-bit host
/// identifiers; otherwise 24-byte entries with the low 64 bits of the host identifier).
pub fn encode_report(r: &ReservationReport, extended: bool) -> Vec<u8> {
    let (hdr, entry) = if extended { (64, 64) } else { (24, 24) };
    let mut b = vec![0u8; hdr + entry * r.registrants.len()];
    b[0..4].copy_from_slice(&r.generation.to_le_bytes());
    b[4] = r.rtype.map_or(0, type_code);
    b[5..7].copy_from_slice(&(r.registrants.len().min(0xFFFF) as u16).to_le_bytes());
    b[9] = u8::from(r.ptpl);
    for (i, reg) in r.registrants.iter().enumerate() {
        let o = hdr + i * entry;
        b[o..o + 2].copy_from_slice(&reg.cntlid.to_le_bytes());
        b[o + 2] = u8::from(reg.holder);
        if extended {
            b[o + 8..o + 16].copy_from_slice(&reg.key.to_le_bytes());
            b[o + 16..o + 32].copy_from_slice(&reg.host_id);
        } else {
            b[o + 8..o + 16].copy_from_slice(&reg.host_id[8..16]);
            b[o + 16..o + 24].copy_from_slice(&reg.key.to_le_bytes());
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: Requester = Requester {
        host_id: [1; 16],
        cntlid: 3,
    };

    #[test]
    fn type_codes_match_both_protocols() {
        // (The SCSI code of the same type, 6, is checked where both protocols meet: the
        // gateway's `every_type_has_one_code_per_protocol`.)
        let t = type_from_code(4).unwrap();
        assert_eq!(t, ReservationType::ExclusiveAccessRegistrantsOnly);
        assert_eq!(type_from_code(0), None);
        assert_eq!(type_from_code(7), None);
        for code in 1..=6 {
            assert_eq!(type_code(type_from_code(code).unwrap()), code);
        }
    }

    #[test]
    fn register_decoding() {
        let mut sqe = Sqe::new(opcode::REGISTER, 1);
        sqe.set_cdw(10, 2 | (1 << 3) | (3 << 30));
        let mut d = 5u64.to_le_bytes().to_vec();
        d.extend_from_slice(&6u64.to_le_bytes());
        let r = decode(&sqe, &Bytes::from(d), REQ).unwrap();
        assert_eq!(
            r,
            ReservationRequest::Register {
                requester: REQ,
                action: RegisterAction::Replace,
                current_key: 5,
                new_key: 6,
                ignore_key: true,
                ptpl: PtplChange::On,
            }
        );
        assert!(decode(&sqe, &Bytes::from_static(&[0; 8]), REQ).is_err());
    }

    #[test]
    fn extended_report_layout() {
        let r = ReservationReport {
            generation: 9,
            rtype: Some(ReservationType::WriteExclusive),
            ptpl: true,
            registrants: vec![Registrant {
                host_id: [0xAA; 16],
                cntlid: 7,
                key: 0x1122,
                holder: true,
            }],
        };
        let b = encode_report(&r, true);
        assert_eq!(b.len(), 128);
        assert_eq!(&b[0..4], &9u32.to_le_bytes());
        assert_eq!(b[4], 1);
        assert_eq!(&b[5..7], &[1, 0]);
        assert_eq!(b[9], 1);
        assert_eq!(&b[64..66], &[7, 0]);
        assert_eq!(b[66], 1);
        assert_eq!(&b[72..80], &0x1122u64.to_le_bytes());
        assert_eq!(&b[80..96], &[0xAA; 16]);
    }
}
