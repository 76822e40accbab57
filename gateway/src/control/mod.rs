//! The live control plane: volumes created and deleted, exports added and removed, host access
//! lists and CHAP credentials changed on the running daemon, without a restart and without
//! touching the sessions of hosts the change does not concern.
//!
//! Every change is one transaction ([`Control::change`]), one at a time: the request edits a
//! copy of the effective configuration ([`edit`]); the copy is validated like a configuration
//! file; new volumes are created and opened; the managed sections are saved atomically
//! ([`state`]); then the front ends get the new targets and subsystems
//! ([`crate::iscsi::reconfigure`], [`crate::nvme::reconfigure`]), and deleted volumes are
//! closed and their files removed. A refusal at any step before the save changes nothing.
//! [`api`] is its HTTP face (docs/api.md).

pub mod api;
pub mod edit;
mod error;
pub mod snapshots;
pub mod state;

use std::sync::Arc;

use crate::config::Config;
use crate::served::Served;
pub use error::ApiError;

/// The daemon's control plane.
#[derive(Debug)]
pub struct Control {
    served: Arc<Served>,
    iscsi: Option<Arc<crate::iscsi::IscsiShared>>,
    nvme: Option<Arc<crate::nvme::NvmeShared>>,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: crate::shutdown::Shutdown,
    /// One change at a time.
    lock: tokio::sync::Mutex<()>,
    /// The admin API's bearer token.
    token: String,
}

/// The snapshot a new volume is a clone of.
pub struct CloneOf {
    /// The volume the snapshot is of.
    pub origin: Arc<crate::target::VolumeTarget>,
    /// The snapshot's id.
    pub snapshot: u64,
    /// A read-only view (exported write protected) rather than a writable clone.
    pub read_only: bool,
}

/// A volume opened for a change not yet applied.
struct Opened {
    target: Arc<crate::target::VolumeTarget>,
    lu: Arc<crate::lu::LuHandle>,
    dir: std::path::PathBuf,
}

impl Control {
    /// The control plane of a node serving `served` through these front ends; mutating
    /// requests must carry `token`.
    pub fn new(
        served: Arc<Served>,
        fronts: &crate::frontends::Frontends,
        shutdown: crate::shutdown::Shutdown,
        token: String,
    ) -> Control {
        Control {
            served,
            iscsi: fronts.iscsi.as_ref().map(|i| Arc::clone(&i.shared)),
            nvme: fronts.nvme.as_ref().map(|n| Arc::clone(&n.shared)),
            metrics: Arc::clone(&fronts.metrics),
            shutdown,
            lock: tokio::sync::Mutex::new(()),
            token,
        }
    }

    /// The bearer token mutating requests must carry.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The effective configuration now.
    pub fn config(&self) -> Config {
        self.served.config()
    }

    /// Refuses a change of a protocol whose front end does not run on this node.
    pub fn require(&self, p: edit::Protocol) -> Result<(), ApiError> {
        match p {
            edit::Protocol::Iscsi if self.iscsi.is_none() => Err(ApiError::conflict(
                "the iSCSI front end does not run on this node ([iscsi] enabled = false): enable it and restart",
            )),
            edit::Protocol::Nvme if self.nvme.is_none() => Err(ApiError::conflict(
                "the NVMe/TCP front end does not run on this node (disabled, or it exported nothing at start): \
                 the change is refused; enable [nvme] and restart, or export a volume over NVMe/TCP in the configuration",
            )),
            _ => Ok(()),
        }
    }

    /// Runs one change: `edit` on a copy of the configuration, then validation, new volumes
    /// opened, the state saved, the front ends updated and deleted volumes removed.
    pub async fn change<R>(
        &self,
        edit: impl FnOnce(&mut Config) -> Result<R, ApiError>,
    ) -> Result<R, ApiError> {
        self.change_cloning(edit, None).await
    }

    /// [`Control::change`] whose new volume is a clone of a snapshot (writable, or a read-only
    /// view), created on disk before it is opened.
    pub async fn change_cloning<R>(
        &self,
        edit: impl FnOnce(&mut Config) -> Result<R, ApiError>,
        clone: Option<CloneOf>,
    ) -> Result<R, ApiError> {
        let _one = self.lock.lock().await;
        let old = self.served.config();
        let mut new = old.clone();
        let reply = edit(&mut new)?;
        new.validate()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let added: Vec<_> = new
            .volumes
            .iter()
            .filter(|v| !old.volumes.iter().any(|o| o.name == v.name))
            .cloned()
            .collect();
        let removed: Vec<_> = old
            .volumes
            .iter()
            .filter(|v| !new.volumes.iter().any(|n| n.name == v.name))
            .cloned()
            .collect();
        let mut opened: Vec<(String, Opened)> = Vec::new();
        if let (Some(c), Some(v)) = (&clone, added.first()) {
            let dir = new.volume_dir(v);
            let opts = if c.read_only {
                blockstore::CloneOptions::read_only_view()
            } else {
                blockstore::CloneOptions::writable(v.wal_size.0)
            };
            if let Err(e) = c
                .origin
                .volume
                .volume
                .create_clone(c.snapshot, &dir, opts)
                .await
            {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(ApiError::from_volume(e));
            }
        }
        let served_now = self.served.volumes();
        for v in &added {
            match self.open(&new, v, &served_now).await {
                Ok(o) => opened.push((v.name.clone(), o)),
                Err(e) => {
                    discard(opened).await;
                    self.uncount_clone(&clone).await;
                    return Err(e);
                }
            }
        }
        if let Err(e) = state::save(&new) {
            discard(opened).await;
            self.uncount_clone(&clone).await;
            return Err(ApiError::internal(format!("{e}: nothing was changed")));
        }
        for (name, o) in opened {
            if let Some(n) = &self.nvme {
                let _ = crate::nvme::follow_volume(n, &o.target, &o.lu.paths, &self.shutdown);
            }
            if let Some(i) = &self.iscsi {
                crate::iscsi::add_abort_sink(i, &o.target);
            }
            tracing::info!(volume = %name, dir = %o.dir.display(), "volume created by the control plane");
            self.served.insert(&name, o.target, o.lu);
        }
        if let Some(i) = &self.iscsi {
            crate::iscsi::reconfigure::apply(i, &new, &self.served.lus());
        }
        if let Some(n) = &self.nvme {
            if let Err(e) = crate::nvme::reconfigure::apply(n, &new, &self.served.targets()) {
                tracing::error!(error = %e, "NVMe/TCP subsystems not updated");
            }
        }
        self.served.set_config(new.clone());
        for v in removed {
            self.remove_volume(&new, &v).await;
        }
        Ok(reply)
    }

    /// Records a volume's new size after an online resize, when the control plane's saved
    /// state is where the node's volumes come from (otherwise the configuration file stays the
    /// truth and is not rewritten: its `size` grows the volume at start, a smaller one is
    /// refused there with a message).
    pub async fn record_size(&self, name: &str, bytes: u64) {
        if !state::path(&self.served.config()).exists() {
            return;
        }
        let saved = self
            .change(|cfg| {
                if let Some(v) = cfg.volumes.iter_mut().find(|v| v.name == name) {
                    v.size = crate::config::Size(bytes);
                }
                Ok(())
            })
            .await;
        if let Err(e) = saved {
            tracing::error!(volume = %name, error = %e.message, "the new size was not saved in the control plane's state");
        }
    }

    /// Tells the origin of a clone that was not kept that it is gone.
    async fn uncount_clone(&self, clone: &Option<CloneOf>) {
        if let Some(c) = clone {
            let _ = c.origin.volume.volume.clone_deleted(c.snapshot).await;
        }
    }

    /// Creates and opens volume `v` (not served yet); a clone opens on its origin in `opened`.
    async fn open(
        &self,
        cfg: &Config,
        v: &crate::config::VolumeConfig,
        opened: &crate::volumes::Volumes,
    ) -> Result<Opened, ApiError> {
        let dir = cfg.volume_dir(v);
        let volume = crate::volumes::open_one(cfg, v, opened)
            .await
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                match e {
                    crate::volumes::OpenError::Invalid(m) => ApiError::bad_request(m),
                    e => ApiError::internal(e.to_string()),
                }
            })?;
        let served = Arc::new(crate::volumes::ServedVolume {
            name: v.name.clone(),
            volume,
        });
        let target =
            match crate::target::VolumeTarget::open(Arc::clone(&served), &self.metrics).await {
                Ok(t) => t,
                Err(e) => {
                    let _ = served.volume.close().await;
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(ApiError::internal(e));
                }
            };
        // A volume made here is never replicated: its paths are this node's group alone.
        let group = cfg.node.path_group;
        let ports = crate::paths::ids::relative_ports(group, cfg.iscsi.portals.len());
        let paths = crate::paths::PathCell::new(target.volume.volume.engine(), group, ports, false);
        let lu = crate::lu::LuHandle::new(Arc::clone(&target), paths, vec![0]);
        Ok(Opened { target, lu, dir })
    }

    /// Stops serving a deleted volume, closes it and removes its files.
    async fn remove_volume(&self, cfg: &Config, v: &crate::config::VolumeConfig) {
        let Some(t) = self.served.remove(&v.name) else {
            // It never opened (unavailable): its files are left for the operator.
            return;
        };
        let origin = t.volume.volume.clone_origin();
        if let Err(e) = t.volume.volume.close().await {
            tracing::warn!(volume = %v.name, error = %e, "closing the deleted volume failed");
        }
        let dir = cfg.volume_dir(v);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                state::sync_dir(&dir);
                tracing::info!(volume = %v.name, dir = %dir.display(), "volume deleted by the control plane");
                // A clone's snapshot may be deleted once it has no clones left.
                if let Some(c) = origin {
                    let o = self
                        .served
                        .targets()
                        .into_values()
                        .find(|o| o.volume.volume.uuid() == c.origin_uuid);
                    if let Some(o) = o {
                        if let Err(e) = o.volume.volume.clone_deleted(c.snapshot_id).await {
                            tracing::warn!(volume = %v.name, error = %e, "the origin did not take note of the deleted clone");
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(volume = %v.name, dir = %dir.display(), error = %e, "cannot remove the deleted volume's files")
            }
        }
    }
}

/// Closes volumes opened for a change that was refused and removes their files.
async fn discard(opened: Vec<(String, Opened)>) {
    for (_, o) in opened {
        let _ = o.target.volume.volume.close().await;
        let _ = std::fs::remove_dir_all(&o.dir);
    }
}
