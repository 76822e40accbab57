//! Subsystem snapshots built from the configuration and the open volumes, the discovery
//! entries of this node's portals, and following each volume's path state into ANA.
//!
//! Each namespace is its own ANA group (group id = NSID): every volume has its own role on
//! this node, so its paths change state independently of the others. The group id is the same
//! on both nodes of a replicated volume; each node's controllers report its own state for it
//! (this node's group of `crate::paths`, the one the SCSI logical unit shows as its own).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use proto_nvmeof::discovery::SubsystemType;
use proto_nvmeof::{
    AddressFamily, AnaGroup, AnaState, DiscoveryEntry, Namespace, Portal, Registry, Subsystem,
};

use super::config::derived_serial;
use super::shared::NvmeShared;
use crate::config::Config;
use crate::paths::Paths;
use crate::target::{Targets, VolumeTarget};

/// The registry and namespace map of a freshly configured node.
pub(super) struct Built {
    pub registry: Registry,
    pub namespaces: HashMap<(String, u32), Arc<VolumeTarget>>,
}

fn portal(advertised: SocketAddr, portid: u16) -> Portal {
    Portal {
        adrfam: if advertised.is_ipv4() {
            AddressFamily::Ipv4
        } else {
            AddressFamily::Ipv6
        },
        traddr: advertised.ip().to_string(),
        trsvcid: advertised.port().to_string(),
        portid,
    }
}

/// Builds the subsystems, namespaces and discovery log of this node.
pub(super) fn build(
    cfg: &Config,
    targets: &Targets,
    paths: &Paths,
    bound: &[SocketAddr],
    discovery_bound: &[SocketAddr],
) -> Result<Built, String> {
    let nc = &cfg.nvme;
    let mut registry = Registry::new(nc.cntlids(cfg.node.path_group));
    let mut namespaces = HashMap::new();
    for sc in &nc.subsystems {
        let serial = sc.serial.clone().unwrap_or_else(|| derived_serial(&sc.nqn));
        let mut s = Subsystem::new(&sc.nqn, &serial);
        s.allowed_hosts = if sc.any_host && sc.allowed_hosts.is_none() {
            None
        } else {
            Some(sc.allowed_hosts.clone().unwrap_or_default())
        };
        // Hosts with a DH-HMAC-CHAP secret authenticate on every subsystem.
        for h in &nc.hosts {
            s.dhchap.insert(h.nqn.clone(), Arc::new(h.policy()?));
        }
        // Reservations act on each volume's one SCSI/NVMe reservation state.
        s.reservations = true;
        s.ana_groups.clear();
        for n in &sc.namespaces {
            // The configuration names only configured volumes (checked at load); one missing
            // here did not open and is reported as unavailable, or is the default subsystem's
            // default volume that the configuration does not have.
            let Some(t) = targets.get(&n.volume) else {
                tracing::warn!(subsystem = %sc.nqn, nsid = n.nsid, volume = %n.volume, "namespace left out: no such volume is open");
                continue;
            };
            let v = &t.volume;
            s.namespaces.push(Namespace {
                nsid: n.nsid,
                volume_uuid: v.volume.uuid(),
                block_size: v.volume.block_size(),
                blocks: v.volume.capacity_blocks(),
                ana_group: n.nsid,
            });
            let state = paths
                .get(&n.volume)
                .map_or(v.volume.access_state(), |p| p.view().local.state);
            s.ana_groups.push(AnaGroup {
                id: n.nsid,
                state: state.into(),
                change_count: 1,
            });
            namespaces.insert((sc.nqn.clone(), n.nsid), Arc::clone(t));
        }
        registry.set_subsystem(Arc::new(s));
    }
    let mut entries = Vec::new();
    let mut portid = 0u16;
    for (p, b) in nc.portals.iter().zip(bound) {
        portid += 1;
        let addr = super::config::advertised(p, *b);
        if addr.ip().is_unspecified() {
            tracing::warn!(listen = %b, "NVMe portal on a wildcard address without `advertise`: hosts cannot use the discovery entry");
        }
        for sc in &nc.subsystems {
            entries.push(DiscoveryEntry {
                subtype: SubsystemType::Nvme,
                subnqn: sc.nqn.clone(),
                portal: portal(addr, portid),
            });
        }
    }
    for d in discovery_bound {
        portid += 1;
        let addr = nc
            .discovery_advertise
            .map_or(*d, |ip| SocketAddr::new(ip, d.port()));
        if addr.ip().is_unspecified() {
            tracing::warn!(listen = %d, "NVMe discovery listener on a wildcard address without `discovery_advertise`: hosts cannot use its discovery entry");
        }
        entries.push(DiscoveryEntry {
            subtype: SubsystemType::CurrentDiscovery,
            subnqn: proto_nvmeof::DISCOVERY_NQN.into(),
            portal: portal(addr, portid),
        });
    }
    registry.set_discovery_entries(entries);
    Ok(Built {
        registry,
        namespaces,
    })
}

/// Follows every exported volume's path state on this node: on a change, the ANA group of
/// each of its namespaces gets the new state and the new snapshot reaches every queue (raising
/// AENs).
pub(super) fn follow_access_states(
    shared: &Arc<NvmeShared>,
    paths: &Paths,
    shutdown: &crate::shutdown::Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut by_volume: HashMap<String, Vec<(String, u32)>> = HashMap::new();
    for ((nqn, nsid), lu) in &shared.namespaces {
        by_volume
            .entry(lu.volume.name.clone())
            .or_default()
            .push((nqn.clone(), *nsid));
    }
    let mut tasks = Vec::new();
    for (name, nss) in by_volume {
        let Some(p) = paths.get(&name) else { continue };
        let mut rx = p.watch();
        let weak = Arc::downgrade(shared);
        let mut stop = shutdown.subscribe();
        tasks.push(tokio::spawn(async move {
            let mut last: Option<AnaState> = None;
            loop {
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = stop.changed() => return,
                }
                let state: AnaState = rx.borrow_and_update().local.state.into();
                if last == Some(state) {
                    // Only the peer's group changed: nothing ANA shows.
                    continue;
                }
                last = Some(state);
                let Some(shared) = weak.upgrade() else { return };
                apply(&shared, &nss, state);
                tracing::info!(volume = %name, ?state, "NVMe ANA state changed");
            }
        }));
    }
    tasks
}

/// Sets the ANA state of namespaces `nss` ((NQN, NSID) pairs) and publishes the snapshots.
pub(super) fn apply(shared: &NvmeShared, nss: &[(String, u32)], state: AnaState) {
    let mut nqns: Vec<&String> = nss.iter().map(|(n, _)| n).collect();
    nqns.sort();
    nqns.dedup();
    for nqn in nqns {
        shared.modify(nqn, |s| {
            let mut changed = false;
            for (_, nsid) in nss.iter().filter(|(n, _)| n == nqn) {
                changed |= s.set_ana_state(*nsid, state);
            }
            changed
        });
    }
}
