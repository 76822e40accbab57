//! NVMe reservations as operations on the volume's one SCSI persistent-reservation state.
//!
//! The NVMe base specification defines its reservation types as SCSI's, so a volume served
//! over both protocols keeps one state: the [`LogicalUnit`](proto_iscsi::scsi::LogicalUnit)'s.
//! An NVMe host registers under an identity derived from its Host Identifier (all its
//! controllers and paths are one registrant, as NVMe requires), distinct from every SCSI
//! I_T nexus: relative target port 0, which no SCSI port uses. Changes are persisted with the
//! volume exactly like a SCSI PERSISTENT RESERVE OUT's.

use proto_iscsi::scsi::{
    PortId, PrAcquire, PrAcquireAction, PrFailure, PrRegister, PrRegisterAction, PrRelease,
    PrState, PrType,
};
use proto_nvmeof::reservation::{
    AcquireAction, PtplChange, RegisterAction, Registrant, ReleaseAction, ReservationReport,
};
use proto_nvmeof::{IoOp, IoResult, ReservationOutcome, ReservationRequest, ReservationType};

use crate::lu::LuHandle;

/// The relative port of every NVMe registrant (SCSI relative port identifiers start at 1).
pub const NVME_RELATIVE_PORT: u16 = 0;
/// Separates the host NQN from the host identifier in an NVMe registrant's name.
const HOSTID_TAG: &str = ",hostid=";
/// Controller ID reported for registrants that are not one controller: NVMe hosts (the
/// dynamic controller model gives a host a new CNTLID per association) and SCSI nexuses.
const NO_CNTLID: u16 = 0xFFFF;

/// An NVMe host's registrant identity: `<host NQN>,hostid=<32 hex digits>` on port 0.
pub fn nvme_identity(hostnqn: &str, host_id: &[u8; 16]) -> PortId {
    PortId {
        initiator_port: format!("{hostnqn}{HOSTID_TAG}{}", hex::encode(host_id)),
        relative_port: NVME_RELATIVE_PORT,
    }
}

/// The Host Identifier of an NVMe registrant; None for SCSI nexuses.
pub fn nvme_host_id(port: &PortId) -> Option<[u8; 16]> {
    if port.relative_port != NVME_RELATIVE_PORT {
        return None;
    }
    let (_, hex_id) = port.initiator_port.rsplit_once(HOSTID_TAG)?;
    let mut id = [0u8; 16];
    hex::decode_to_slice(hex_id, &mut id).ok()?;
    Some(id)
}

fn pr_type(t: ReservationType) -> PrType {
    match t {
        ReservationType::WriteExclusive => PrType::WriteExclusive,
        ReservationType::ExclusiveAccess => PrType::ExclusiveAccess,
        ReservationType::WriteExclusiveRegistrantsOnly => PrType::WriteExclusiveRegistrantsOnly,
        ReservationType::ExclusiveAccessRegistrantsOnly => PrType::ExclusiveAccessRegistrantsOnly,
        ReservationType::WriteExclusiveAllRegistrants => PrType::WriteExclusiveAllRegistrants,
        ReservationType::ExclusiveAccessAllRegistrants => PrType::ExclusiveAccessAllRegistrants,
    }
}

fn nvme_type(t: PrType) -> ReservationType {
    match t {
        PrType::WriteExclusive => ReservationType::WriteExclusive,
        PrType::ExclusiveAccess => ReservationType::ExclusiveAccess,
        PrType::WriteExclusiveRegistrantsOnly => ReservationType::WriteExclusiveRegistrantsOnly,
        PrType::ExclusiveAccessRegistrantsOnly => ReservationType::ExclusiveAccessRegistrantsOnly,
        PrType::WriteExclusiveAllRegistrants => ReservationType::WriteExclusiveAllRegistrants,
        PrType::ExclusiveAccessAllRegistrants => ReservationType::ExclusiveAccessAllRegistrants,
    }
}

/// The NVMe Reservation Status of the shared state: NVMe hosts with their Host Identifier,
/// SCSI nexuses with a zero one; CNTLID 0xFFFF for all (none is tied to one controller).
pub fn report(st: &PrState) -> ReservationReport {
    ReservationReport {
        generation: st.generation,
        rtype: st.reservation.as_ref().map(|r| nvme_type(r.kind)),
        ptpl: st.aptpl,
        registrants: st
            .registrations
            .iter()
            .map(|r| Registrant {
                host_id: nvme_host_id(&r.port).unwrap_or([0; 16]),
                cntlid: NO_CNTLID,
                key: r.key,
                holder: st.is_holder(&r.port),
            })
            .collect(),
    }
}

/// Whether `op` from NVMe host `who` may run under the volume's reservations; reads are
/// Read and Compare, everything else that touches the medium (Write, Write Zeroes, Dataset
/// Management, Flush) is in the write group of the NVMe base specification.
pub fn allows(lu: &LuHandle, who: &PortId, op: &IoOp) -> bool {
    let write = match op {
        IoOp::Read { .. } => false,
        IoOp::Reservation(_) => return true,
        _ => true,
    };
    lu.lock().pr_allows(who, write)
}

fn outcome(r: Result<bool, PrFailure>) -> (ReservationOutcome, bool) {
    match r {
        Ok(changed) => (ReservationOutcome::Done, changed),
        Err(PrFailure::Conflict) => (ReservationOutcome::Conflict, false),
        Err(PrFailure::Invalid) => (ReservationOutcome::Invalid, false),
    }
}

/// Applies an NVMe reservation request from host `who` to the volume's state, persisting
/// the state before answering when it changed (a failure to persist is a write fault: the
/// host must not believe a change that would not survive a restart).
pub async fn apply(lu: &LuHandle, who: &PortId, req: ReservationRequest) -> IoResult {
    let (out, changed) = {
        let mut u = lu.lock();
        match req {
            ReservationRequest::Report { .. } => {
                return IoResult::Reservation(ReservationOutcome::Report(report(u.pr_state())));
            }
            ReservationRequest::Register {
                action,
                current_key,
                new_key,
                ignore_key,
                ptpl,
                ..
            } => outcome(u.pr_register(
                who,
                PrRegister {
                    action: match action {
                        RegisterAction::Register => PrRegisterAction::Register { new_key },
                        RegisterAction::Unregister => PrRegisterAction::Unregister,
                        RegisterAction::Replace => PrRegisterAction::Replace { new_key },
                    },
                    current_key,
                    ignore_key,
                    ptpl: match ptpl {
                        PtplChange::NoChange => None,
                        PtplChange::Off => Some(false),
                        PtplChange::On => Some(true),
                    },
                },
            )),
            ReservationRequest::Acquire {
                action,
                rtype,
                current_key,
                preempt_key,
                ignore_key,
                ..
            } => outcome(u.pr_acquire(
                who,
                PrAcquire {
                    action: match action {
                        AcquireAction::Acquire => PrAcquireAction::Acquire,
                        AcquireAction::Preempt => PrAcquireAction::Preempt { key: preempt_key },
                        AcquireAction::PreemptAndAbort => {
                            PrAcquireAction::PreemptAndAbort { key: preempt_key }
                        }
                    },
                    kind: pr_type(rtype),
                    current_key,
                    ignore_key,
                },
            )),
            ReservationRequest::Release {
                action,
                rtype,
                current_key,
                ignore_key,
                ..
            } => outcome(u.pr_release(
                who,
                PrRelease {
                    clear: action == ReleaseAction::Clear,
                    kind: rtype.map(pr_type),
                    current_key,
                    ignore_key,
                },
            )),
        }
    };
    if changed {
        if let Err(e) = lu.persist_reservations().await {
            tracing::error!(volume = %lu.volume.name, error = %e, "persisting reservations failed");
            return IoResult::MediumError;
        }
    }
    IoResult::Reservation(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_carry_the_host_id_and_never_match_scsi_ports() {
        let id = [0x5A; 16];
        let p = nvme_identity("nqn.2014-08.org.nvmexpress:uuid:x", &id);
        assert_eq!(nvme_host_id(&p), Some(id));
        assert!(p.initiator_port.ends_with(&hex::encode(id)));
        let scsi = PortId {
            initiator_port: p.initiator_port.clone(),
            relative_port: 1,
        };
        assert_eq!(nvme_host_id(&scsi), None);
    }

    #[test]
    fn every_type_maps_to_its_scsi_code() {
        for code in 1..=6 {
            let t = ReservationType::from_nvme(code).unwrap();
            assert_eq!(pr_type(t).code(), t.scsi_code());
            assert_eq!(nvme_type(pr_type(t)), t);
        }
    }
}
