//! The SCSI logical unit of each volume, shared by every iSCSI session that reaches it, and
//! the execution of its block operations on the volume.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use blockstore::{AccessState as VolState, Error as VolError};
use bytes::Bytes;
use proto_iscsi::scsi::sense::Asc;
use proto_iscsi::scsi::{
    AccessState, Begun, BlockOp, BlockResult, Completion, LbaExtent, LogicalUnit, LuConfig, Nexus,
    PortGroup, PortId, Provisioning,
};

use crate::config::Config;
use crate::volumes::{ServedVolume, Volumes};

/// Every served volume's logical unit by volume name: one per volume, shared by the iSCSI
/// targets and the NVMe/TCP namespaces exporting it, so both protocols see one reservation
/// state.
pub type Lus = BTreeMap<String, Arc<LuHandle>>;

/// Builds the logical unit of every served volume. Relative target ports are the iSCSI
/// portals (1..=n); the LUN inventory is that of the first target exporting the volume.
pub async fn build_all(cfg: &Config, vols: &Volumes) -> Result<Lus, String> {
    let relative_ports: Vec<u16> = (1..=cfg.iscsi.portals.len() as u16).collect();
    let mut out = BTreeMap::new();
    for (name, v) in vols {
        let luns = cfg
            .iscsi
            .targets
            .iter()
            .find(|t| t.luns.iter().any(|l| &l.volume == name))
            .map_or(vec![0], |t| t.luns.iter().map(|l| l.id).collect());
        let lu = LuHandle::new(Arc::clone(v), relative_ports.clone(), luns).await?;
        out.insert(name.clone(), lu);
    }
    Ok(out)
}

/// Name of the volume metadata holding the SCSI persistent-reservation state.
pub const PR_METADATA: &str = "meta-scsi-pr";
/// The ALUA target port group of this node: every portal of the node is in it, since they all
/// share the volume's one role on this node.
pub const NODE_PORT_GROUP: u16 = 1;

/// One volume's logical unit.
#[derive(Debug)]
pub struct LuHandle {
    /// The volume.
    pub volume: Arc<ServedVolume>,
    lu: Mutex<LogicalUnit>,
    /// Serialises reservation writes so the stored state is always the newest one.
    persist: tokio::sync::Mutex<()>,
    /// Reservation unit attentions for registrants that are not SCSI nexuses (NVMe hosts),
    /// published after each change for the NVMe front end.
    notices: tokio::sync::broadcast::Sender<Arc<Vec<(PortId, Asc)>>>,
}

/// The ALUA state hosts see for a volume access state (the role table of docs/architecture.md).
pub fn alua_state(s: VolState) -> AccessState {
    match s {
        VolState::Optimized => AccessState::Optimized,
        VolState::Standby => AccessState::Standby,
        VolState::Transitioning => AccessState::Transitioning,
        VolState::Unavailable => AccessState::Unavailable,
    }
}

impl LuHandle {
    /// Builds the logical unit of a volume, restoring its persistent reservations, and starts
    /// following the volume's access state.
    pub async fn new(
        volume: Arc<ServedVolume>,
        relative_ports: Vec<u16>,
        luns: Vec<u16>,
    ) -> Result<Arc<LuHandle>, String> {
        let v = &volume.volume;
        let mut lu = LogicalUnit::new(LuConfig::new(v.block_size(), v.uuid()), v.capacity_blocks());
        lu.set_port_groups(vec![PortGroup {
            id: NODE_PORT_GROUP,
            state: alua_state(v.access_state()),
            preferred: true,
            relative_ports,
        }]);
        lu.set_luns(luns);
        if let Some(bytes) = v
            .load_metadata(PR_METADATA)
            .await
            .map_err(|e| format!("volume {}: reading reservations: {e}", volume.name))?
        {
            lu.load_pr_state(&bytes).map_err(|e| {
                format!(
                    "volume {}: stored reservations unreadable: {e}",
                    volume.name
                )
            })?;
        }
        let handle = Arc::new(LuHandle {
            volume,
            lu: Mutex::new(lu),
            persist: tokio::sync::Mutex::new(()),
            notices: tokio::sync::broadcast::channel(64).0,
        });
        let mut rx = handle.volume.volume.watch_access();
        let weak = Arc::downgrade(&handle);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let state = *rx.borrow_and_update();
                let Some(h) = weak.upgrade() else { return };
                h.lock()
                    .set_access_state(NODE_PORT_GROUP, alua_state(state));
                tracing::info!(volume = %h.volume.name, ?state, "access state changed");
            }
        });
        Ok(handle)
    }

    /// Receives the reservation unit attentions raised for registrants that are not SCSI
    /// nexuses (see [`LogicalUnit::take_port_notices`]), one batch per reservation change.
    pub fn subscribe_notices(&self) -> tokio::sync::broadcast::Receiver<Arc<Vec<(PortId, Asc)>>> {
        self.notices.subscribe()
    }

    /// The unit's state (held only for the duration of one step, never across an await).
    pub fn lock(&self) -> MutexGuard<'_, LogicalUnit> {
        self.lu.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one SCSI command to completion. Returns the completion and how many data-out bytes
    /// the command consumed.
    pub async fn execute(
        &self,
        nexus: &Nexus,
        cdb: &[u8],
        data_out: Bytes,
        expected_out: u32,
    ) -> (Completion, u32) {
        let (c, used) = self.execute_steps(nexus, cdb, data_out, expected_out).await;
        // The residual of a write is measured against the CDB's transfer length, even when
        // only part of it was sent (and written).
        let bs = self.volume.volume.block_size();
        let used = proto_iscsi::scsi::rw::write_transfer_bytes(cdb, bs)
            .map_or(used, |b| b.min(u64::from(u32::MAX)) as u32);
        (c, used)
    }

    async fn execute_steps(
        &self,
        nexus: &Nexus,
        cdb: &[u8],
        data_out: Bytes,
        expected_out: u32,
    ) -> (Completion, u32) {
        let (begun, used) = self
            .lock()
            .start_with_data(nexus, cdb, &data_out, expected_out);
        match begun {
            Begun::Done(c) => (c, used),
            Begun::Io { op, task } => {
                let result = self.run(op).await;
                (self.lock().io_done(task, result), used)
            }
        }
    }

    /// Stores the current reservation state with the volume. Whoever changed it (a SCSI
    /// PERSISTENT RESERVE OUT or an NVMe reservation command) calls this after the change;
    /// writes are serialised and each stores the state as it is when its turn comes, so a
    /// slower writer can never put back an older state.
    pub async fn persist_reservations(&self) -> Result<(), VolError> {
        let notices = self.lock().take_port_notices();
        if !notices.is_empty() {
            // Nobody listening (no NVMe front end) is fine.
            let _ = self.notices.send(Arc::new(notices));
        }
        let _turn = self.persist.lock().await;
        let bytes = self.lock().pr_state().to_bytes();
        self.volume.volume.save_metadata(PR_METADATA, bytes).await
    }

    /// Carries out one block operation on the volume.
    async fn run(&self, op: BlockOp) -> BlockResult {
        let v = &self.volume.volume;
        let r = match op {
            BlockOp::Read { lba, blocks } => {
                return match v.read(lba, u64::from(blocks)).await {
                    Ok(d) => BlockResult::Data(Bytes::from(d)),
                    Err(e) => block_error(e, false),
                }
            }
            BlockOp::Write { lba, data, fua } => v.write(lba, data, fua).await,
            BlockOp::Flush => v.flush().await,
            BlockOp::Unmap { ranges } => {
                for (lba, blocks) in ranges {
                    if let Err(e) = v.trim(lba, u64::from(blocks)).await {
                        return block_error(e, true);
                    }
                }
                Ok(())
            }
            BlockOp::WriteZeroes { lba, blocks, unmap } => {
                if unmap {
                    v.trim(lba, u64::from(blocks)).await
                } else {
                    v.write_zeroes(lba, u64::from(blocks), false).await
                }
            }
            BlockOp::CompareAndWrite {
                lba,
                compare,
                write,
                ..
            } => {
                match v
                    .compare_and_write(lba, compare.to_vec(), write.to_vec(), false)
                    .await
                {
                    Err(VolError::Miscompare { offset }) => {
                        return BlockResult::Miscompare {
                            offset: offset as u32,
                        }
                    }
                    other => other,
                }
            }
            BlockOp::GetLbaStatus { lba } => {
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
                        Err(e) => return block_error(e, false),
                    }
                }
                return BlockResult::LbaStatus(extents);
            }
            BlockOp::PersistReservations { .. } => self.persist_reservations().await,
        };
        match r {
            Ok(()) => BlockResult::Ok,
            Err(e) => block_error(e, true),
        }
    }
}

/// The one place volume errors become SCSI block results (and so sense data).
fn block_error(e: VolError, write: bool) -> BlockResult {
    match e {
        VolError::NotServing(s) => BlockResult::AccessState(alua_state(s)),
        // Closing for shutdown: the path is about to go away, the host should retry elsewhere.
        VolError::Closed => BlockResult::AccessState(AccessState::Transitioning),
        VolError::OutOfRange { .. } => BlockResult::OutOfRange,
        VolError::Miscompare { offset } => BlockResult::Miscompare {
            offset: offset as u32,
        },
        VolError::Io(_) | VolError::Failed | VolError::LogFull { .. } => {
            tracing::error!(error = %e, write, "volume I/O failed");
            BlockResult::MediumError
        }
        other => {
            tracing::error!(error = %other, "volume request failed");
            BlockResult::Internal
        }
    }
}
