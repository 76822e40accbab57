//! Reservation notifications for NVMe hosts.
//!
//! A volume has one reservation state, kept by its SCSI logical unit. A change made over
//! either protocol raises unit attentions (REGISTRATIONS PREEMPTED, RESERVATIONS RELEASED,
//! RESERVATIONS PREEMPTED) for the registrants concerned; those that are NVMe hosts have no
//! SCSI nexus to carry them, so the unit hands them out after the change and they arrive here:
//! each becomes a Reservation Notification log page (and its asynchronous event) on the admin
//! queue of every controller of that host with the volume as a namespace.

use std::sync::Arc;

use proto_iscsi::scsi::sense::{
    Asc, ASC_REGISTRATIONS_PREEMPTED, ASC_RESERVATIONS_PREEMPTED, ASC_RESERVATIONS_RELEASED,
};
use proto_iscsi::scsi::PortId;
use proto_nvmeof::resv_notice::NoticeKind;
use tokio::sync::broadcast::error::RecvError;

use super::shared::{lock, Control, NvmeShared};
use crate::lu::LuHandle;

/// The NVMe notice for a reservation unit attention.
fn kind(asc: Asc) -> Option<NoticeKind> {
    match asc {
        ASC_REGISTRATIONS_PREEMPTED => Some(NoticeKind::RegistrationPreempted),
        ASC_RESERVATIONS_RELEASED => Some(NoticeKind::ReservationReleased),
        ASC_RESERVATIONS_PREEMPTED => Some(NoticeKind::ReservationPreempted),
        _ => None,
    }
}

/// Starts one task per exported volume that forwards its notices to the NVMe hosts concerned.
pub(super) fn follow_reservation_notices(
    shared: &Arc<NvmeShared>,
    shutdown: &crate::shutdown::Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut lus: Vec<Arc<LuHandle>> = Vec::new();
    for lu in shared.namespaces.values() {
        if !lus.iter().any(|l| Arc::ptr_eq(l, lu)) {
            lus.push(Arc::clone(lu));
        }
    }
    lus.into_iter()
        .map(|lu| {
            let mut rx = lu.subscribe_notices();
            let weak = Arc::downgrade(shared);
            let mut stop = shutdown.subscribe();
            tokio::spawn(async move {
                loop {
                    let batch = tokio::select! {
                        r = rx.recv() => match r {
                            Ok(b) => b,
                            Err(RecvError::Lagged(n)) => {
                                tracing::warn!(volume = %lu.volume.name, lost = n, "reservation notices dropped");
                                continue;
                            }
                            Err(RecvError::Closed) => return,
                        },
                        _ = stop.changed() => return,
                    };
                    let Some(shared) = weak.upgrade() else { return };
                    deliver(&shared, &lu, &batch);
                }
            })
        })
        .collect()
}

/// Sends each notice of `batch` (raised on `lu`) to the admin queues of the NVMe host it
/// names, once per namespace exporting the volume.
pub(super) fn deliver(shared: &NvmeShared, lu: &Arc<LuHandle>, batch: &[(PortId, Asc)]) {
    let conns = lock(&shared.conns);
    for (who, asc) in batch {
        let Some(kind) = kind(*asc) else { continue };
        for ((nqn, nsid), l) in &shared.namespaces {
            if !Arc::ptr_eq(l, lu) {
                continue;
            }
            for e in conns.values() {
                if e.qid == 0
                    && e.cntlid.is_some()
                    && e.subnqn.as_deref() == Some(nqn.as_str())
                    && e.who.as_ref() == Some(who)
                {
                    let _ = e.tx.send(Control::ReservationNotice { kind, nsid: *nsid });
                }
            }
        }
    }
}
