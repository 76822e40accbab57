//! PERSISTENT RESERVE IN and OUT (SPC-4 6.15, 6.16, 5.13): the CDB and parameter list
//! decoded into operations on the volume's one reservation state, and its reports encoded.

use block_core::reservation::{Effect, ReservationState, Reservations};
use block_core::{Registrant, ReservationError};

use super::cdb::{be64, Cdb};
use super::pr::{type_code, type_from_code};
use super::sense::{Asc, Sense, SenseKey, ASC_INSUFFICIENT_REGISTRATION_RESOURCES};

/// 26/04: invalid release of persistent reservation.
pub const ASC_INVALID_RELEASE: Asc = Asc(0x26, 0x04);

/// SCSI protocol identifier placed in TransportIDs: iSCSI (SPC-4 table 362).
const PROTOCOL_ISCSI: u8 = 0x05;

/// PR OUT service action REGISTER.
pub const SA_REGISTER: u8 = 0;
/// PR OUT service action RESERVE.
pub const SA_RESERVE: u8 = 1;
/// PR OUT service action RELEASE.
pub const SA_RELEASE: u8 = 2;
/// PR OUT service action CLEAR.
pub const SA_CLEAR: u8 = 3;
/// PR OUT service action PREEMPT.
pub const SA_PREEMPT: u8 = 4;
/// PR OUT service action PREEMPT AND ABORT.
pub const SA_PREEMPT_AND_ABORT: u8 = 5;
/// PR OUT service action REGISTER AND IGNORE EXISTING KEY.
pub const SA_REGISTER_AND_IGNORE: u8 = 6;

/// Why a PR OUT failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrOutError {
    /// Complete with RESERVATION CONFLICT.
    Conflict,
    /// Complete with CHECK CONDITION.
    Check(Sense),
}

impl From<Sense> for PrOutError {
    fn from(s: Sense) -> Self {
        PrOutError::Check(s)
    }
}

/// Validates a PR OUT CDB and returns the parameter list length (always 24).
pub fn pr_out_len(cdb: &Cdb<'_>) -> Result<u32, Sense> {
    if cdb.service_action() > SA_REGISTER_AND_IGNORE {
        return Err(Sense::invalid_cdb(1, Some(4)));
    }
    let len = cdb.u32(5);
    if len != 24 {
        return Err(Sense::param_list_length());
    }
    Ok(len)
}

/// Builds an iSCSI TransportID (SPC-4 7.6.4.6): format 01b when the name carries an ISID.
fn transport_id(name: &str) -> Vec<u8> {
    let format: u8 = if name.contains(",i,0x") { 0x40 } else { 0x00 };
    let mut body = name.as_bytes().to_vec();
    body.push(0);
    while body.len() & 3 != 0 {
        body.push(0);
    }
    let mut out = vec![format | PROTOCOL_ISCSI, 0];
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend(body);
    out
}

/// PERSISTENT RESERVE IN, all four service actions, truncated to the allocation length.
pub fn pr_in(cdb: &Cdb<'_>, st: &ReservationState) -> Result<Vec<u8>, Sense> {
    let alloc = usize::from(cdb.u16(7));
    let mut out = Vec::new();
    match cdb.service_action() {
        0 => {
            out.extend_from_slice(&st.generation.to_be_bytes());
            out.extend_from_slice(&((st.registrations.len() * 8) as u32).to_be_bytes());
            for r in &st.registrations {
                out.extend_from_slice(&r.key.to_be_bytes());
            }
        }
        1 => {
            out.extend_from_slice(&st.generation.to_be_bytes());
            match &st.reservation {
                None => out.extend_from_slice(&0u32.to_be_bytes()),
                Some(res) => {
                    out.extend_from_slice(&16u32.to_be_bytes());
                    let key = match &res.holder {
                        Some(h) => st.registration(h).map_or(0, |r| r.key),
                        None => 0,
                    };
                    out.extend_from_slice(&key.to_be_bytes());
                    out.extend_from_slice(&[0; 5]);
                    out.push(type_code(res.kind)); // scope LU_SCOPE (0) | type
                    out.extend_from_slice(&[0, 0]);
                }
            }
        }
        2 => {
            out.extend_from_slice(&8u16.to_be_bytes());
            out.push(0x01); // PTPL_C
            out.push(0x80 | u8::from(st.aptpl)); // TMV | PTPL_A
                                                 // Type mask: WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX ; EX_AC_AR
            out.push(0x80 | 0x40 | 0x20 | 0x08 | 0x02);
            out.push(0x01);
            out.extend_from_slice(&[0, 0]);
        }
        3 => {
            out.extend_from_slice(&st.generation.to_be_bytes());
            out.extend_from_slice(&[0; 4]);
            for r in &st.registrations {
                let holder = st.is_holder(&r.who);
                out.extend_from_slice(&r.key.to_be_bytes());
                out.extend_from_slice(&[0; 4]);
                out.push(u8::from(holder)); // R_HOLDER
                out.push(match (&st.reservation, holder) {
                    (Some(res), true) => type_code(res.kind),
                    _ => 0,
                });
                out.extend_from_slice(&[0; 4]);
                let (relative_port, name) = transport_name(&r.who);
                out.extend_from_slice(&relative_port.to_be_bytes());
                let tid = transport_id(&name);
                out.extend_from_slice(&(tid.len() as u32).to_be_bytes());
                out.extend(tid);
            }
            let len = (out.len() - 8) as u32;
            out[4..8].copy_from_slice(&len.to_be_bytes());
        }
        _ => return Err(Sense::invalid_cdb(1, Some(4))),
    }
    out.truncate(alloc);
    Ok(out)
}

/// The relative port and TransportID name reported for a registrant. NVMe hosts have no SCSI
/// port: they are reported on relative port 0 under `<host NQN>,hostid=<hex>`.
fn transport_name(who: &Registrant) -> (u16, String) {
    match who {
        Registrant::Scsi {
            initiator_port,
            relative_port,
        } => (*relative_port, initiator_port.clone()),
        Registrant::Nvme { host_nqn, host_id } => {
            (0, format!("{host_nqn},hostid={}", hex::encode(host_id)))
        }
    }
}

/// Executes a PR OUT service action with its 24-byte parameter list on behalf of `me`.
pub fn pr_out(
    st: &mut Reservations,
    me: &Registrant,
    sa: u8,
    scope_type: u8,
    data: &[u8],
) -> Result<Effect, PrOutError> {
    let res_key = be64(data, 0).ok_or(Sense::param_list_length())?;
    let sa_key = be64(data, 8).ok_or(Sense::param_list_length())?;
    let flags = data.get(20).copied().ok_or(Sense::param_list_length())?;
    if flags & 0x08 != 0 {
        return Err(Sense::invalid_param(20, Some(3)).into()); // SPEC_I_PT unsupported
    }
    if flags & 0x04 != 0 {
        return Err(Sense::invalid_param(20, Some(2)).into()); // ALL_TG_PT unsupported
    }
    let aptpl = flags & 0x01 != 0;
    let kind = || {
        if scope_type >> 4 != 0 {
            return Err(Sense::invalid_cdb(2, Some(7)));
        }
        type_from_code(scope_type & 0x0F).ok_or(Sense::invalid_cdb(2, Some(3)))
    };
    let r = match sa {
        SA_REGISTER => st.register(me, Some(res_key), sa_key, aptpl),
        SA_REGISTER_AND_IGNORE => st.register(me, None, sa_key, aptpl),
        SA_RESERVE => {
            // A registration check comes first: a non-registrant gets RESERVATION CONFLICT
            // whatever the type field says.
            if st.key_of(me) != Some(res_key) {
                return Err(PrOutError::Conflict);
            }
            st.reserve(me, res_key, kind()?)
        }
        SA_RELEASE => {
            if st.key_of(me) != Some(res_key) {
                return Err(PrOutError::Conflict);
            }
            // The type is only checked when there is a reservation this nexus holds.
            if st.state().reservation.is_some() && st.state().is_holder(me) {
                st.release(me, res_key, kind()?)
            } else {
                Ok(Effect::default())
            }
        }
        SA_CLEAR => st.clear(me, res_key),
        SA_PREEMPT | SA_PREEMPT_AND_ABORT => {
            if st.key_of(me) != Some(res_key) {
                return Err(PrOutError::Conflict);
            }
            st.preempt(me, res_key, sa_key, kind()?, sa == SA_PREEMPT_AND_ABORT)
        }
        _ => return Err(Sense::invalid_cdb(1, Some(4)).into()),
    };
    r.map_err(|e| match e {
        ReservationError::Conflict => PrOutError::Conflict,
        ReservationError::NoResources => Sense::new(
            SenseKey::IllegalRequest,
            ASC_INSUFFICIENT_REGISTRATION_RESOURCES,
        )
        .into(),
        ReservationError::WrongType => {
            Sense::new(SenseKey::IllegalRequest, ASC_INVALID_RELEASE).into()
        }
        ReservationError::ZeroPreemptKey => Sense::invalid_param(8, None).into(),
        ReservationError::ZeroKey => Sense::invalid_param(8, None).into(),
    })
}
