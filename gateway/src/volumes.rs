//! The volumes this node serves: opened (created on first run) from the configuration.

use std::collections::BTreeMap;
use std::sync::Arc;

use blockstore::{CreateOptions, OpenOptions, Role, Volume};

use crate::config::{Config, VolumeRole};

/// One served volume.
#[derive(Debug)]
pub struct ServedVolume {
    /// Its configured name.
    pub name: String,
    /// The open volume.
    pub volume: Volume,
}

/// All served volumes by name.
pub type Volumes = BTreeMap<String, Arc<ServedVolume>>;

/// Opens every configured volume, creating those that do not exist yet.
pub async fn open_all(cfg: &Config) -> Result<Volumes, String> {
    let mut out = BTreeMap::new();
    for v in &cfg.volumes {
        let dir = cfg.volume_dir(v);
        if !dir.join(blockstore::engine::SUPERBLOCK_FILE).exists() {
            let role = match v.role {
                VolumeRole::Primary => Role::Primary,
                VolumeRole::Standby => Role::Standby,
            };
            let opts = CreateOptions {
                block_size: v.block_size,
                capacity_bytes: v.size.0,
                wal_bytes: v.wal_size.0,
                role,
                epoch: 1,
            };
            match v.parsed_uuid()? {
                Some(u) => Volume::create_with_uuid(&dir, opts, u).await,
                None => Volume::create(&dir, opts).await,
            }
            .map_err(|e| format!("creating volume {:?} in {}: {e}", v.name, dir.display()))?;
            tracing::info!(volume = %v.name, dir = %dir.display(), bytes = v.size.0, "created volume");
        }
        let volume = Volume::open(&dir, OpenOptions::default())
            .await
            .map_err(|e| format!("opening volume {:?} in {}: {e}", v.name, dir.display()))?;
        if let Some(u) = v.parsed_uuid()? {
            if u != volume.uuid() {
                return Err(format!(
                    "volume {:?} in {} has uuid {}, but the configuration says {}",
                    v.name,
                    dir.display(),
                    uuid::Uuid::from_bytes(volume.uuid()),
                    uuid::Uuid::from_bytes(u)
                ));
            }
        }
        tracing::info!(
            volume = %v.name,
            uuid = %uuid::Uuid::from_bytes(volume.uuid()),
            blocks = volume.capacity_blocks(),
            block_size = volume.block_size(),
            "opened volume"
        );
        out.insert(
            v.name.clone(),
            Arc::new(ServedVolume {
                name: v.name.clone(),
                volume,
            }),
        );
    }
    Ok(out)
}

/// Flushes and closes every volume.
pub async fn close_all(vols: &Volumes) {
    for v in vols.values() {
        if let Err(e) = v.volume.close().await {
            tracing::error!(volume = %v.name, error = %e, "closing volume failed");
        }
    }
}
