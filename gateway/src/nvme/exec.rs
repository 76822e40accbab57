//! Running NVMe I/O commands on the volume behind a namespace: the reservation check, the
//! reservation commands on the volume's one reservation state, and every media operation
//! through the volume target's one executor.

use block_core::{BlockOp, BlockResult, IoKind, Registrant};
use proto_nvmeof::reservation;
use proto_nvmeof::{IoOp, IoResult, ReservationRequest};

use crate::counters::IoCounters;
use crate::metrics::{Protocol, Refusal};
use crate::target::VolumeTarget;

/// Carries out one operation from NVMe host `who` on volume target `t`: every command first
/// passes the volume's one reservation check (a conflict when the state excludes the host);
/// reservation commands then act on the shared reservation state, block operations go to the
/// target's one executor.
pub(super) async fn run(
    t: &VolumeTarget,
    who: &Registrant,
    op: IoOp,
    counters: &IoCounters,
) -> IoResult {
    let (kind, bytes) = match &op {
        IoOp::Block(b) => b.kind_and_bytes(t.volume.volume.block_size()),
        IoOp::Reservation(_) => (IoKind::Other, 0),
    };
    counters.count(kind, bytes);
    if !t.reservations().lock().allows(who, op.access()) {
        t.metrics()
            .refused(Protocol::Nvme, Refusal::ReservationConflict);
        return IoResult::Block(BlockResult::ReservationConflict);
    }
    match op {
        IoOp::Block(op) => IoResult::Block(t.execute(Protocol::Nvme, op).await),
        IoOp::Reservation(req) => reserve(t, who, req).await,
    }
}

/// Applies an NVMe reservation request from host `who` to the volume's state, persisting the
/// state before answering when it changed (a failure to persist is a write fault: the host must
/// not believe a change that would not survive a restart).
async fn reserve(t: &VolumeTarget, who: &Registrant, req: ReservationRequest) -> IoResult {
    let (outcome, fx) = reservation::apply(&mut t.reservations().lock(), who, req);
    if fx.changed
        && t.execute(Protocol::Nvme, BlockOp::PersistReservations)
            .await
            != BlockResult::Ok
    {
        return IoResult::Block(BlockResult::MediumError);
    }
    // Preempt and Abort completes once the preempted hosts' commands are aborted.
    let victims: Vec<Registrant> = fx.aborted.into_iter().filter(|v| v != who).collect();
    t.abort_tasks_of(&victims).await;
    IoResult::Reservation(outcome)
}
