//! The Prometheus text `GET /metrics` serves: the node's live instruments ([`Metrics`])
//! and, read from the operator view at scrape time, the volumes' engine counters, role, epoch
//! and access state, the attached hosts per protocol, and the build.
//!
//! Host series are labelled by host name (initiator IQN or host NQN) and protocol only: no
//! address (a new port per reconnect would be a new series) and no volume (a session's
//! counters cover every volume behind its target, so a volume label would count them once per
//! volume). They sum the host's live sessions or controllers, so they restart from zero when a
//! host reconnects, which Prometheus' `rate()` treats as a counter reset.

use std::collections::BTreeMap;

use block_core::AccessState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::counters::IoSnapshot;
use crate::metrics::Metrics;
use crate::status::{NodeView, VolumesDoc};

/// Labels of a per-volume series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeLabels {
    volume: String,
}

/// Labels of a per-volume, per-protocol series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    volume: String,
    protocol: String,
}

/// Labels of a per-volume state-set series (one series per possible state, 1 for the current).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    volume: String,
    state: String,
}

/// Labels of a per-host series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    protocol: String,
    host: String,
}

/// Labels of `tandem_build_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

/// The git commit the binary was built from (`TANDEM_GIT_COMMIT`, set by build.rs), or
/// "unknown" when built outside a git checkout.
pub const GIT_COMMIT: &str = match option_env!("TANDEM_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

fn counter_family<L>(reg: &mut Registry, name: &str, help: &str) -> Family<L, Counter>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge_family<L>(reg: &mut Registry, name: &str, help: &str) -> Family<L, Gauge>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The ALUA form of an access state (SPC-4 names), as the `state` label.
pub fn alua_name(s: AccessState) -> &'static str {
    match s {
        AccessState::Optimized => "active_optimized",
        AccessState::NonOptimized => "active_non_optimized",
        AccessState::Standby => "standby",
        AccessState::Unavailable => "unavailable",
        AccessState::Transitioning => "transitioning",
    }
}

/// The ANA form of an access state (NVMe names), as the `state` label.
pub fn ana_name(s: AccessState) -> &'static str {
    use proto_nvmeof::AnaState;
    match AnaState::from(s) {
        AnaState::Optimized => "optimized",
        AnaState::NonOptimized => "non_optimized",
        AnaState::Inaccessible => "inaccessible",
        AnaState::PersistentLoss => "persistent_loss",
        AnaState::Change => "change",
    }
}

const ACCESS_STATES: [AccessState; 5] = [
    AccessState::Optimized,
    AccessState::NonOptimized,
    AccessState::Standby,
    AccessState::Unavailable,
    AccessState::Transitioning,
];

const ROLES: [&str; 5] = ["none", "primary", "standby", "rebuilding", "stale"];

/// Encodes the live instruments of `m`, and whatever `add` registers beside them.
pub fn encode(m: &Metrics, add: impl FnOnce(&mut Registry)) -> String {
    let mut reg = Registry::with_prefix("tandem");
    reg.register(
        "command_latency_seconds",
        "Time to execute a block operation on the volume, from the protocol's request to the \
         volume's answer",
        m.latency.clone(),
    );
    reg.register(
        "command_errors",
        "Commands refused or failed, by kind (access_state = ALUA/ANA refusal)",
        m.errors.clone(),
    );
    reg.register(
        "login_failures",
        "Failed iSCSI logins and refused NVMe/TCP connects, by kind",
        m.logins.clone(),
    );
    let build = gauge_family::<BuildLabels>(&mut reg, "build_info", "The running build");
    build
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION").into(),
            commit: GIT_COMMIT.into(),
        })
        .set(1);
    add(&mut reg);
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}

/// Registers the per-volume series of `doc` in `reg`.
fn volumes(reg: &mut Registry, doc: &VolumesDoc) {
    let reads = counter_family(reg, "volume_reads", "Read requests served");
    let writes = counter_family(reg, "volume_writes", "Write requests served");
    let rbytes = counter_family(reg, "volume_read_bytes", "Bytes read by hosts");
    let wbytes = counter_family(reg, "volume_write_bytes", "Bytes written by hosts");
    let flushes = counter_family(reg, "volume_flushes", "Flush requests");
    let runs = counter_family(reg, "volume_flusher_runs", "Flusher runs that copied data");
    let log_used = gauge_family(reg, "volume_log_used_bytes", "Write-ahead log in use");
    let log_size = gauge_family(reg, "volume_log_size_bytes", "Write-ahead log size");
    let dirty = gauge_family(reg, "volume_dirty_blocks", "Blocks only in the log");
    let hosts = gauge_family(reg, "volume_hosts", "Hosts attached, per protocol");
    let epoch = gauge_family(reg, "volume_epoch", "Role epoch of the volume on this node");
    let role = gauge_family::<StateLabels>(
        reg,
        "volume_role",
        "Role of the volume on this node (1 for the current role)",
    );
    let in_sync = gauge_family(
        reg,
        "volume_replication_in_sync",
        "On a primary: 1 when the standby counts for flushes (in sync), 0 when out of sync or \
         degrading. On a standby: 1 when its primary last said it is in sync (promotable \
         without --force)",
    );
    let repl_lsn = gauge_family(
        reg,
        "volume_replication_durable_lsn",
        "The standby's acknowledged durable LSN (on a standby: the LSN applied)",
    );
    let resync_active = gauge_family(
        reg,
        "volume_replication_resync_active",
        "1 while a full resync (rebuild) of the standby runs",
    );
    let resync_total = gauge_family(
        reg,
        "volume_replication_resync_total_bytes",
        "Allocated bytes the running full resync copies (0 on a standby: not known there)",
    );
    let resync_done = gauge_family(
        reg,
        "volume_replication_resync_done_bytes",
        "Bytes the running full resync has copied",
    );
    let resync_rate = gauge_family(
        reg,
        "volume_replication_resync_rate_bytes_per_second",
        "Copy rate of the running full resync over the last seconds",
    );
    let resync_eta = gauge_family(
        reg,
        "volume_replication_resync_eta_seconds",
        "Seconds the running full resync still needs at its rate (-1 when not known)",
    );
    let resyncs = counter_family(
        reg,
        "volume_replication_resyncs_completed",
        "Full resyncs completed since the node started",
    );
    for v in &doc.volumes {
        let l = VolumeLabels {
            volume: v.name.clone(),
        };
        let e = &v.engine;
        reads.get_or_create(&l).inc_by(e.reads);
        writes.get_or_create(&l).inc_by(e.writes);
        rbytes.get_or_create(&l).inc_by(e.read_bytes);
        wbytes.get_or_create(&l).inc_by(e.write_bytes);
        flushes.get_or_create(&l).inc_by(e.flushes);
        runs.get_or_create(&l).inc_by(e.flusher_runs);
        log_used.get_or_create(&l).set(gauge(e.log_used_bytes));
        log_size.get_or_create(&l).set(gauge(e.log_size_bytes));
        dirty.get_or_create(&l).set(gauge(e.dirty_blocks));
        epoch.get_or_create(&l).set(gauge(v.epoch));
        if let Some(r) = &v.replication {
            if let Some(s) = r.sync_state {
                let on = s == crate::replication::state::SyncName::InSync;
                in_sync.get_or_create(&l).set(i64::from(on));
            }
            repl_lsn.get_or_create(&l).set(gauge(r.durable_lsn));
            let rs = r.resync.as_ref();
            resync_active.get_or_create(&l).set(i64::from(rs.is_some()));
            resync_total
                .get_or_create(&l)
                .set(gauge(rs.map_or(0, |s| s.total_bytes)));
            resync_done
                .get_or_create(&l)
                .set(gauge(rs.map_or(0, |s| s.done_bytes)));
            resync_rate
                .get_or_create(&l)
                .set(gauge(rs.map_or(0, |s| s.rate_bytes_per_s)));
            resync_eta
                .get_or_create(&l)
                .set(rs.and_then(|s| s.eta_seconds).map_or(-1, gauge));
            resyncs.get_or_create(&l).inc_by(r.resyncs_completed);
        }
        for r in ROLES {
            let sl = StateLabels {
                volume: v.name.clone(),
                state: r.into(),
            };
            role.get_or_create(&sl).set(i64::from(v.role == r));
        }
        for (protocol, list) in [("iscsi", &v.hosts.iscsi), ("nvme", &v.hosts.nvme)] {
            let pl = ProtocolLabels {
                volume: v.name.clone(),
                protocol: protocol.into(),
            };
            hosts.get_or_create(&pl).set(list.len() as i64);
        }
    }
}

/// Registers the ALUA and ANA state of every volume of `view`.
fn access_states(reg: &mut Registry, view: &NodeView) {
    let alua = gauge_family::<StateLabels>(
        reg,
        "volume_alua_state",
        "ALUA state iSCSI hosts see for the volume on this node (1 for the current state)",
    );
    let ana = gauge_family::<StateLabels>(
        reg,
        "volume_ana_state",
        "ANA state NVMe/TCP hosts see for the volume on this node (1 for the current state)",
    );
    for (name, t) in &view.targets {
        // What hosts are shown (a standby out of sync is unavailable), else the engine's.
        let now = view
            .paths
            .get(name)
            .map_or_else(|| t.access_state(), |p| p.view().local.state);
        for s in ACCESS_STATES {
            let sl = |state: &str| StateLabels {
                volume: name.clone(),
                state: state.into(),
            };
            let cur = i64::from(s == now);
            alua.get_or_create(&sl(alua_name(s))).set(cur);
            // Standby and unavailable are both "inaccessible": one series, set if either is.
            let g = ana.get_or_create(&sl(ana_name(s)));
            if cur == 1 || g.get() == 0 {
                g.set(cur);
            }
        }
    }
}

/// One host's live sessions or controllers together.
#[derive(Default)]
struct HostSum {
    connections: i64,
    io: IoSnapshot,
}

/// Registers the per-host series: every live iSCSI session and NVMe controller once, summed by
/// (protocol, host name).
fn hosts(reg: &mut Registry, view: &NodeView) {
    let mut sums: BTreeMap<(&'static str, String), HostSum> = BTreeMap::new();
    if let Some(i) = &view.iscsi {
        let sessions = i.sessions.lock().unwrap_or_else(|e| e.into_inner());
        for s in sessions.values() {
            let h = sums.entry(("iscsi", s.initiator.clone())).or_default();
            h.connections += 1;
            h.io.add(&s.counters.snapshot());
        }
    }
    if let Some(n) = &view.nvme {
        for c in n.controllers_info() {
            let h = sums.entry(("nvme", c.hostnqn)).or_default();
            h.connections += 1;
            h.io.add(&c.io);
        }
    }
    let conns = gauge_family::<HostLabels>(
        reg,
        "host_connections",
        "iSCSI sessions or NVMe/TCP controllers of a host",
    );
    let cmds = counter_family(
        reg,
        "host_commands",
        "Commands of a host (live connections)",
    );
    let rbytes = counter_family(
        reg,
        "host_read_bytes",
        "Bytes read by a host (live connections)",
    );
    let wbytes = counter_family(
        reg,
        "host_write_bytes",
        "Bytes written by a host (live connections)",
    );
    for ((protocol, host), s) in sums {
        let l = HostLabels {
            protocol: protocol.into(),
            host,
        };
        conns.get_or_create(&l).set(s.connections);
        cmds.get_or_create(&l).inc_by(s.io.commands());
        rbytes.get_or_create(&l).inc_by(s.io.read_bytes);
        wbytes.get_or_create(&l).inc_by(s.io.write_bytes);
    }
}

/// The Prometheus text exposition of the node `view` shows.
pub fn node_text(view: &NodeView) -> String {
    let doc = view.volumes();
    encode(&view.metrics, |reg| {
        volumes(reg, &doc);
        access_states(reg, view);
        hosts(reg, view);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_states_have_both_forms() {
        assert_eq!(alua_name(AccessState::Standby), "standby");
        assert_eq!(ana_name(AccessState::Standby), "inaccessible");
        assert_eq!(ana_name(AccessState::Unavailable), "inaccessible");
        assert_eq!(ana_name(AccessState::Transitioning), "change");
        assert_eq!(alua_name(AccessState::Optimized), "active_optimized");
    }

    #[test]
    fn build_info_names_version_and_commit() {
        let text = encode(&Metrics::new(), |_| {});
        let line = format!(
            "tandem_build_info{{version=\"{}\",commit=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            GIT_COMMIT
        );
        assert!(text.contains(&line), "{text}");
        assert!(!GIT_COMMIT.is_empty());
    }
}
