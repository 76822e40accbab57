//! The operator's view of a node: every volume with its identity, role, engine counters,
//! exports, reservation and the hosts attached now over each protocol. The daemon builds it
//! ([`NodeView::volumes`]) for `GET /v1/volumes`; `tandem status` fetches it ([`fetch`]) and
//! prints it ([`table`]) so an operator sees, for instance, which hosts are still on iSCSI.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::counters::IoSnapshot;
use crate::iscsi::IscsiShared;
use crate::nvme::NvmeShared;
use crate::target::Targets;

/// The document `GET /v1/volumes` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumesDoc {
    /// Every served volume, by name.
    pub volumes: Vec<VolumeStatus>,
    /// Configured volumes that could not open (corrupt, missing files, ...) and are not served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<UnavailableVolume>,
    /// The cluster as etcd shows it, when the node coordinates through etcd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::view::ClusterDoc>,
}

/// A configured volume the node could not open, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnavailableVolume {
    /// Configured name.
    pub name: String,
    /// Why it did not open.
    pub reason: String,
}

/// One volume as the operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeStatus {
    /// Configured name.
    pub name: String,
    /// Volume UUID (the identity both protocols report).
    pub uuid: String,
    /// Capacity in bytes.
    pub size_bytes: u64,
    /// Logical block size.
    pub block_size: u32,
    /// Role on this node (primary, standby, ...).
    pub role: String,
    /// Role epoch.
    pub epoch: u64,
    /// Access state hosts see (optimized, standby, transitioning, unavailable).
    pub access_state: String,
    /// Engine counters.
    pub engine: EngineStats,
    /// Where the volume is exported.
    pub exports: Exports,
    /// The shared SCSI/NVMe reservation state.
    pub reservation: ReservationStatus,
    /// Hosts attached now, per protocol.
    pub hosts: Hosts,
    /// Replication with the peer node, for a replicated volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<crate::replication::state::ReplicationStatus>,
    /// The paths hosts see to the volume: this node's ALUA port group and ANA state, and the
    /// peer's group with its last known state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<PathsStatus>,
    /// For a clone or a read-only snapshot view: the snapshot it is made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_of: Option<CloneOfStatus>,
}

/// The snapshot a clone or a read-only view is made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloneOfStatus {
    /// The origin volume's name (its UUID when it is not served).
    pub volume: String,
    /// The snapshot's id.
    pub snapshot: u64,
    /// A read-only view (exported write protected) rather than a writable clone.
    pub read_only: bool,
}

/// The paths to a volume as hosts see them through this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathsStatus {
    /// This node's ALUA target port group (`[node] path_group`).
    pub path_group: u16,
    /// Its relative target port ids (one per iSCSI portal).
    pub relative_ports: Vec<u16>,
    /// Its ALUA state: active_optimized, standby, unavailable, transitioning.
    pub alua_state: String,
    /// The ANA state of the volume's ANA groups here: optimized, inaccessible, change.
    pub ana_state: String,
    /// The peer node's group, once the replication link told its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerPathStatus>,
}

/// The peer node's port group as this node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerPathStatus {
    /// Its ALUA target port group id.
    pub path_group: u16,
    /// Its relative target port ids.
    pub relative_ports: Vec<u16>,
    /// Its last known ALUA state (what REPORT TARGET PORT GROUPS here says).
    pub alua_state: String,
}

/// The engine counters of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Read requests.
    pub reads: u64,
    /// Write requests.
    pub writes: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Flush requests.
    pub flushes: u64,
    /// Flusher runs that copied something from the log to the extent.
    pub flusher_runs: u64,
    /// Bytes of write-ahead log in use.
    pub log_used_bytes: u64,
    /// Size of the write-ahead log.
    pub log_size_bytes: u64,
    /// Blocks whose newest version is only in the log.
    pub dirty_blocks: u64,
}

/// Where a volume is exported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exports {
    /// `target IQN` and LUN pairs.
    pub iscsi: Vec<IscsiExport>,
    /// Subsystem NQN and NSID pairs.
    pub nvme: Vec<NvmeExport>,
}

/// One iSCSI LUN of the volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IscsiExport {
    /// Target IQN.
    pub target: String,
    /// LUN.
    pub lun: u16,
}

/// One NVMe namespace of the volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmeExport {
    /// Subsystem NQN.
    pub subsystem: String,
    /// Namespace ID.
    pub nsid: u32,
}

/// The volume's persistent reservation, shared by both protocols.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationStatus {
    /// PRGENERATION.
    pub generation: u32,
    /// Reservation type (SPC-4 / NVMe name), if reserved.
    pub kind: Option<String>,
    /// Holder, for types with one.
    pub holder: Option<String>,
    /// Registrants (SCSI initiator ports and NVMe host identities).
    pub registrants: Vec<String>,
}

/// Attached hosts per protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hosts {
    /// iSCSI sessions to a target exporting the volume.
    pub iscsi: Vec<HostStatus>,
    /// NVMe controllers of a subsystem exporting the volume.
    pub nvme: Vec<HostStatus>,
}

/// One attached host: an iSCSI session or an NVMe controller (all its queues).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// Initiator IQN or host NQN.
    pub host: String,
    /// Target IQN or subsystem NQN it is attached through.
    pub via: String,
    /// Peer address.
    pub address: String,
    /// Connected since (seconds since the epoch).
    pub since_unix: u64,
    /// Commands of the session or controller (all its volumes together).
    pub io: IoSnapshot,
    /// iSCSI: the local portal address the session came through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<String>,
    /// iSCSI: the relative target port id of that portal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_port: Option<u16>,
    /// NVMe: the controller id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cntlid: Option<u16>,
}

/// What the daemon needs to describe itself.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// What the node serves now (configuration, volumes as block targets and logical units),
    /// which the control plane changes at run time.
    pub served: Arc<crate::served::Served>,
    /// The iSCSI front end's shared state, when it runs.
    pub iscsi: Option<Arc<IscsiShared>>,
    /// The NVMe/TCP front end's shared state, when it runs.
    pub nvme: Option<Arc<NvmeShared>>,
    /// The node's live metrics (latency, refusals, failed logins).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Whether the node serves hosts yet (or still), for `/readyz`: starting until the daemon
    /// says it is ready.
    pub readiness: crate::health::Readiness,
    /// Replication status of the replicated volumes (empty for a single node).
    pub replication: crate::replication::Statuses,
    /// The replicated volumes' drivers (what the operator's role changes act on).
    pub replicas: crate::replication::Handles,
    /// The control plane (what the admin API's mutating requests act on), when the daemon
    /// runs one.
    pub control: Option<Arc<crate::control::Control>>,
    /// The etcd agent's view of the cluster, when etcd is configured.
    pub cluster: Option<Arc<crate::cluster::view::ClusterCell>>,
}

fn lower_debug(v: impl std::fmt::Debug) -> String {
    format!("{v:?}").to_lowercase()
}

impl NodeView {
    /// Builds the view of a node from its running front ends.
    pub fn new(cfg: &Config, fronts: &crate::frontends::Frontends) -> NodeView {
        NodeView {
            served: crate::served::Served::new(cfg, &fronts.targets, &fronts.lus),
            iscsi: fronts.iscsi.as_ref().map(|i| Arc::clone(&i.shared)),
            nvme: fronts.nvme.as_ref().map(|n| Arc::clone(&n.shared)),
            metrics: Arc::clone(&fronts.metrics),
            readiness: crate::health::Readiness::default(),
            replication: Default::default(),
            replicas: Default::default(),
            control: None,
            cluster: None,
        }
    }

    /// Every served volume's target now (a snapshot).
    pub fn targets(&self) -> Targets {
        self.served.targets()
    }

    /// The paths hosts see to volume `name` on this node (its logical unit's path cell).
    fn paths(&self, name: &str) -> Option<PathsStatus> {
        let v = self.served.lus().get(name)?.paths.view();
        let ana: proto_nvmeof::AnaState = v.local.state.into();
        Some(PathsStatus {
            path_group: v.local.group,
            relative_ports: v.local.relative_ports.clone(),
            alua_state: crate::paths::access_str(v.local.state).into(),
            ana_state: ana_str(ana).into(),
            peer: v.peer.map(|p| PeerPathStatus {
                path_group: p.group,
                relative_ports: p.relative_ports,
                alua_state: crate::paths::access_str(p.state).into(),
            }),
        })
    }

    /// The state of every volume now.
    pub fn volumes(&self) -> VolumesDoc {
        let cfg = self.served.config();
        let targets = self.targets();
        let clone_of = |v: &blockstore::Volume| {
            v.clone_origin().map(|c| CloneOfStatus {
                volume: targets
                    .iter()
                    .find(|(_, t)| t.volume.volume.uuid() == c.origin_uuid)
                    .map_or_else(
                        || uuid::Uuid::from_bytes(c.origin_uuid).to_string(),
                        |(n, _)| n.clone(),
                    ),
                snapshot: c.snapshot_id,
                read_only: c.read_only,
            })
        };
        let volumes = targets
            .iter()
            .map(|(name, lu)| {
                let v = &lu.volume.volume;
                let st = v.stats();
                let (role, access) = v.role_snapshot();
                VolumeStatus {
                    name: name.clone(),
                    uuid: uuid::Uuid::from_bytes(v.uuid()).to_string(),
                    size_bytes: v.capacity_blocks() * u64::from(v.block_size()),
                    block_size: v.block_size(),
                    role: lower_debug(role.role),
                    epoch: role.epoch,
                    access_state: lower_debug(access),
                    engine: EngineStats {
                        reads: st.reads,
                        writes: st.writes,
                        read_bytes: st.read_bytes,
                        write_bytes: st.write_bytes,
                        flushes: st.flushes,
                        flusher_runs: st.flusher_runs,
                        log_used_bytes: st.log_used_bytes,
                        log_size_bytes: st.log_size_bytes,
                        dirty_blocks: st.dirty_blocks,
                    },
                    exports: self.exports(&cfg, name),
                    reservation: reservation(lu.reservations().lock().state()),
                    hosts: self.hosts(name),
                    replication: self.replication.get(name).map(|s| s.get()),
                    paths: self.paths(name),
                    clone_of: clone_of(v),
                }
            })
            .collect();
        let unavailable = self
            .served
            .unavailable()
            .iter()
            .map(|u| UnavailableVolume {
                name: u.name.clone(),
                reason: u.reason.clone(),
            })
            .collect();
        VolumesDoc {
            volumes,
            unavailable,
            cluster: self.cluster.as_ref().map(|c| c.get()),
        }
    }

    fn exports(&self, cfg: &Config, name: &str) -> Exports {
        let mut e = Exports::default();
        if self.iscsi.is_some() {
            for t in &cfg.iscsi.targets {
                for l in t.luns.iter().filter(|l| l.volume == name) {
                    e.iscsi.push(IscsiExport {
                        target: t.iqn.clone(),
                        lun: l.id,
                    });
                }
            }
        }
        if let Some(n) = &self.nvme {
            for s in &cfg.nvme.subsystems {
                if n.volumes_of(&s.nqn).iter().any(|v| v == name) {
                    for ns in s.namespaces.iter().filter(|ns| ns.volume == name) {
                        e.nvme.push(NvmeExport {
                            subsystem: s.nqn.clone(),
                            nsid: ns.nsid,
                        });
                    }
                }
            }
        }
        e
    }

    fn hosts(&self, name: &str) -> Hosts {
        let mut h = Hosts::default();
        if let Some(i) = &self.iscsi {
            let sessions = i.sessions.lock().unwrap_or_else(|e| e.into_inner());
            for s in sessions.values() {
                let exports = i
                    .target(&s.target)
                    .is_some_and(|t| t.luns.values().any(|lu| lu.volume.name == name));
                if exports {
                    h.iscsi.push(HostStatus {
                        host: s.initiator.clone(),
                        via: s.target.clone(),
                        address: s.peer.clone(),
                        since_unix: s.since_unix,
                        io: s.counters.snapshot(),
                        portal: Some(s.portal.clone()),
                        relative_port: Some(s.relative_port),
                        cntlid: None,
                    });
                }
            }
        }
        if let Some(n) = &self.nvme {
            for c in n.controllers_info() {
                if n.volumes_of(&c.subnqn).iter().any(|v| v == name) {
                    h.nvme.push(HostStatus {
                        host: c.hostnqn,
                        via: format!("{} (cntlid {}, {} queues)", c.subnqn, c.cntlid, c.queues),
                        address: c.peer,
                        since_unix: c.since_unix,
                        io: c.io,
                        portal: None,
                        relative_port: None,
                        cntlid: Some(c.cntlid),
                    });
                }
            }
        }
        h
    }
}

/// The name status shows for an ANA state.
fn ana_str(s: proto_nvmeof::AnaState) -> &'static str {
    use proto_nvmeof::AnaState;
    match s {
        AnaState::Optimized => "optimized",
        AnaState::NonOptimized => "non_optimized",
        AnaState::Inaccessible => "inaccessible",
        AnaState::PersistentLoss => "persistent_loss",
        AnaState::Change => "change",
    }
}

fn reservation(st: &block_core::reservation::ReservationState) -> ReservationStatus {
    ReservationStatus {
        generation: st.generation,
        kind: st.reservation.as_ref().map(|r| lower_debug(r.kind)),
        holder: st
            .reservation
            .as_ref()
            .and_then(|r| r.holder.as_ref())
            .map(|p| p.name()),
        registrants: st.registrations.iter().map(|r| r.who.name()).collect(),
    }
}

/// Why `tandem status` could not get the node's state: the admin API client's error.
pub use crate::client::Error as FetchError;

/// GET `path` from the admin API; returns the body of a 200.
pub fn get(addr: SocketAddr, path: &str) -> Result<String, FetchError> {
    crate::client::blocking(addr, crate::client::Call::get(path))
}

/// POST (with an empty body and the bearer `token`) to `path` of the admin API; returns the
/// body of a 2xx. Another status is an error carrying the API's JSON error message.
pub fn post(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<String, FetchError> {
    crate::client::blocking(
        addr,
        crate::client::Call::send(hyper::Method::POST, path, token, None),
    )
}

/// Fetches `GET /v1/volumes`.
pub fn fetch(addr: SocketAddr) -> Result<VolumesDoc, FetchError> {
    parse_doc(addr, &get(addr, "/v1/volumes")?)
}

/// Reads the document of `GET /v1/volumes`.
pub fn parse_doc(addr: SocketAddr, body: &str) -> Result<VolumesDoc, FetchError> {
    serde_json::from_str(body).map_err(|e| FetchError::Protocol {
        addr,
        what: format!("unexpected JSON: {e}"),
    })
}

/// "3m12s" for a duration in seconds.
fn ago(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// One line about a running full resync: phase, bytes copied of the total, rate, ETA, limit.
fn resync_line(r: &crate::replication::state::ResyncStatus) -> String {
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let mut line = format!("rebuild {} from lsn {}", r.phase, r.start_lsn);
    if r.total_bytes > 0 {
        line.push_str(&format!(
            ": {:.1} of {:.1} MiB ({}%)",
            mib(r.done_bytes),
            mib(r.total_bytes),
            r.done_bytes * 100 / r.total_bytes
        ));
    } else {
        line.push_str(&format!(": {:.1} MiB received", mib(r.done_bytes)));
    }
    if r.rate_bytes_per_s > 0 {
        line.push_str(&format!(" at {:.1} MiB/s", mib(r.rate_bytes_per_s)));
    }
    if let Some(eta) = r.eta_seconds {
        line.push_str(&format!(", eta {eta} s"));
    }
    match r.rate_limit_bytes_per_s {
        Some(l) => line.push_str(&format!(" (limit {:.0} MiB/s)", mib(l))),
        None if r.total_bytes > 0 => line.push_str(" (no rate limit)"),
        None => {}
    }
    line
}

/// The human-readable table `tandem status` prints; `now_unix` makes "connected for" exact.
pub fn table(doc: &VolumesDoc, now_unix: u64) -> String {
    let mut out = String::new();
    if let Some(c) = &doc.cluster {
        out.push_str(&crate::cluster::view::table(c));
    }
    for u in &doc.unavailable {
        out.push_str(&format!("volume {}  UNAVAILABLE  {}\n", u.name, u.reason));
    }
    for v in &doc.volumes {
        out.push_str(&format!(
            "volume {}  uuid {}  {} bytes ({}-byte blocks)  role {} epoch {}  {}\n",
            v.name, v.uuid, v.size_bytes, v.block_size, v.role, v.epoch, v.access_state
        ));
        if let Some(p) = &v.paths {
            let peer = p
                .peer
                .as_ref()
                .map_or("peer group unknown".to_string(), |g| {
                    format!("peer group {} {} (last known)", g.path_group, g.alua_state)
                });
            out.push_str(&format!(
                "  paths: group {} {} (ANA {}), {}\n",
                p.path_group, p.alua_state, p.ana_state, peer
            ));
        }
        if let Some(r) = &v.replication {
            let state = r.sync_state.map_or("-", |s| s.as_str());
            // A standby also shows how far it knows the primary got (a forced promotion's
            // loss window).
            let primary_at = match (r.side.as_str(), r.primary_lsn) {
                ("standby", Some(p)) => format!(" primary lsn {p}"),
                _ => String::new(),
            };
            out.push_str(&format!(
                "  replication {} peer {} ({}) state {} durable lsn {}{} mode {}\n",
                r.side,
                r.peer,
                if r.connected {
                    "connected"
                } else {
                    "not connected"
                },
                state,
                r.durable_lsn,
                primary_at,
                r.mode
            ));
            if let Some(rs) = &r.resync {
                out.push_str(&format!("  {}\n", resync_line(rs)));
            }
        }
        if let Some(kind) = &v.reservation.kind {
            out.push_str(&format!(
                "  reservation {kind} held by {}\n",
                v.reservation.holder.as_deref().unwrap_or("all registrants")
            ));
        }
        let rows: Vec<(&str, &HostStatus)> = v
            .hosts
            .iscsi
            .iter()
            .map(|h| ("iscsi", h))
            .chain(v.hosts.nvme.iter().map(|h| ("nvme", h)))
            .collect();
        if rows.is_empty() {
            out.push_str("  no hosts attached\n");
            continue;
        }
        let w = rows
            .iter()
            .map(|(_, h)| h.host.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let a = rows
            .iter()
            .map(|(_, h)| h.address.len())
            .max()
            .unwrap_or(7)
            .max(7);
        let via = |h: &HostStatus| match (&h.portal, h.cntlid) {
            (Some(p), _) => format!("portal {p}"),
            (None, Some(c)) => format!("cntlid {c}"),
            (None, None) => "-".into(),
        };
        let t = rows
            .iter()
            .map(|(_, h)| via(h).len())
            .max()
            .unwrap_or(4)
            .max(4);
        out.push_str(&format!(
            "  {:<8} {:<w$} {:<a$} {:<t$} {:>9} {:>10} {:>10} {:>8}\n",
            "PROTOCOL", "HOST", "ADDRESS", "VIA", "CONNECTED", "READS", "WRITES", "OTHER"
        ));
        for (proto, h) in rows {
            out.push_str(&format!(
                "  {:<8} {:<w$} {:<a$} {:<t$} {:>9} {:>10} {:>10} {:>8}\n",
                proto,
                h.host,
                h.address,
                via(h),
                ago(now_unix.saturating_sub(h.since_unix)),
                h.io.reads,
                h.io.writes,
                h.io.other
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::resync_line;
    use crate::replication::state::ResyncStatus;

    #[test]
    fn the_table_shows_paths_and_how_hosts_attach() {
        let doc: super::VolumesDoc = serde_json::from_value(serde_json::json!({"volumes": [{
            "name": "v", "uuid": "u", "size_bytes": 0, "block_size": 512, "role": "primary",
            "epoch": 3, "access_state": "optimized",
            "engine": {"reads":0,"writes":0,"read_bytes":0,"write_bytes":0,"flushes":0,
                       "flusher_runs":0,"log_used_bytes":0,"log_size_bytes":0,"dirty_blocks":0},
            "exports": {"iscsi": [], "nvme": []},
            "reservation": {"generation": 0, "kind": null, "holder": null, "registrants": []},
            "hosts": {
                "iscsi": [{"host": "iqn.h", "via": "iqn.t", "address": "192.0.2.5:40000",
                           "since_unix": 0, "io": {"reads":0,"writes":0,"read_bytes":0,
                           "write_bytes":0,"other":0}, "portal": "192.0.2.1:3260",
                           "relative_port": 257}],
                "nvme": [{"host": "nqn.h", "via": "nqn.s", "address": "192.0.2.6:40000",
                          "since_unix": 0, "io": {"reads":0,"writes":0,"read_bytes":0,
                          "write_bytes":0,"other":0}, "cntlid": 4097}]
            },
            "paths": {"path_group": 2, "relative_ports": [257], "alua_state": "active_optimized",
                      "ana_state": "optimized",
                      "peer": {"path_group": 1, "relative_ports": [1], "alua_state": "standby"}}
        }]}))
        .unwrap();
        let t = super::table(&doc, 0);
        assert!(t.contains("role primary epoch 3"), "{t}");
        assert!(
            t.contains(
                "  paths: group 2 active_optimized (ANA optimized), peer group 1 standby (last known)"
            ),
            "{t}"
        );
        assert!(t.contains("portal 192.0.2.1:3260"), "{t}");
        assert!(t.contains("cntlid 4097"), "{t}");
    }

    #[test]
    fn a_rebuild_shows_progress_rate_eta_and_limit() {
        let mut r = ResyncStatus {
            phase: "copying".into(),
            start_lsn: 1079,
            total_bytes: 16 << 20,
            done_bytes: 6 << 20,
            rate_bytes_per_s: 32 << 20,
            eta_seconds: Some(1),
            rate_limit_bytes_per_s: Some(32 << 20),
        };
        assert_eq!(
            resync_line(&r),
            "rebuild copying from lsn 1079: 6.0 of 16.0 MiB (37%) at 32.0 MiB/s, eta 1 s (limit 32 MiB/s)"
        );
        // A standby knows only what it received.
        r.total_bytes = 0;
        r.rate_bytes_per_s = 0;
        r.eta_seconds = None;
        r.rate_limit_bytes_per_s = None;
        assert_eq!(
            resync_line(&r),
            "rebuild copying from lsn 1079: 6.0 MiB received"
        );
    }
}
