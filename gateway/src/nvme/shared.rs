//! State shared by all NVMe/TCP connections of this node: the [`Registry`] of subsystems and
//! controllers, the logical unit behind each namespace, and the live connections, through
//! which work spanning several connections (association teardown, subsystem snapshot updates,
//! reservation notices) reaches them all.
//!
//! It is its own module so that the connection tasks and followers ([`super::conn`],
//! [`super::subsys`], [`super::notices`]) use it without importing the front end module that
//! starts them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use proto_nvmeof::{Registry, Subsystem, TargetConfig};
use tokio::sync::mpsc;

use crate::counters::{IoCounters, IoSnapshot};
use crate::target::VolumeTarget;

/// The registry and namespace map of a freshly configured node.
pub(super) struct Built {
    pub registry: Registry,
    pub namespaces: Namespaces,
    pub portals: Vec<DiscoveryPortal>,
}

/// The volume target behind each (subsystem NQN, NSID).
pub(super) type Namespaces = HashMap<(String, u32), Arc<VolumeTarget>>;

/// One portal of this node as discovery log entries give it: the I/O portals carry an entry
/// for every subsystem, the discovery listeners one for discovery itself.
#[derive(Debug, Clone)]
pub(super) struct DiscoveryPortal {
    pub(super) portal: proto_nvmeof::Portal,
    pub(super) io: bool,
}

/// A message to one connection task from elsewhere in the node.
#[derive(Debug)]
pub(super) enum Control {
    /// A new snapshot of the subsystem the connection serves.
    Subsystem(Arc<Subsystem>),
    /// The association ended (keep-alive expiry or admin queue lost): close now.
    Close,
    /// Another host changed this host's reservation state on namespace `nsid` (admin queues).
    ReservationNotice {
        /// What happened.
        kind: proto_nvmeof::resv_notice::NoticeKind,
        /// The namespace.
        nsid: u32,
    },
    /// Another host preempted this one with Preempt and Abort: abort the commands on these
    /// namespaces, then confirm.
    Abort {
        /// The namespaces (of this queue's subsystem) exporting the volume.
        nsids: Vec<u32>,
        /// Answered once the commands are aborted.
        done: tokio::sync::oneshot::Sender<()>,
    },
}

/// What the node knows about one live connection.
#[derive(Debug)]
pub(super) struct ConnEntry {
    pub(super) cntlid: Option<u16>,
    pub(super) qid: u16,
    pub(super) subnqn: Option<String>,
    pub(super) hostnqn: Option<String>,
    /// The host's reservation identity (its NQN and Host Identifier).
    pub(super) who: Option<block_core::Registrant>,
    pub(super) peer: SocketAddr,
    pub(super) since_unix: u64,
    pub(super) counters: Arc<IoCounters>,
    pub(super) tx: mpsc::UnboundedSender<Control>,
}

/// One NVMe controller (association) as the operator sees it: every queue of it together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerInfo {
    /// Controller ID.
    pub cntlid: u16,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Host NQN.
    pub hostnqn: String,
    /// Peer address of the admin queue (of the first queue seen when the admin queue is gone).
    pub peer: String,
    /// When the admin queue connected (seconds since the epoch).
    pub since_unix: u64,
    /// Live queues, admin queue included.
    pub queues: usize,
    /// I/O counters summed over the queues.
    pub io: IoSnapshot,
}

/// State shared by all NVMe/TCP connections of this node.
#[derive(Debug)]
pub struct NvmeShared {
    /// Subsystems, discovery information and controllers (CNTLID allocation).
    pub(super) registry: Mutex<Registry>,
    /// Node-wide protocol limits.
    pub target: Arc<TargetConfig>,
    /// The logical unit (volume and reservation state) behind each (subsystem NQN, NSID),
    /// replaced as a whole when the control plane changes namespaces.
    namespaces: RwLock<Arc<Namespaces>>,
    /// This node's portals as the discovery log gives them.
    pub(super) portals: Vec<DiscoveryPortal>,
    pub(super) conns: Mutex<HashMap<u64, ConnEntry>>,
    pub(super) next_conn: AtomicU64,
    /// The node's metrics (refused connects are counted here).
    pub(super) metrics: Arc<crate::metrics::Metrics>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl NvmeShared {
    /// Shared state over a built registry and namespace map, with no connection yet.
    pub(super) fn new(
        built: Built,
        target: Arc<TargetConfig>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> NvmeShared {
        NvmeShared {
            registry: Mutex::new(built.registry),
            target,
            namespaces: RwLock::new(Arc::new(built.namespaces)),
            portals: built.portals,
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            metrics,
        }
    }

    /// Every namespace's volume target now.
    pub(super) fn namespaces(&self) -> Arc<Namespaces> {
        Arc::clone(&self.namespaces.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Installs a changed namespace map.
    pub(super) fn set_namespaces(&self, map: Namespaces) {
        *self.namespaces.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
    }

    /// The volume target exporting namespace `nsid` of `subnqn`.
    pub(super) fn volume(&self, subnqn: &str, nsid: u32) -> Option<Arc<VolumeTarget>> {
        self.namespaces().get(&(subnqn.to_string(), nsid)).cloned()
    }

    /// Names of the volumes subsystem `nqn` exports.
    pub fn volumes_of(&self, nqn: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .namespaces()
            .iter()
            .filter(|((n, _), _)| n == nqn)
            .map(|(_, lu)| lu.volume.name.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The live controllers of I/O subsystems (discovery controllers left out), by CNTLID.
    pub fn controllers_info(&self) -> Vec<ControllerInfo> {
        let conns = lock(&self.conns);
        let mut by_cntlid: std::collections::BTreeMap<u16, ControllerInfo> = Default::default();
        for e in conns.values() {
            let (Some(cntlid), Some(subnqn), Some(hostnqn)) = (e.cntlid, &e.subnqn, &e.hostnqn)
            else {
                continue;
            };
            if subnqn == proto_nvmeof::DISCOVERY_NQN {
                continue;
            }
            let c = by_cntlid.entry(cntlid).or_insert_with(|| ControllerInfo {
                cntlid,
                subnqn: subnqn.clone(),
                hostnqn: hostnqn.clone(),
                peer: e.peer.to_string(),
                since_unix: e.since_unix,
                queues: 0,
                io: IoSnapshot::default(),
            });
            c.queues += 1;
            c.io.add(&e.counters.snapshot());
            if e.qid == 0 {
                c.peer = e.peer.to_string();
                c.since_unix = e.since_unix;
            }
        }
        by_cntlid.into_values().collect()
    }

    /// The current snapshot of subsystem `nqn` (for the operator view and tests).
    pub fn subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        lock(&self.registry).subsystem(nqn)
    }

    /// Number of live controllers (associations) of subsystem `nqn`.
    pub fn controllers(&self, nqn: &str) -> usize {
        lock(&self.registry).controllers_of(nqn).count()
    }

    /// Records a new connection; returns its id and the counters its commands bump.
    pub(super) fn register_conn(
        &self,
        tx: mpsc::UnboundedSender<Control>,
        peer: SocketAddr,
    ) -> (u64, Arc<IoCounters>) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let counters = Arc::new(IoCounters::default());
        lock(&self.conns).insert(
            id,
            ConnEntry {
                cntlid: None,
                qid: 0,
                subnqn: None,
                hostnqn: None,
                who: None,
                peer,
                since_unix: crate::time::unix_now(),
                counters: Arc::clone(&counters),
                tx,
            },
        );
        (id, counters)
    }

    /// Admits a Connect and records which controller/queue/subsystem the connection now is,
    /// under the registry lock so no snapshot update can slip between the two.
    pub(super) fn admit(
        &self,
        conn_id: u64,
        req: &proto_nvmeof::ConnectRequest,
    ) -> proto_nvmeof::Admission {
        let mut reg = lock(&self.registry);
        let a = reg.admit(req);
        let (cntlid, subnqn) = match &a {
            proto_nvmeof::Admission::Admin { cntlid, .. } => (*cntlid, req.connect.subnqn.clone()),
            proto_nvmeof::Admission::Io { cntlid, .. } => (*cntlid, req.connect.subnqn.clone()),
            proto_nvmeof::Admission::Refused { .. } => return a,
        };
        if let Some(e) = lock(&self.conns).get_mut(&conn_id) {
            e.cntlid = Some(cntlid);
            e.qid = req.connect.qid;
            e.subnqn = Some(subnqn);
            e.hostnqn = Some(req.connect.hostnqn.clone());
            e.who = Some(proto_nvmeof::reservation::registrant(
                &req.connect.hostnqn,
                req.connect.host_id,
            ));
            e.since_unix = crate::time::unix_now();
        }
        a
    }

    /// Forgets a closed connection. An admin queue takes its whole association with it.
    pub(super) fn unregister_conn(&self, conn_id: u64) {
        let entry = lock(&self.conns).remove(&conn_id);
        let Some(ConnEntry {
            cntlid: Some(cntlid),
            qid,
            ..
        }) = entry
        else {
            return;
        };
        if qid == 0 {
            self.end_association(cntlid);
        } else {
            lock(&self.registry).release_queue(cntlid, qid);
        }
    }

    /// Ends association `cntlid`: releases the CNTLID and closes every queue of it.
    pub(super) fn end_association(&self, cntlid: u16) {
        let mut reg = lock(&self.registry);
        if reg.release(cntlid).is_some() {
            tracing::info!(cntlid, "NVMe association ended");
        }
        for e in lock(&self.conns).values() {
            if e.cntlid == Some(cntlid) {
                let _ = e.tx.send(Control::Close);
            }
        }
    }

    /// Registers this front end as the abort sink of volume `target` (every served one,
    /// exported or not yet: the sink finds the namespaces when a preemption happens).
    pub(super) fn add_abort_sink(self: &Arc<Self>, target: &VolumeTarget) {
        let weak: std::sync::Weak<NvmeShared> = Arc::downgrade(self);
        let sink: std::sync::Weak<dyn crate::aborts::AbortSink> = weak;
        target.add_abort_sink(sink);
    }

    /// The NQNs of the subsystems this node exports now.
    pub(super) fn subsystem_nqns(&self) -> Vec<String> {
        lock(&self.registry)
            .subsystem_nqns()
            .map(str::to_string)
            .collect()
    }

    /// Adds a subsystem (no host is connected to it yet).
    pub(super) fn install(&self, s: Subsystem) {
        lock(&self.registry).set_subsystem(Arc::new(s));
    }

    /// Removes subsystem `nqn` and ends the associations of its controllers.
    pub(super) fn uninstall(&self, nqn: &str) {
        let cntlids: Vec<u16> = {
            let mut reg = lock(&self.registry);
            reg.remove_subsystem(nqn);
            reg.controllers_of(nqn).collect()
        };
        for c in cntlids {
            self.end_association(c);
        }
    }

    /// Replaces the discovery log entries (subsystems added or removed).
    pub(super) fn set_discovery(&self, entries: Vec<proto_nvmeof::DiscoveryEntry>) {
        lock(&self.registry).set_discovery_entries(entries);
    }

    /// Changes subsystem `nqn` with `f` (which says whether it changed anything); installs
    /// the new snapshot and pushes it to every queue serving the subsystem. All under the
    /// registry lock, so concurrent changes never lose one another.
    pub(super) fn modify(&self, nqn: &str, f: impl FnOnce(&mut Subsystem) -> bool) {
        let mut reg = lock(&self.registry);
        let Some(cur) = reg.subsystem(nqn) else {
            return;
        };
        let mut next = (*cur).clone();
        if !f(&mut next) {
            return;
        }
        let snapshot = Arc::new(next);
        reg.set_subsystem(Arc::clone(&snapshot));
        for e in lock(&self.conns).values() {
            if e.subnqn.as_deref() == Some(nqn) {
                let _ = e.tx.send(Control::Subsystem(Arc::clone(&snapshot)));
            }
        }
    }
}

impl crate::aborts::AbortSink for NvmeShared {
    /// Every I/O queue of a preempted host reaching `volume` aborts its commands on the
    /// namespaces exporting it.
    fn abort(
        &self,
        volume: &str,
        victims: &[block_core::Registrant],
    ) -> Vec<tokio::sync::oneshot::Receiver<()>> {
        let namespaces = self.namespaces();
        let conns = lock(&self.conns);
        let mut waits = Vec::new();
        for e in conns.values() {
            let (Some(who), Some(subnqn)) = (&e.who, &e.subnqn) else {
                continue;
            };
            if e.qid == 0 || !victims.contains(who) {
                continue;
            }
            let nsids: Vec<u32> = namespaces
                .iter()
                .filter(|((n, _), t)| n == subnqn && t.volume.name == volume)
                .map(|((_, nsid), _)| *nsid)
                .collect();
            if nsids.is_empty() {
                continue;
            }
            let (done, rx) = tokio::sync::oneshot::channel();
            if e.tx.send(Control::Abort { nsids, done }).is_ok() {
                waits.push(rx);
            }
        }
        waits
    }
}
