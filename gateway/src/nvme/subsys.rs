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

use super::config::{derived_serial, NvmeHostConfig, SubsystemConfig};
use super::shared::{Built, DiscoveryPortal, Namespaces, NvmeShared};
use crate::config::Config;
use crate::paths::PathCell;
use crate::target::{Targets, VolumeTarget};

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

/// The subsystem `sc` describes (its namespaces on the open volumes `targets`), with the
/// namespaces' volume targets. Hosts of `[[nvme.host]]` authenticate on every subsystem.
pub(super) fn subsystem(
    sc: &SubsystemConfig,
    hosts: &[NvmeHostConfig],
    targets: &Targets,
) -> Result<(Subsystem, Namespaces), String> {
    let serial = sc.serial.clone().unwrap_or_else(|| derived_serial(&sc.nqn));
    let mut s = Subsystem::new(&sc.nqn, &serial);
    s.allowed_hosts = if sc.any_host && sc.allowed_hosts.is_none() {
        None
    } else {
        Some(sc.allowed_hosts.clone().unwrap_or_default())
    };
    for h in hosts {
        s.dhchap.insert(h.nqn.clone(), Arc::new(h.policy()?));
    }
    // Reservations act on each volume's one SCSI/NVMe reservation state.
    s.reservations = true;
    s.ana_groups.clear();
    let mut namespaces = HashMap::new();
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
            write_protected: t.write_protected(),
        });
        s.ana_groups.push(AnaGroup {
            id: n.nsid,
            state: v.volume.access_state().into(),
            change_count: 1,
        });
        namespaces.insert((sc.nqn.clone(), n.nsid), Arc::clone(t));
    }
    Ok((s, namespaces))
}

/// The discovery log entries of `portals` for the subsystems of `cfg`.
pub(super) fn discovery_entries(cfg: &Config, portals: &[DiscoveryPortal]) -> Vec<DiscoveryEntry> {
    let mut entries = Vec::new();
    for p in portals {
        if p.io {
            for sc in &cfg.nvme.subsystems {
                entries.push(DiscoveryEntry {
                    subtype: SubsystemType::Nvme,
                    subnqn: sc.nqn.clone(),
                    portal: p.portal.clone(),
                });
            }
        } else {
            entries.push(DiscoveryEntry {
                subtype: SubsystemType::CurrentDiscovery,
                subnqn: proto_nvmeof::DISCOVERY_NQN.into(),
                portal: p.portal.clone(),
            });
        }
    }
    entries
}

/// Builds the subsystems, namespaces and discovery log of this node.
pub(super) fn build(
    cfg: &Config,
    targets: &Targets,
    bound: &[SocketAddr],
    discovery_bound: &[SocketAddr],
) -> Result<Built, String> {
    let nc = &cfg.nvme;
    let mut registry = Registry::new(nc.cntlids(cfg.node.path_group));
    let mut namespaces = HashMap::new();
    for sc in &nc.subsystems {
        let (s, ns) = subsystem(sc, &nc.hosts, targets)?;
        namespaces.extend(ns);
        registry.set_subsystem(Arc::new(s));
    }
    let mut portals = Vec::new();
    let mut portid = 0u16;
    for (p, b) in nc.portals.iter().zip(bound) {
        portid += 1;
        let addr = super::config::advertised(p, *b);
        if addr.ip().is_unspecified() {
            tracing::warn!(listen = %b, "NVMe portal on a wildcard address without `advertise`: hosts cannot use the discovery entry");
        }
        portals.push(DiscoveryPortal {
            portal: portal(addr, portid),
            io: true,
        });
    }
    for d in discovery_bound {
        portid += 1;
        let addr = nc
            .discovery_advertise
            .map_or(*d, |ip| SocketAddr::new(ip, d.port()));
        if addr.ip().is_unspecified() {
            tracing::warn!(listen = %d, "NVMe discovery listener on a wildcard address without `discovery_advertise`: hosts cannot use its discovery entry");
        }
        portals.push(DiscoveryPortal {
            portal: portal(addr, portid),
            io: false,
        });
    }
    registry.set_discovery_entries(discovery_entries(cfg, &portals));
    Ok(Built {
        registry,
        namespaces,
        portals,
    })
}

/// Follows volume `target`'s path state on this node (`paths`): on a change, the ANA group of each namespace
/// exporting it (looked up then, so namespaces added later follow too) gets the new state and
/// the new snapshot reaches every queue (raising AENs). Ends at shutdown or when the volume
/// is gone.
pub(super) fn follow_access_state(
    shared: &Arc<NvmeShared>,
    target: &Arc<VolumeTarget>,
    paths: &Arc<PathCell>,
    shutdown: &crate::shutdown::Shutdown,
) -> tokio::task::JoinHandle<()> {
    let mut rx = paths.watch();
    let weak = Arc::downgrade(shared);
    let name = target.volume.name.clone();
    let volume = Arc::downgrade(target);
    let mut stop = shutdown.subscribe();
    tokio::spawn(async move {
        // The subsystems were built from the engine's state; what hosts are shown comes from
        // the paths (a standby out of sync is unavailable), so start from there.
        let mut last: Option<AnaState> = None;
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = stop.changed() => return,
                }
            }
            first = false;
            let state: AnaState = rx.borrow_and_update().local.state.into();
            if last == Some(state) {
                // Only the peer's group changed: nothing ANA shows.
                continue;
            }
            last = Some(state);
            let (Some(shared), Some(volume)) = (weak.upgrade(), volume.upgrade()) else {
                return;
            };
            let nss: Vec<(String, u32)> = shared
                .namespaces()
                .iter()
                .filter(|(_, t)| Arc::ptr_eq(t, &volume))
                .map(|(k, _)| k.clone())
                .collect();
            // A standby's namespaces keep the size they were built or resized with, while
            // its volume follows the primary's grow records: on a path change (a promotion
            // above all) they take the volume's size first, with its own AEN.
            shared.set_volume_blocks(&name, volume.volume.volume.capacity_blocks());
            apply(&shared, &nss, state);
            tracing::info!(volume = %name, ?state, "NVMe ANA state");
        }
    })
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

impl NvmeShared {
    /// The namespaces ((subsystem NQN, NSID) pairs) exporting volume `volume`.
    pub fn namespaces_of_volume(&self, volume: &str) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = self
            .namespaces()
            .iter()
            .filter(|(_, t)| t.volume.name == volume)
            .map(|(k, _)| k.clone())
            .collect();
        out.sort();
        out
    }

    /// Volume `volume` now has `blocks` blocks (resized online): each of its namespaces gets
    /// the new size, and the new snapshots reach every queue of their subsystems, whose
    /// controllers list the namespace in the Changed Namespace List log page and raise the
    /// Namespace Attribute Changed event where the host enabled it.
    pub fn set_volume_blocks(&self, volume: &str, blocks: u64) {
        let nss = self.namespaces_of_volume(volume);
        let mut nqns: Vec<&String> = nss.iter().map(|(n, _)| n).collect();
        nqns.dedup();
        let mut any = false;
        for nqn in nqns {
            self.modify(nqn, |s| {
                let mut changed = false;
                for (_, nsid) in nss.iter().filter(|(n, _)| n == nqn) {
                    changed |= s.set_namespace_blocks(*nsid, blocks);
                }
                any |= changed;
                changed
            });
        }
        if any {
            tracing::info!(volume = %volume, blocks, namespaces = nss.len(), "NVMe namespaces resized");
        }
    }
}
