//! PERSISTENT RESERVE IN and OUT (SPC-4 6.15, 6.16, 5.13) executed against a [`PrState`].

use super::cdb::{be64, Cdb};
use super::pr::{PortId, PrState, PrType, Registration, Reservation, MAX_REGISTRATIONS};
use super::sense::{
    Asc, Sense, SenseKey, ASC_INSUFFICIENT_REGISTRATION_RESOURCES, ASC_REGISTRATIONS_PREEMPTED,
    ASC_RESERVATIONS_PREEMPTED, ASC_RESERVATIONS_RELEASED,
};

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

/// Side effects of a successful PR OUT for the logical unit to apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrOutEffect {
    /// The state changed and must be persisted before completing.
    pub changed: bool,
    /// Unit attentions to establish for these initiator ports.
    pub unit_attentions: Vec<(PortId, Asc)>,
    /// Ports whose tasks must be aborted (PREEMPT AND ABORT).
    pub abort: Vec<PortId>,
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
pub fn pr_in(cdb: &Cdb<'_>, st: &PrState) -> Result<Vec<u8>, Sense> {
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
                    out.push(res.kind.code()); // scope LU_SCOPE (0) | type
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
                let holder = st.is_holder(&r.port);
                out.extend_from_slice(&r.key.to_be_bytes());
                out.extend_from_slice(&[0; 4]);
                out.push(u8::from(holder)); // R_HOLDER
                out.push(match (&st.reservation, holder) {
                    (Some(res), true) => res.kind.code(),
                    _ => 0,
                });
                out.extend_from_slice(&[0; 4]);
                out.extend_from_slice(&r.port.relative_port.to_be_bytes());
                let tid = transport_id(&r.port.initiator_port);
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

/// Ports of all registrations except `me`.
fn others(st: &PrState, me: &PortId) -> Vec<PortId> {
    st.registrations
        .iter()
        .filter(|r| &r.port != me)
        .map(|r| r.port.clone())
        .collect()
}

/// Executes a PR OUT service action with its 24-byte parameter list on behalf of `me`.
pub fn pr_out(
    st: &mut PrState,
    me: &PortId,
    sa: u8,
    scope_type: u8,
    data: &[u8],
) -> Result<PrOutEffect, PrOutError> {
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
    let mine = st.registration(me).map(|r| r.key);
    let mut fx = PrOutEffect::default();

    if sa == SA_REGISTER || sa == SA_REGISTER_AND_IGNORE {
        if sa == SA_REGISTER {
            match mine {
                None if res_key != 0 => return Err(PrOutError::Conflict),
                Some(k) if k != res_key => return Err(PrOutError::Conflict),
                _ => {}
            }
        }
        match (mine, sa_key) {
            (None, 0) => {}
            (None, k) => {
                if st.registrations.len() >= MAX_REGISTRATIONS {
                    return Err(Sense::new(
                        SenseKey::IllegalRequest,
                        ASC_INSUFFICIENT_REGISTRATION_RESOURCES,
                    )
                    .into());
                }
                st.registrations.push(Registration {
                    port: me.clone(),
                    key: k,
                });
            }
            (Some(_), 0) => unregister(st, me, &mut fx),
            (Some(_), k) => {
                if let Some(r) = st.registrations.iter_mut().find(|r| &r.port == me) {
                    r.key = k;
                }
            }
        }
        st.aptpl = aptpl;
        st.generation = st.generation.wrapping_add(1);
        fx.changed = true;
        return Ok(fx);
    }

    // Every other service action requires a matching registration.
    match mine {
        Some(k) if k == res_key => {}
        _ => return Err(PrOutError::Conflict),
    }
    let kind = || -> Result<PrType, Sense> {
        if scope_type >> 4 != 0 {
            return Err(Sense::invalid_cdb(2, Some(7)));
        }
        PrType::from_code(scope_type & 0x0F).ok_or(Sense::invalid_cdb(2, Some(3)))
    };
    match sa {
        SA_RESERVE => {
            let kind = kind()?;
            match &st.reservation {
                None => {
                    st.reservation = Some(Reservation {
                        kind,
                        holder: (!kind.all_registrants()).then(|| me.clone()),
                    });
                    fx.changed = true;
                }
                Some(r) if st.is_holder(me) && r.kind == kind => {}
                Some(_) => return Err(PrOutError::Conflict),
            }
        }
        SA_RELEASE => {
            if let Some(r) = st.reservation.clone() {
                if st.is_holder(me) {
                    if r.kind != kind()? {
                        return Err(
                            Sense::new(SenseKey::IllegalRequest, ASC_INVALID_RELEASE).into()
                        );
                    }
                    st.reservation = None;
                    fx.changed = true;
                    if r.kind.registrants_access() {
                        for p in others(st, me) {
                            fx.unit_attentions.push((p, ASC_RESERVATIONS_RELEASED));
                        }
                    }
                }
            }
        }
        SA_CLEAR => {
            for p in others(st, me) {
                fx.unit_attentions.push((p, ASC_RESERVATIONS_PREEMPTED));
            }
            st.registrations.clear();
            st.reservation = None;
            st.generation = st.generation.wrapping_add(1);
            fx.changed = true;
        }
        SA_PREEMPT | SA_PREEMPT_AND_ABORT => {
            let new_kind = kind()?;
            preempt(st, me, sa_key, new_kind, &mut fx)?;
            if sa == SA_PREEMPT_AND_ABORT {
                fx.abort = fx
                    .unit_attentions
                    .iter()
                    .filter(|(_, a)| *a == ASC_REGISTRATIONS_PREEMPTED)
                    .map(|(p, _)| p.clone())
                    .collect();
            }
            st.generation = st.generation.wrapping_add(1);
            fx.changed = true;
        }
        _ => return Err(Sense::invalid_cdb(1, Some(4)).into()),
    }
    Ok(fx)
}

/// Removes `me`'s registration, releasing the reservation when it goes with it.
fn unregister(st: &mut PrState, me: &PortId, fx: &mut PrOutEffect) {
    let was_holder = st.is_holder(me);
    st.registrations.retain(|r| &r.port != me);
    if let Some(r) = st.reservation.clone() {
        let release = if r.kind.all_registrants() {
            st.registrations.is_empty()
        } else {
            was_holder
        };
        if release {
            st.reservation = None;
            if matches!(
                r.kind,
                PrType::WriteExclusiveRegistrantsOnly | PrType::ExclusiveAccessRegistrantsOnly
            ) {
                for p in others(st, me) {
                    fx.unit_attentions.push((p, ASC_RESERVATIONS_RELEASED));
                }
            }
        }
    }
}

/// PREEMPT semantics (SPC-4 5.13.11.4).
fn preempt(
    st: &mut PrState,
    me: &PortId,
    sa_key: u64,
    new_kind: PrType,
    fx: &mut PrOutEffect,
) -> Result<(), PrOutError> {
    let remove_key = |st: &mut PrState, key: u64, fx: &mut PrOutEffect| -> bool {
        let victims: Vec<PortId> = st
            .registrations
            .iter()
            .filter(|r| r.key == key && &r.port != me)
            .map(|r| r.port.clone())
            .collect();
        let found = st.registrations.iter().any(|r| r.key == key);
        st.registrations.retain(|r| r.key != key || &r.port == me);
        for v in victims {
            fx.unit_attentions.push((v, ASC_REGISTRATIONS_PREEMPTED));
        }
        found
    };
    match st.reservation.clone() {
        Some(res) if res.kind.all_registrants() && sa_key == 0 => {
            for p in others(st, me) {
                fx.unit_attentions.push((p, ASC_REGISTRATIONS_PREEMPTED));
            }
            st.registrations.retain(|r| &r.port == me);
            st.reservation = Some(Reservation {
                kind: new_kind,
                holder: (!new_kind.all_registrants()).then(|| me.clone()),
            });
        }
        Some(res) if !res.kind.all_registrants() => {
            let holder_key = res
                .holder
                .as_ref()
                .and_then(|h| st.registration(h))
                .map(|r| r.key);
            if holder_key == Some(sa_key) {
                remove_key(st, sa_key, fx);
                st.reservation = Some(Reservation {
                    kind: new_kind,
                    holder: (!new_kind.all_registrants()).then(|| me.clone()),
                });
            } else {
                if sa_key == 0 {
                    return Err(Sense::invalid_param(8, None).into());
                }
                if !remove_key(st, sa_key, fx) {
                    return Err(PrOutError::Conflict);
                }
            }
        }
        _ => {
            if sa_key == 0 {
                return Err(Sense::invalid_param(8, None).into());
            }
            if !remove_key(st, sa_key, fx) {
                return Err(PrOutError::Conflict);
            }
            if let Some(r) = &st.reservation {
                if r.kind.all_registrants() && st.registrations.is_empty() {
                    st.reservation = None;
                }
            }
        }
    }
    Ok(())
}
