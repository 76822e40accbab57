//! Applying a changed configuration to the running NVMe/TCP front end: subsystems added or
//! removed, namespaces added or removed, allowed host NQNs and DH-HMAC-CHAP hosts changed.
//!
//! A changed subsystem gets a new snapshot that reaches every queue of its controllers (a
//! namespace added or removed raises the Namespace Attribute Changed event and the Changed
//! Namespace List), so hosts connected to it stay connected; other subsystems are not touched.
//! Host lists and secrets are checked at the next Connect. A removed subsystem's associations
//! end (its hosts can no longer reach it).

use proto_nvmeof::{AnaGroup, Subsystem};
use std::collections::HashMap;

use super::shared::NvmeShared;
use super::subsys;
use crate::config::Config;
use crate::target::Targets;

/// `next` with the ANA groups of namespaces `cur` already has kept as they are (their states
/// and change counts), so a host sees no ANA change for a namespace that did not change.
fn keep_ana(cur: &Subsystem, mut next: Subsystem) -> Subsystem {
    next.ana_change_count = cur.ana_change_count;
    next.ana_groups = next
        .ana_groups
        .iter()
        .map(|g| {
            cur.ana_groups
                .iter()
                .find(|c| c.id == g.id && cur.namespace(g.id).is_some())
                .cloned()
                .unwrap_or(AnaGroup {
                    change_count: cur.ana_change_count.max(1),
                    ..g.clone()
                })
        })
        .collect();
    next
}

/// Installs the subsystems of `cfg` (their namespaces on `targets`) on the running front end.
pub fn apply(shared: &NvmeShared, cfg: &Config, targets: &Targets) -> Result<(), String> {
    let mut namespaces = HashMap::new();
    let mut wanted = Vec::new();
    for sc in &cfg.nvme.subsystems {
        let (s, ns) = subsys::subsystem(sc, &cfg.nvme.hosts, targets)?;
        namespaces.extend(ns);
        wanted.push(s);
    }
    // New namespaces are served before any host learns of them.
    shared.set_namespaces(namespaces);
    let current: Vec<String> = shared.subsystem_nqns();
    for s in wanted {
        let nqn = s.nqn.clone();
        if shared.subsystem(&nqn).is_none() {
            tracing::info!(subsystem = %nqn, "NVMe subsystem added");
            shared.install(s);
            continue;
        }
        shared.modify(&nqn, |cur| {
            let next = keep_ana(cur, s);
            let changed = cur.allowed_hosts != next.allowed_hosts
                || cur.namespaces != next.namespaces
                || cur.dhchap != next.dhchap;
            if changed {
                *cur = next;
            }
            changed
        });
    }
    for nqn in current {
        if !cfg.nvme.subsystems.iter().any(|s| s.nqn == nqn) {
            tracing::info!(subsystem = %nqn, "NVMe subsystem removed: its associations end");
            shared.uninstall(&nqn);
        }
    }
    shared.set_discovery(subsys::discovery_entries(cfg, &shared.portals));
    Ok(())
}
