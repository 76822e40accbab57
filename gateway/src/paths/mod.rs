//! The paths hosts see to each volume on this node: this node's ALUA target port group and
//! its state, and the peer node's group with the last state learned about it.
//!
//! One [`PathCell`] per volume is the single source both front ends follow: the SCSI logical
//! unit (REPORT TARGET PORT GROUPS, the ALUA check, UNIT ATTENTION 2A/06) and the NVMe ANA
//! group of each namespace (ANA log, change AEN). Its inputs are the engine's access state
//! (followed here), what the replication link learns about the peer ([`PathCell::learn_peer`],
//! [`PathCell::peer_state`]) and a standby's sync record ([`PathCell::set_standby_sync`]); the
//! rules that combine them are [`view`].

pub mod ids;
pub mod view;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use block_core::AccessState;
use blockstore::Engine;
use serde::Serialize;

use crate::config::Config;
use crate::volumes::Volumes;

/// Every served volume's paths, by volume name.
pub type Paths = BTreeMap<String, Arc<PathCell>>;

/// A node's port group as hosts see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupView {
    /// The ALUA target port group id (the node's `[node] path_group`).
    pub group: u16,
    /// Its relative target port ids.
    pub relative_ports: Vec<u16>,
    /// Its access state.
    #[serde(serialize_with = "access_name")]
    pub state: AccessState,
}

/// What hosts are shown now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathView {
    /// This node's group.
    pub local: GroupView,
    /// The peer's group, once its id was learned, with the last state learned about it.
    pub peer: Option<GroupView>,
}

/// The name status shows for an access state.
pub fn access_str(s: AccessState) -> &'static str {
    match s {
        AccessState::Optimized => "active_optimized",
        AccessState::NonOptimized => "active_non_optimized",
        AccessState::Standby => "standby",
        AccessState::Unavailable => "unavailable",
        AccessState::Transitioning => "transitioning",
    }
}

fn access_name<S: serde::Serializer>(s: &AccessState, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(access_str(*s))
}

/// What the cell combines.
#[derive(Debug)]
struct Inputs {
    local: view::Local,
    /// The peer's group id and relative ports, once learned.
    peer_id: Option<(u16, Vec<u16>)>,
    /// The last state learned about the peer's group.
    peer_state: Option<AccessState>,
}

/// One volume's paths on this node.
#[derive(Debug)]
pub struct PathCell {
    group: u16,
    relative_ports: Vec<u16>,
    inputs: Mutex<Inputs>,
    tx: tokio::sync::watch::Sender<PathView>,
}

impl PathCell {
    /// The paths of `engine` on this node (group `group`, ports `relative_ports`), following
    /// its access state from now on (needs a tokio runtime).
    pub fn new(
        engine: &Arc<Engine>,
        group: u16,
        relative_ports: Vec<u16>,
        replicated: bool,
    ) -> Arc<PathCell> {
        let inputs = Inputs {
            local: view::Local {
                engine: engine.access_state(),
                role: engine.role_state().role,
                replicated,
                // Told by replication at its start (the standby's record).
                standby_in_sync: false,
                handover: false,
            },
            peer_id: None,
            peer_state: None,
        };
        let first = derive(group, &relative_ports, &inputs);
        let cell = Arc::new(PathCell {
            group,
            relative_ports,
            inputs: Mutex::new(inputs),
            tx: tokio::sync::watch::channel(first).0,
        });
        let mut rx = engine.watch_access();
        // Weak on both: the follower must not keep a closed volume (or a deleted clone, which
        // holds its origin's snapshot) alive; it ends when the engine's sender goes.
        let (weak, engine) = (Arc::downgrade(&cell), Arc::downgrade(engine));
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let state = *rx.borrow_and_update();
                let (Some(cell), Some(engine)) = (weak.upgrade(), engine.upgrade()) else {
                    return;
                };
                let role = engine.role_state().role;
                cell.change(|i| {
                    i.local.engine = state;
                    i.local.role = role;
                });
            }
        });
        cell
    }

    /// This node's path group.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// What hosts are shown now.
    pub fn view(&self) -> PathView {
        self.tx.borrow().clone()
    }

    /// Follows what hosts are shown.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<PathView> {
        self.tx.subscribe()
    }

    /// The replication link learned the peer's group id and relative ports.
    pub fn learn_peer(&self, group: u16, relative_ports: Vec<u16>) {
        if group == self.group {
            tracing::warn!(
                group,
                "the peer node uses this node's path group: give the two nodes different `[node] path_group` values"
            );
            return;
        }
        self.change(|i| i.peer_id = Some((group, relative_ports)));
    }

    /// The state the peer's group has now, as far as this node learned (from the peer
    /// itself, from how this primary counts its standby, or from a switchover under way).
    pub fn peer_state(&self, state: AccessState) {
        self.change(|i| i.peer_state = Some(state));
    }

    /// A standby's primary told it whether it counts it in sync (or the record was reset).
    pub fn set_standby_sync(&self, in_sync: bool) {
        self.change(|i| i.local.standby_in_sync = in_sync);
    }

    /// Marks a planned switchover to the peer as under way until the guard is dropped: both
    /// groups show transitioning meanwhile.
    pub fn handing_over(self: &Arc<Self>) -> HandoverGuard {
        self.change(|i| i.local.handover = true);
        HandoverGuard(Arc::clone(self))
    }

    fn change(&self, f: impl FnOnce(&mut Inputs)) {
        let mut i = self.inputs.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut i);
        let v = derive(self.group, &self.relative_ports, &i);
        self.tx.send_if_modified(|old| {
            if *old == v {
                return false;
            }
            tracing::info!(group = v.local.group, state = access_str(v.local.state),
                peer_group = ?v.peer.as_ref().map(|p| p.group),
                peer_state = ?v.peer.as_ref().map(|p| access_str(p.state)), "path states changed");
            *old = v;
            true
        });
    }
}

/// Ends a handover's transitioning state when dropped, however the switchover ended.
#[derive(Debug)]
pub struct HandoverGuard(Arc<PathCell>);

impl Drop for HandoverGuard {
    fn drop(&mut self) {
        self.0.change(|i| i.local.handover = false);
    }
}

fn derive(group: u16, ports: &[u16], i: &Inputs) -> PathView {
    PathView {
        local: GroupView {
            group,
            relative_ports: ports.to_vec(),
            state: view::local_state(i.local),
        },
        peer: match (&i.peer_id, i.peer_state) {
            (Some((g, p)), Some(state)) => Some(GroupView {
                group: *g,
                relative_ports: p.clone(),
                state: view::peer_state(i.local, state),
            }),
            _ => None,
        },
    }
}

/// Builds the paths of every served volume from the configuration (needs a tokio runtime).
pub fn build_all(cfg: &Config, vols: &Volumes) -> Paths {
    let group = cfg.node.path_group;
    let ports = ids::relative_ports(group, cfg.iscsi.portals.len());
    vols.iter()
        .map(|(name, v)| {
            let replicated = cfg
                .volumes
                .iter()
                .any(|c| &c.name == name && c.peer.is_some());
            let cell = PathCell::new(v.volume.engine(), group, ports.clone(), replicated);
            (name.clone(), cell)
        })
        .collect()
}
