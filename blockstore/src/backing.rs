//! What the engine holds of a clone: its origin (behind a trait, so the engine does not depend
//! on how a snapshot is read), the map of blocks it wrote, and the `meta-clone` record naming
//! its origin. The operations on clones are in [`crate::clone`].

use std::sync::RwLock;

use crate::blockmap::BlockMap;
use crate::error::{Error, Result};
use crate::storage::Storage;

/// The snapshot a clone reads its unwritten blocks from ([`crate::SnapshotView`]).
pub(crate) trait Backing: Send + Sync {
    /// Reads whole blocks at `lba` (zeros beyond the snapshot's capacity).
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<()>;
    /// The origin volume's UUID.
    fn origin_uuid(&self) -> [u8; 16];
    /// The snapshot's id.
    fn snapshot_id(&self) -> u64;
}

/// Metadata naming a clone's origin.
pub(crate) const CLONE_METADATA: &str = "meta-clone";
/// The clone's map of blocks it wrote itself.
pub(crate) const WRITTEN_FILE: &str = "clone-written";

/// Where a clone comes from, as stored in its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloneOrigin {
    /// UUID of the origin volume.
    pub origin_uuid: [u8; 16],
    /// The snapshot of the origin it reads unwritten blocks from.
    pub snapshot_id: u64,
    /// Whether writes are refused (an exported snapshot).
    pub read_only: bool,
}

impl CloneOrigin {
    pub(crate) fn encode(&self) -> [u8; 25] {
        let mut b = [0u8; 25];
        b[..16].copy_from_slice(&self.origin_uuid);
        b[16..24].copy_from_slice(&self.snapshot_id.to_le_bytes());
        b[24] = u8::from(self.read_only);
        b
    }

    fn decode(b: &[u8]) -> Option<CloneOrigin> {
        if b.len() != 25 || b[24] > 1 {
            return None;
        }
        Some(CloneOrigin {
            origin_uuid: b[..16].try_into().ok()?,
            snapshot_id: u64::from_le_bytes(b[16..24].try_into().ok()?),
            read_only: b[24] == 1,
        })
    }
}

pub(crate) fn read_origin(storage: &dyn Storage) -> Result<Option<CloneOrigin>> {
    match storage.read_all(CLONE_METADATA)? {
        None => Ok(None),
        Some(b) => CloneOrigin::decode(&b)
            .map(Some)
            .ok_or_else(|| Error::CorruptSuperblock {
                path: storage.describe(CLONE_METADATA),
                reason: "unreadable clone origin".into(),
            }),
    }
}

/// What an open clone holds: its origin and the map of blocks it wrote.
pub(crate) struct CloneState {
    pub(crate) origin: Box<dyn Backing>,
    pub(crate) written: RwLock<BlockMap>,
    pub(crate) read_only: bool,
}

impl CloneState {
    /// The clone state of a volume being opened: `None` for a volume that is not a clone
    /// (and then no origin may be given), the origin checked against what the clone names.
    pub(crate) fn open(
        storage: &dyn Storage,
        origin: Option<Box<dyn Backing>>,
    ) -> Result<Option<CloneState>> {
        let stored = read_origin(storage)?;
        match (stored, origin) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(Error::Invalid(format!(
                "{} is not a clone",
                storage.describe("").display()
            ))),
            (Some(c), None) => Err(Error::Invalid(format!(
                "{} is a clone of snapshot {} of volume {}: open it with its origin",
                storage.describe("").display(),
                c.snapshot_id,
                uuid::Uuid::from_bytes(c.origin_uuid)
            ))),
            (Some(c), Some(view)) => {
                if view.origin_uuid() != c.origin_uuid || view.snapshot_id() != c.snapshot_id {
                    return Err(Error::Invalid(format!(
                        "{} is a clone of snapshot {} of volume {}, not of snapshot {} of {}",
                        storage.describe("").display(),
                        c.snapshot_id,
                        uuid::Uuid::from_bytes(c.origin_uuid),
                        view.snapshot_id(),
                        uuid::Uuid::from_bytes(view.origin_uuid())
                    )));
                }
                let written = BlockMap::load(storage.open(WRITTEN_FILE)?)?;
                Ok(Some(CloneState {
                    origin: view,
                    written: RwLock::new(written),
                    read_only: c.read_only,
                }))
            }
        }
    }
}
