//! The iSCSI front end's targets built from the configuration, at start and again whenever the
//! control plane changes exports, initiator lists or CHAP: the new set replaces the old one at
//! once. Logged-in sessions go on (a session re-reads its target when the set changed, so a LUN
//! added to its target appears and a removed one answers LOGICAL UNIT NOT SUPPORTED); the
//! initiator list and CHAP are checked at the next login.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use proto_iscsi::chap::{ChapAlgorithm, ChapConfig, ChapUser};
use proto_iscsi::login::{DiscoveredTarget, TargetAuth};

use super::shared::{Exports, IscsiShared, Target};
use crate::config::{self, Config};
use crate::lu::Lus;

/// How initiators authenticate with the CHAP credentials `c`.
fn chap(c: &config::ChapConfig) -> TargetAuth {
    let allowed = ChapAlgorithm::DEFAULT_ALLOWED
        .iter()
        .copied()
        .filter(|a| c.allow_md5 || *a != ChapAlgorithm::Md5)
        .collect();
    TargetAuth::Chap(ChapConfig {
        initiator_users: vec![ChapUser {
            name: c.username.clone(),
            secret: c.secret.clone().into_bytes(),
        }],
        target_user: match (&c.target_username, &c.target_secret) {
            (Some(n), Some(s)) => Some(ChapUser {
                name: n.clone(),
                secret: s.clone().into_bytes(),
            }),
            _ => None,
        },
        allowed,
    })
}

/// The targets and discovery settings `cfg` describes, over the logical units `lus`.
pub(super) fn exports(cfg: &Config, lus: &Lus, portal_addresses: &[String]) -> Exports {
    let ic = &cfg.iscsi;
    let mut targets = HashMap::new();
    for t in &ic.targets {
        let mut luns = BTreeMap::new();
        for l in &t.luns {
            // The configuration names only configured volumes; one missing here did not open
            // and is reported as unavailable.
            let Some(lu) = lus.get(&l.volume) else {
                tracing::warn!(target = %t.iqn, lun = l.id, volume = %l.volume, "LUN left out: its volume is unavailable");
                continue;
            };
            luns.insert(l.id, Arc::clone(lu));
        }
        let auth = t.chap.as_ref().map_or(TargetAuth::None, chap);
        targets.insert(
            t.iqn.clone(),
            Arc::new(Target {
                iqn: t.iqn.clone(),
                auth,
                allowed_initiators: t.allowed_initiators.clone(),
                luns,
            }),
        );
    }
    let send_targets = ic
        .targets
        .iter()
        .map(|t| DiscoveredTarget {
            name: t.iqn.clone(),
            addresses: portal_addresses.to_vec(),
        })
        .collect();
    Exports {
        targets,
        discovery_auth: ic.discovery_chap.as_ref().map_or(TargetAuth::None, chap),
        send_targets,
    }
}

/// The LUN numbers each logical unit reports (REPORT LUNS): those of the first target
/// exporting its volume, or LUN 0 alone when no target does.
fn inventories(cfg: &Config, lus: &Lus) {
    for (name, lu) in lus {
        let luns = cfg
            .iscsi
            .targets
            .iter()
            .find(|t| t.luns.iter().any(|l| &l.volume == name))
            .map_or(vec![0], |t| t.luns.iter().map(|l| l.id).collect());
        lu.lock().set_luns(luns);
    }
}

/// Installs the targets of `cfg` on the running front end. A logical unit that a target no
/// longer exports loses the nexuses of that target's sessions (their RESERVE(6) and unit
/// attentions), as if they had logged out of it; the sessions of a target whose LUNs changed
/// get REPORTED LUNS DATA HAS CHANGED on its remaining LUNs.
pub fn apply(shared: &IscsiShared, cfg: &Config, lus: &Lus) {
    let old = shared.exports();
    let new = exports(cfg, lus, &shared.portal_addresses);
    let sessions: Vec<(u64, String)> = shared
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(id, s)| (*id, s.target.clone()))
        .collect();
    for (iqn, t) in &old.targets {
        let kept = new.targets.get(iqn);
        for lu in t.luns.values() {
            if kept.is_some_and(|k| k.luns.values().any(|l| Arc::ptr_eq(l, lu))) {
                continue;
            }
            let mut unit = lu.lock();
            for (id, _) in sessions.iter().filter(|(_, s)| s == iqn) {
                unit.nexus_lost(*id);
            }
        }
    }
    // Every session of a target whose LUNs changed hears of it (UNIT ATTENTION REPORTED LUNS
    // DATA HAS CHANGED on its next command to a LUN of the target).
    for (iqn, t) in &new.targets {
        let same = old.targets.get(iqn).is_some_and(|o| {
            o.luns.len() == t.luns.len()
                && o.luns
                    .iter()
                    .zip(&t.luns)
                    .all(|((a, x), (b, y))| a == b && Arc::ptr_eq(x, y))
        });
        if same {
            continue;
        }
        for lu in t.luns.values() {
            let mut unit = lu.lock();
            for (id, _) in sessions.iter().filter(|(_, s)| s == iqn) {
                unit.reported_luns_changed(*id);
            }
        }
    }
    shared.set_exports(new);
    inventories(cfg, lus);
}
