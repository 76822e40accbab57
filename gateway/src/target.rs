//! One served volume as a block target: the state both protocol front ends share (its one
//! reservation state, stored with the volume) and the one executor of block operations, with
//! the one place volume errors become block results.
//!
//! The SCSI logical unit ([`crate::lu`]) and the NVMe namespaces ([`crate::nvme`]) of a volume
//! both hold its [`VolumeTarget`]; neither reaches into the other.

use std::collections::BTreeMap;
use std::sync::Arc;

use block_core::reservation::ReservationState;
use block_core::{
    AccessState, BlockOp, BlockResult, LbaExtent, Notice, Provisioning, Registrant,
    SharedReservations,
};
use blockstore::Error as VolError;
use bytes::Bytes;

use crate::metrics::{Metrics, Op, Protocol, VolumeMetrics};
use crate::volumes::{ServedVolume, Volumes};

/// Name of the volume metadata holding the reservation state.
pub const RESERVATIONS_METADATA: &str = "meta-scsi-pr";

/// Every served volume's target by volume name.
pub type Targets = BTreeMap<String, Arc<VolumeTarget>>;

/// A batch of reservation notices for registrants that are not SCSI nexuses, published after a
/// change for the NVMe front end.
pub type NoticeBatch = Arc<Vec<(Registrant, Notice)>>;

/// One volume as both protocols serve it.
#[derive(Debug)]
pub struct VolumeTarget {
    /// The volume.
    pub volume: Arc<ServedVolume>,
    resv: SharedReservations,
    /// Serialises reservation writes so the stored state is always the newest one.
    persist: tokio::sync::Mutex<()>,
    notices: tokio::sync::broadcast::Sender<NoticeBatch>,
    metrics: VolumeMetrics,
    /// The front ends that abort preempted hosts' commands on this volume.
    aborts: crate::aborts::AbortSinks,
}

/// Builds the target of every served volume, restoring each one's reservations; each records
/// its commands in `metrics`.
pub async fn build_all(vols: &Volumes, metrics: &Metrics) -> Result<Targets, String> {
    let mut out = BTreeMap::new();
    for (name, v) in vols {
        out.insert(
            name.clone(),
            VolumeTarget::open(Arc::clone(v), metrics).await?,
        );
    }
    Ok(out)
}

impl VolumeTarget {
    /// The target of `volume`, with the reservation state stored with it, recording its
    /// commands in `metrics`.
    pub async fn open(
        volume: Arc<ServedVolume>,
        metrics: &Metrics,
    ) -> Result<Arc<VolumeTarget>, String> {
        let resv = SharedReservations::new();
        if let Some(bytes) = volume
            .volume
            .load_metadata(RESERVATIONS_METADATA)
            .await
            .map_err(|e| format!("volume {}: reading reservations: {e}", volume.name))?
        {
            let state = ReservationState::from_bytes(&bytes).map_err(|e| {
                format!(
                    "volume {}: stored reservations unreadable: {e}",
                    volume.name
                )
            })?;
            resv.lock().restore(state);
        }
        let metrics = metrics.volume(&volume.name);
        Ok(Arc::new(VolumeTarget {
            volume,
            metrics,
            resv,
            persist: tokio::sync::Mutex::new(()),
            notices: tokio::sync::broadcast::channel(64).0,
            aborts: Default::default(),
        }))
    }

    /// The volume's handles on the node's metrics (for refusals decided before the executor).
    pub fn metrics(&self) -> &VolumeMetrics {
        &self.metrics
    }

    /// The volume's one reservation state.
    pub fn reservations(&self) -> &SharedReservations {
        &self.resv
    }

    /// Whether hosts see the volume write protected (a read-only view of a snapshot): the LU
    /// and the namespaces report it (MODE SENSE WP, Identify Namespace NSATTR) and refuse
    /// every change in their protocol's words.
    pub fn write_protected(&self) -> bool {
        self.volume.volume.read_only()
    }

    /// The volume's access state on this node.
    pub fn access_state(&self) -> AccessState {
        self.volume.volume.access_state()
    }

    /// Registers a front end able to abort hosts' commands on this volume.
    pub fn add_abort_sink(&self, sink: std::sync::Weak<dyn crate::aborts::AbortSink>) {
        self.aborts.add(sink);
    }

    /// Aborts the commands of the registrants a preempt-and-abort removed, over every
    /// protocol, and returns once their connections have (see [`crate::aborts`]).
    pub async fn abort_tasks_of(&self, victims: &[Registrant]) {
        if !victims.is_empty() {
            tracing::info!(volume = %self.volume.name, victims = victims.len(), "preempt and abort: aborting the preempted hosts' commands");
        }
        self.aborts.abort(&self.volume.name, victims).await;
    }

    /// Receives the reservation notices raised for registrants that are not SCSI nexuses, one
    /// batch per reservation change.
    pub fn subscribe_notices(&self) -> tokio::sync::broadcast::Receiver<NoticeBatch> {
        self.notices.subscribe()
    }

    /// Stores the current reservation state with the volume. Whoever changed it (a SCSI
    /// PERSISTENT RESERVE OUT or an NVMe reservation command) calls this after the change;
    /// writes are serialised and each stores the state as it is when its turn comes, so a
    /// slower writer can never put back an older state. Publishes the change's notices for
    /// registrants that are not SCSI nexuses first.
    pub async fn persist_reservations(&self) -> Result<(), VolError> {
        let notices = self.resv.lock().take_notices(|who| !who.is_scsi());
        if !notices.is_empty() {
            // Nobody listening (no NVMe front end) is fine.
            let _ = self.notices.send(Arc::new(notices));
        }
        let _turn = self.persist.lock().await;
        let bytes = self.resv.lock().state().to_bytes();
        self.volume
            .volume
            .save_metadata(RESERVATIONS_METADATA, bytes)
            .await
    }

    /// Carries out one block operation on the volume for a host on `protocol`: the one
    /// executor for both protocols, and so the one place their latency and volume errors are
    /// measured.
    pub async fn execute(&self, protocol: Protocol, op: BlockOp) -> BlockResult {
        let kind = Op::of(&op);
        let start = std::time::Instant::now();
        let r = self.run(op).await;
        self.metrics.executed(protocol, kind, start.elapsed(), &r);
        r
    }

    async fn run(&self, op: BlockOp) -> BlockResult {
        let v = &self.volume.volume;
        let write = !matches!(op, BlockOp::Read { .. } | BlockOp::GetLbaStatus { .. });
        let r = match op {
            BlockOp::Read { lba, blocks } => {
                return match v.read(lba, u64::from(blocks)).await {
                    Ok(d) => BlockResult::Data(Bytes::from(d)),
                    Err(e) => volume_error(&self.volume.name, e, false),
                }
            }
            BlockOp::Write { lba, data, fua } => v.write(lba, data, fua).await,
            BlockOp::Flush => v.flush().await,
            BlockOp::Deallocate { ranges } => {
                for (lba, blocks) in ranges {
                    if let Err(e) = v.trim(lba, u64::from(blocks)).await {
                        return volume_error(&self.volume.name, e, true);
                    }
                }
                Ok(())
            }
            BlockOp::WriteZeroes {
                lba,
                blocks,
                deallocate,
                fua,
            } => {
                // Deallocated blocks read as zeros, so a trim is a valid way to zero when the
                // host allows deallocation.
                if deallocate {
                    // FUA holds for the deallocation too: durable before completion.
                    match v.trim(lba, u64::from(blocks)).await {
                        Ok(()) if fua => v.flush().await,
                        r => r,
                    }
                } else {
                    v.write_zeroes(lba, u64::from(blocks), fua).await
                }
            }
            BlockOp::CompareAndWrite {
                lba,
                compare,
                write,
                fua,
                ..
            } => {
                v.compare_and_write(lba, compare.to_vec(), write.to_vec(), fua)
                    .await
            }
            BlockOp::GetLbaStatus { lba } => return self.lba_status(lba).await,
            BlockOp::PersistReservations => self.persist_reservations().await,
        };
        match r {
            // A write admitted before the volume's lease ran out (etcd: the node could not
            // renew it, or the process was paused) may finish after: it is durable, but a
            // path whose lease ended acknowledges nothing; the host retries it on the path
            // that serves. Without a lease (no etcd) nothing changes.
            Ok(()) if write && lease_ended(v) => {
                BlockResult::AccessState(AccessState::Transitioning)
            }
            Ok(()) => BlockResult::Ok,
            Err(e) => volume_error(&self.volume.name, e, write),
        }
    }

    async fn lba_status(&self, lba: u64) -> BlockResult {
        let v = &self.volume.volume;
        let mut extents = Vec::new();
        let mut cur = lba;
        let cap = v.capacity_blocks();
        while cur < cap && extents.len() < 64 {
            match v.lba_status(cur, u64::from(u32::MAX)).await {
                Ok((mapped, n)) => {
                    let n = n.clamp(1, u64::from(u32::MAX));
                    extents.push(LbaExtent {
                        lba: cur,
                        blocks: n as u32,
                        status: if mapped {
                            Provisioning::Mapped
                        } else {
                            Provisioning::Deallocated
                        },
                    });
                    cur += n;
                }
                Err(e) => return volume_error(&self.volume.name, e, false),
            }
        }
        BlockResult::LbaStatus(extents)
    }
}

/// The one place volume errors become block results (and so SCSI sense and NVMe status): a
/// role that cannot serve is the retryable path answer; closing for shutdown is a transition
/// (the path is about to go away, the host should retry elsewhere); a range error is out of
/// range; storage failures are medium errors; anything else is internal.
pub fn volume_error(volume: &str, e: VolError, write: bool) -> BlockResult {
    match e {
        VolError::NotServing(s) => BlockResult::AccessState(s),
        VolError::Closed => BlockResult::AccessState(AccessState::Transitioning),
        VolError::OutOfRange { .. } => BlockResult::OutOfRange,
        VolError::Miscompare { offset } => BlockResult::Miscompare {
            offset: offset as u32,
        },
        // The engine logged the exhaustion once; every refused write need not.
        VolError::NoSpace => BlockResult::SpaceExhausted,
        // A read-only view: the front ends refuse writes before they get here; this is the
        // engine's own refusal answered the same way.
        VolError::ReadOnly => BlockResult::WriteProtected,
        VolError::Io(_) | VolError::Failed | VolError::LogFull { .. } => {
            tracing::error!(volume, error = %e, write, "volume I/O failed");
            BlockResult::MediumError
        }
        other => {
            tracing::error!(volume, error = %other, "volume request failed");
            BlockResult::Internal
        }
    }
}

/// Whether the volume runs under a lease that has ended (only etcd's agent sets one).
fn lease_ended(v: &blockstore::Volume) -> bool {
    v.engine()
        .role_state()
        .lease_until
        .is_some_and(|until| std::time::Instant::now() >= until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use block_core::ReservationType;

    #[test]
    fn roles_map_to_retryable_results() {
        for s in [
            AccessState::Standby,
            AccessState::Unavailable,
            AccessState::Transitioning,
        ] {
            assert_eq!(
                volume_error("v", VolError::NotServing(s), true),
                BlockResult::AccessState(s)
            );
        }
        assert_eq!(
            volume_error("v", VolError::Closed, false),
            BlockResult::AccessState(AccessState::Transitioning)
        );
        assert_eq!(
            volume_error("v", VolError::Failed, true),
            BlockResult::MediumError
        );
    }

    #[test]
    fn every_type_has_one_code_per_protocol() {
        // NVMe RTYPE 1..=6 and SCSI TYPE 1,3,5,6,7,8 name the same six types, in that order.
        for (i, t) in ReservationType::ALL.into_iter().enumerate() {
            assert_eq!(proto_nvmeof::reservation::type_code(t), i as u8 + 1);
            assert_eq!(proto_iscsi::scsi::pr::type_code(t), [1, 3, 5, 6, 7, 8][i]);
        }
        let t = proto_nvmeof::reservation::type_from_code(4).unwrap();
        assert_eq!(proto_iscsi::scsi::pr::type_code(t), 6);
    }
}
