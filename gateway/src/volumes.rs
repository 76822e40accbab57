//! The volumes this node serves: opened (created on first run) from the configuration.
//!
//! A volume that cannot open (a corrupt superblock, damage inside its acknowledged log, a
//! missing file, no space to create it) is reported and left out: the other volumes serve, and
//! `tandem status` lists it as unavailable with the reason. A volume held by another process is
//! different: a second daemon on the same data directory stops at once with a clear message.
//!
//! A configured `size` larger than the volume grows it at start (logged); a smaller one is
//! refused with an error in the log (the volume keeps its size).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use blockstore::{CreateOptions, OpenOptions, Role, Volume};

use crate::config::{Config, VolumeConfig, VolumeRole};

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

/// A configured volume that could not open, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// Its configured name.
    pub name: String,
    /// Why it did not open.
    pub reason: String,
}

/// What [`open_available`] opened and what it could not.
#[derive(Debug, Default)]
pub struct Opened {
    /// The volumes that serve.
    pub volumes: Volumes,
    /// The volumes left out, in configuration order.
    pub unavailable: Vec<Unavailable>,
}

/// Opens every configured volume, creating those that do not exist yet; fails on the first
/// that cannot open (for callers that need them all, such as tests and tools).
pub async fn open_all(cfg: &Config) -> Result<Volumes, String> {
    let opened = open_available(cfg).await?;
    match opened.unavailable.into_iter().next() {
        Some(u) => Err(u.reason),
        None => Ok(opened.volumes),
    }
}

/// Opens every configured volume, creating those that do not exist yet. A volume that cannot
/// open is logged and listed in [`Opened::unavailable`]; only a volume another process holds
/// (a second daemon on the same data directory) fails the whole node.
pub async fn open_available(cfg: &Config) -> Result<Opened, String> {
    let mut out = Opened::default();
    // Clones open after the volumes they are clones of (a clone's clone after its origin:
    // configuration order, in which they were created).
    let is_clone =
        |v: &&VolumeConfig| blockstore::clone_origin(cfg.volume_dir(v)).is_ok_and(|c| c.is_some());
    let (clones, plain): (Vec<&VolumeConfig>, Vec<&VolumeConfig>) =
        cfg.volumes.iter().partition(is_clone);
    for v in plain.into_iter().chain(clones) {
        match open_one(cfg, v, &out.volumes).await {
            Ok(volume) => {
                out.volumes.insert(
                    v.name.clone(),
                    Arc::new(ServedVolume {
                        name: v.name.clone(),
                        volume,
                    }),
                );
            }
            Err(OpenError::Locked(reason)) => return Err(reason),
            Err(OpenError::Unavailable(reason) | OpenError::Invalid(reason)) => {
                tracing::error!(volume = %v.name, error = %reason, "volume unavailable: not served");
                out.unavailable.push(Unavailable {
                    name: v.name.clone(),
                    reason,
                });
            }
        }
    }
    Ok(out)
}

/// Why one volume did not open.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// Another process has it open: fatal for the node.
    Locked(String),
    /// Its creation parameters cannot make a volume (size, block size, log size).
    Invalid(String),
    /// Anything else: the volume is left out.
    Unavailable(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Locked(m) | OpenError::Invalid(m) | OpenError::Unavailable(m) => {
                f.write_str(m)
            }
        }
    }
}

fn classify(e: blockstore::Error, what: String) -> OpenError {
    match e {
        blockstore::Error::Locked { .. } => OpenError::Locked(format!(
            "{what}: {e} (is another tandem running on this data directory?)"
        )),
        e @ (blockstore::Error::InvalidGeometry(_) | blockstore::Error::TooSmall(_)) => {
            OpenError::Invalid(format!("{what}: {e}"))
        }
        e => OpenError::Unavailable(format!("{what}: {e}")),
    }
}

/// Opens volume `v` of `cfg`, creating it first when its directory holds none; a clone opens
/// on its origin, which must be among `opened`.
pub(crate) async fn open_one(
    cfg: &Config,
    v: &VolumeConfig,
    opened: &Volumes,
) -> Result<Volume, OpenError> {
    let dir = cfg.volume_dir(v);
    let uuid = v.parsed_uuid().map_err(OpenError::Unavailable)?;
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
        match uuid {
            Some(u) => Volume::create_with_uuid(&dir, opts, u).await,
            None => Volume::create(&dir, opts).await,
        }
        .map_err(|e| {
            classify(
                e,
                format!("creating volume {:?} in {}", v.name, dir.display()),
            )
        })?;
        tracing::info!(volume = %v.name, dir = %dir.display(), bytes = v.size.0, "created volume");
    }
    let opts = OpenOptions {
        log_full_timeout: Duration::from_millis(cfg.storage.log_full_timeout_ms),
        ..OpenOptions::default()
    };
    let what = || format!("opening volume {:?} in {}", v.name, dir.display());
    let volume = match blockstore::clone_origin(&dir).map_err(|e| classify(e, what()))? {
        Some(c) => {
            let origin = opened
                .values()
                .find(|o| o.volume.uuid() == c.origin_uuid)
                .ok_or_else(|| {
                    OpenError::Unavailable(format!(
                        "volume {:?} is a clone of snapshot {} of volume {}, which is not open",
                        v.name,
                        c.snapshot_id,
                        uuid::Uuid::from_bytes(c.origin_uuid)
                    ))
                })?;
            Volume::open_clone(&dir, opts, &origin.volume).await
        }
        None => Volume::open(&dir, opts).await,
    }
    .map_err(|e| classify(e, what()))?;
    if let Some(u) = uuid {
        if u != volume.uuid() {
            let _ = volume.close().await;
            return Err(OpenError::Unavailable(format!(
                "volume {:?} in {} has uuid {}, but the configuration says {}",
                v.name,
                dir.display(),
                uuid::Uuid::from_bytes(volume.uuid()),
                uuid::Uuid::from_bytes(u)
            )));
        }
    }
    apply_configured_size(v, &volume).await;
    tracing::info!(
        volume = %v.name,
        uuid = %uuid::Uuid::from_bytes(volume.uuid()),
        blocks = volume.capacity_blocks(),
        block_size = volume.block_size(),
        "opened volume"
    );
    Ok(volume)
}

/// Brings an opened volume to its configured size at start: a larger `size` grows it (logged);
/// a smaller one is refused with an error in the log and the volume keeps its size (it may have
/// been grown online; shrinking is `tandem volume resize --force` on an unused volume). A
/// replicated volume keeps its size too (see [`crate::resize`]).
async fn apply_configured_size(v: &VolumeConfig, volume: &blockstore::Volume) {
    let bs = volume.block_size();
    let have = volume.capacity_blocks() * u64::from(bs);
    let want = v.size.0;
    if want == have {
        return;
    }
    if want < have {
        tracing::error!(
            volume = %v.name, configured_bytes = want, volume_bytes = have,
            "the configured size is smaller than the volume: shrinking is refused, the volume \
             keeps its size (set `size` to at least {have}, or shrink an unused volume with \
             `tandem volume resize --force`)"
        );
        return;
    }
    if v.peer.is_some() {
        tracing::error!(
            volume = %v.name, configured_bytes = want, volume_bytes = have,
            "the configured size is larger than the volume, but a replicated volume grows only \
             online, on its primary (`tandem volume resize`), so both nodes grow at the same \
             log position: it keeps its size"
        );
        return;
    }
    let blocks = match blocks_of(want, bs) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(volume = %v.name, "configured size not applied: {e}");
            return;
        }
    };
    match volume.grow(blocks).await {
        Ok(()) => tracing::warn!(
            volume = %v.name, old_bytes = have, new_bytes = want,
            "grown to the configured size"
        ),
        Err(e) => tracing::error!(
            volume = %v.name, configured_bytes = want, volume_bytes = have, error = %e,
            "growing to the configured size failed: the volume keeps its size"
        ),
    }
}

/// `bytes` as a number of `bs`-byte blocks: positive and a whole number of blocks.
pub(crate) fn blocks_of(bytes: u64, bs: u32) -> Result<u64, String> {
    if bytes == 0 || !bytes.is_multiple_of(u64::from(bs)) {
        return Err(format!(
            "size {bytes} is not a positive multiple of the volume's block size {bs}"
        ));
    }
    Ok(bytes / u64::from(bs))
}

/// Flushes and closes every volume.
pub async fn close_all(vols: &Volumes) {
    for v in vols.values() {
        if let Err(e) = v.volume.close().await {
            tracing::error!(volume = %v.name, error = %e, "closing volume failed");
        }
    }
}
