//! Reservation notifications for NVMe hosts.
//!
//! A volume has one reservation state (block-core's). A change made over either protocol
//! raises notices (registration preempted, reservation released, reservation preempted) for
//! the registrants concerned; the volume target publishes those for NVMe hosts after the change
//! and they arrive here: each becomes a Reservation Notification log page (and its
//! asynchronous event) on the admin queue of every controller of that host with the volume as a
//! namespace.

use std::sync::Arc;

use block_core::{Notice, Registrant};
use proto_nvmeof::resv_notice::NoticeKind;
use tokio::sync::broadcast::error::RecvError;

use super::shared::{lock, Control, NvmeShared};
use crate::target::VolumeTarget;

/// Starts the task that forwards volume `lu`'s notices to the NVMe hosts concerned (for every
/// served volume: the namespaces exporting it are looked up per notice).
pub(super) fn follow_reservation_notices(
    shared: &Arc<NvmeShared>,
    lu: &Arc<VolumeTarget>,
    shutdown: &crate::shutdown::Shutdown,
) -> tokio::task::JoinHandle<()> {
    let mut rx = lu.subscribe_notices();
    let weak = Arc::downgrade(shared);
    let lu = Arc::downgrade(lu);
    let mut stop = shutdown.subscribe();
    tokio::spawn(async move {
        loop {
            let batch = tokio::select! {
                r = rx.recv() => match r {
                    Ok(b) => b,
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(lost = n, "reservation notices dropped");
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = stop.changed() => return,
            };
            let (Some(shared), Some(lu)) = (weak.upgrade(), lu.upgrade()) else {
                return;
            };
            deliver(&shared, &lu, &batch);
        }
    })
}

/// Sends each notice of `batch` (raised on `lu`) to the admin queues of the NVMe host it
/// names, once per namespace exporting the volume.
pub(super) fn deliver(shared: &NvmeShared, lu: &Arc<VolumeTarget>, batch: &[(Registrant, Notice)]) {
    let namespaces = shared.namespaces();
    let conns = lock(&shared.conns);
    for (who, notice) in batch {
        let kind = NoticeKind::from(*notice);
        for ((nqn, nsid), l) in namespaces.iter() {
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
