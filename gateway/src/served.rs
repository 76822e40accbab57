//! What the node serves right now: the effective configuration (volumes, exports, access
//! lists), every open volume as a block target and as a SCSI logical unit, and the configured
//! volumes that did not open. The control plane ([`crate::control`]) changes it while the node
//! runs; the operator view, the metrics and the role changes read it. Readers take a snapshot
//! (maps of `Arc`s, cheap to clone) and never hold a lock across an await.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::config::Config;
use crate::lu::Lus;
use crate::target::{Targets, VolumeTarget};
use crate::volumes::{Unavailable, Volumes};

/// The node's served state, shared by the admin API and the control plane.
#[derive(Debug)]
pub struct Served {
    config: RwLock<Config>,
    targets: RwLock<Targets>,
    lus: RwLock<Lus>,
    unavailable: RwLock<Vec<Unavailable>>,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl Served {
    /// The state of a node that has just started serving `cfg`.
    pub fn new(cfg: &Config, targets: &Targets, lus: &Lus) -> Arc<Served> {
        Arc::new(Served {
            config: RwLock::new(cfg.clone()),
            targets: RwLock::new(targets.clone()),
            lus: RwLock::new(lus.clone()),
            unavailable: RwLock::new(Vec::new()),
        })
    }

    /// The effective configuration now.
    pub fn config(&self) -> Config {
        read(&self.config).clone()
    }

    /// Every served volume's target now, by name.
    pub fn targets(&self) -> Targets {
        read(&self.targets).clone()
    }

    /// The target of volume `name`, if it is served.
    pub fn target(&self, name: &str) -> Option<Arc<VolumeTarget>> {
        read(&self.targets).get(name).cloned()
    }

    /// Every served volume's logical unit now, by name.
    pub fn lus(&self) -> Lus {
        read(&self.lus).clone()
    }

    /// Every served volume now, by name (what shutdown closes).
    pub fn volumes(&self) -> Volumes {
        read(&self.targets)
            .iter()
            .map(|(n, t)| (n.clone(), Arc::clone(&t.volume)))
            .collect()
    }

    /// The configured volumes that did not open.
    pub fn unavailable(&self) -> Vec<Unavailable> {
        read(&self.unavailable).clone()
    }

    /// Records the configured volumes that did not open.
    pub fn set_unavailable(&self, list: Vec<Unavailable>) {
        *write(&self.unavailable) = list;
    }

    /// Installs a changed configuration (the control plane, after applying it).
    pub(crate) fn set_config(&self, cfg: Config) {
        *write(&self.config) = cfg;
    }

    /// Adds a newly opened volume's target and logical unit.
    pub(crate) fn insert(
        &self,
        name: &str,
        target: Arc<VolumeTarget>,
        lu: Arc<crate::lu::LuHandle>,
    ) {
        write(&self.targets).insert(name.to_string(), target);
        write(&self.lus).insert(name.to_string(), lu);
    }

    /// Stops serving volume `name`; returns its target.
    pub(crate) fn remove(&self, name: &str) -> Option<Arc<VolumeTarget>> {
        write(&self.lus).remove(name);
        write(&self.unavailable).retain(|u| u.name != name);
        write(&self.targets).remove(name)
    }
}
