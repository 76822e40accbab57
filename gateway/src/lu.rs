//! The SCSI logical unit of each volume, shared by every iSCSI session that reaches it, and
//! the execution of its block operations on the volume.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use proto_iscsi::scsi::{Begun, Completion, LogicalUnit, LuConfig, Nexus, PortGroup};

use crate::config::Config;
use crate::counters::IoCounters;
use crate::metrics::{Protocol, Refusal};
use crate::paths::{PathCell, PathView, Paths};
use crate::target::{Targets, VolumeTarget};
use crate::volumes::ServedVolume;

/// Every served volume's logical unit by volume name: one per volume, shared by the iSCSI
/// targets exporting it. It works on the volume's one reservation state, which the NVMe/TCP
/// namespaces of the volume share through its [`VolumeTarget`].
pub type Lus = BTreeMap<String, Arc<LuHandle>>;

/// Builds the logical unit of every served volume on its paths (`paths`: this node's port
/// group, whose relative target ports are the iSCSI portals, and the peer's); the LUN
/// inventory is that of the first target exporting the volume.
pub fn build_all(cfg: &Config, targets: &Targets, paths: &Paths) -> Lus {
    let mut out = BTreeMap::new();
    for (name, t) in targets {
        let Some(cell) = paths.get(name) else {
            continue;
        };
        let luns = cfg
            .iscsi
            .targets
            .iter()
            .find(|t| t.luns.iter().any(|l| &l.volume == name))
            .map_or(vec![0], |t| t.luns.iter().map(|l| l.id).collect());
        let lu = LuHandle::new(Arc::clone(t), Arc::clone(cell), luns);
        out.insert(name.clone(), lu);
    }
    out
}

/// The port groups REPORT TARGET PORT GROUPS lists: this node's (every portal of the node is
/// in it, since they all share the volume's one role on this node) and, once known, the
/// peer's. Neither is marked preferred: the two nodes are symmetric, the states say which
/// path serves.
fn port_groups(v: &PathView) -> Vec<PortGroup> {
    std::iter::once(&v.local)
        .chain(v.peer.as_ref())
        .map(|g| PortGroup {
            id: g.group,
            state: g.state,
            preferred: false,
            relative_ports: g.relative_ports.clone(),
        })
        .collect()
}

/// One volume's logical unit.
#[derive(Debug)]
pub struct LuHandle {
    /// The volume.
    pub volume: Arc<ServedVolume>,
    /// The volume as a block target (reservations, executor).
    pub target: Arc<VolumeTarget>,
    /// The paths hosts see to the volume on this node (ALUA port groups here, ANA state for
    /// the NVMe front end and the operator's view).
    pub paths: Arc<PathCell>,
    lu: Mutex<LogicalUnit>,
    /// The thin-provisioning soft threshold was reported for the current shortage of space.
    space_low: std::sync::atomic::AtomicBool,
}

impl LuHandle {
    /// Builds the logical unit of a volume on its target's reservation state, and starts
    /// following the volume's paths (`paths`: the port groups and their states).
    pub fn new(target: Arc<VolumeTarget>, paths: Arc<PathCell>, luns: Vec<u16>) -> Arc<LuHandle> {
        let v = &target.volume.volume;
        let mut cfg = LuConfig::new(v.block_size(), v.uuid());
        cfg.write_protected = target.write_protected();
        let mut lu = LogicalUnit::new(cfg, v.capacity_blocks())
            .with_reservations(target.reservations().clone());
        let mut rx = paths.watch();
        lu.set_port_groups(port_groups(&rx.borrow_and_update()));
        lu.set_luns(luns);
        let handle = Arc::new(LuHandle {
            volume: Arc::clone(&target.volume),
            target,
            paths,
            lu: Mutex::new(lu),
            space_low: std::sync::atomic::AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&handle);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let groups = port_groups(&rx.borrow_and_update());
                let Some(h) = weak.upgrade() else { return };
                let mut lu = h.lock();
                if lu.port_groups() != groups.as_slice() {
                    // Every I_T nexus gets ASYMMETRIC ACCESS STATE CHANGED once.
                    lu.set_port_groups(groups);
                    drop(lu);
                    tracing::info!(volume = %h.volume.name, "ALUA port groups changed");
                }
            }
        });
        handle
    }

    /// The unit's state (held only for the duration of one step, never across an await).
    pub fn lock(&self) -> MutexGuard<'_, LogicalUnit> {
        self.lu.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one SCSI command to completion, counting it in `counters` by the block operation
    /// it turned into. Returns the completion and the data-out length its residual is measured
    /// against.
    pub async fn execute(
        &self,
        nexus: &Nexus,
        cdb: &[u8],
        data_out: Bytes,
        expected_out: u32,
        counters: &IoCounters,
    ) -> (Completion, u32) {
        let (begun, used) = {
            let mut lu = self.lock();
            self.follow_capacity(&mut lu);
            lu.start_with_data(nexus, cdb, &data_out, expected_out)
        };
        match begun {
            Begun::Done(c) => {
                counters.other();
                if let Some(why) = refusal(&c) {
                    self.target.metrics().refused(Protocol::Iscsi, why);
                }
                self.target.abort_tasks_of(&c.abort_registrants).await;
                (c, used)
            }
            Begun::Io { op, task } => {
                let (kind, bytes) = op.kind_and_bytes(self.volume.volume.block_size());
                counters.count(kind, bytes);
                let result = self.target.execute(Protocol::Iscsi, op).await;
                let c = {
                    let mut lu = self.lock();
                    self.follow_space(&mut lu);
                    lu.io_done(task, result)
                };
                // PREEMPT AND ABORT completes once the preempted hosts' tasks are aborted.
                self.target.abort_tasks_of(&c.abort_registrants).await;
                (c, used)
            }
        }
    }
}

impl LuHandle {
    /// Follows the volume's capacity (it was resized online): the unit takes the new size
    /// before the command runs, which raises CAPACITY DATA HAS CHANGED (06/2A/09) once on
    /// every I_T nexus. Checked on every command (one atomic load), so the first command after
    /// the resize returned already sees it, whoever resized the volume.
    fn follow_capacity(&self, lu: &mut LogicalUnit) {
        let blocks = self.volume.volume.capacity_blocks();
        if lu.capacity() != blocks {
            tracing::info!(volume = %self.volume.name, old_blocks = lu.capacity(), blocks, "SCSI logical unit resized: unit attention 2A/09 on every nexus");
            lu.set_capacity(blocks);
        }
    }

    /// Raises the thin-provisioning soft threshold unit attention once when the file system
    /// under the volume runs out of space (the log still takes writes; once it is full they fail
    /// with 07/27/07), and re-arms it once space is back.
    fn follow_space(&self, lu: &mut LogicalUnit) {
        use std::sync::atomic::Ordering;
        if self.volume.volume.engine().space_exhausted() {
            if !self.space_low.swap(true, Ordering::AcqRel) {
                lu.soft_threshold_reached();
            }
        } else {
            self.space_low.store(false, Ordering::Release);
        }
    }
}

/// The refusal a completion the logical unit answered by itself is: a RESERVATION CONFLICT, or
/// the ALUA NOT READY answer of a path whose access state does not serve the command (LOGICAL
/// UNIT NOT ACCESSIBLE, 04/0A-0C).
fn refusal(c: &Completion) -> Option<Refusal> {
    use proto_iscsi::scsi::{SenseKey, Status};
    match (c.status, &c.sense) {
        (Status::ReservationConflict, _) => Some(Refusal::ReservationConflict),
        (Status::CheckCondition, Some(s))
            if s.key == SenseKey::NotReady
                && s.asc.0 == 0x04
                && (0x0A..=0x0C).contains(&s.asc.1) =>
        {
            Some(Refusal::AccessState)
        }
        _ => None,
    }
}
