//! Clones: volumes whose unwritten blocks read from another volume's snapshot.
//!
//! A clone is an ordinary volume (superblock, log, sparse extent) in a directory of its own,
//! plus two files: `meta-clone`, naming its origin (the origin volume's UUID and the snapshot
//! id) and whether it is read-only, and `clone-written`, a block map of the blocks the clone
//! wrote itself. A read of a block the clone never wrote goes to the origin snapshot through a
//! [`SnapshotView`]; the first checkpoint that writes a block into the clone's extent marks it
//! written first (`cow`). So a clone starts at the size of its log and grows with its
//! own writes only, and writing it never touches its origin.
//!
//! A read-only clone is how a snapshot is exported as a block device: the gateway opens it as a
//! [`crate::Volume`] like any other, and every write is refused with [`Error::ReadOnly`].
//!
//! The origin counts its clones (persisted in its snapshot table), so a snapshot with clones
//! cannot be deleted; whoever deletes a clone's directory tells the origin
//! ([`Engine::clone_deleted`]). A clone holds its origin's engine open while it is open.

use std::sync::Arc;

pub use crate::backing::CloneOrigin;
use crate::backing::{read_origin, Backing, CLONE_METADATA, WRITTEN_FILE};
use crate::engine::{create_with_uuid, CreateOptions, Engine};
use crate::error::{Error, Result};
use crate::role::Role;
use crate::snapshot::SnapshotInfo;
use crate::storage::{DirStorage, Storage};

/// Reads what `meta-clone` in `dir` says: `None` for a volume that is not a clone. Lets the
/// gateway find out, before opening a volume, which origin it must open first.
pub fn clone_origin(dir: impl AsRef<std::path::Path>) -> Result<Option<CloneOrigin>> {
    read_origin(&DirStorage::new(dir))
}

/// Parameters of a new clone.
#[derive(Debug, Clone)]
pub struct CloneOptions {
    /// Size of the clone's own write-ahead log in bytes.
    pub wal_bytes: u64,
    /// Refuse every write: a read-only export of the snapshot.
    pub read_only: bool,
}

impl CloneOptions {
    /// A writable clone with a log of `wal_bytes`.
    pub fn writable(wal_bytes: u64) -> Self {
        CloneOptions {
            wal_bytes,
            read_only: false,
        }
    }

    /// A read-only view of a snapshot to export as a block device (a small log: nothing is
    /// ever written to it).
    pub fn read_only_view() -> Self {
        CloneOptions {
            wal_bytes: 1 << 20,
            read_only: true,
        }
    }
}

/// An open, readable view of one snapshot of a volume. While it exists the snapshot cannot be
/// deleted and the origin's engine stays open. Clones read through one.
pub struct SnapshotView {
    engine: Arc<Engine>,
    info: SnapshotInfo,
}

impl std::fmt::Debug for SnapshotView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotView")
            .field("origin", &self.engine)
            .field("snapshot", &self.info)
            .finish()
    }
}

impl SnapshotView {
    /// The snapshot as it was when the view was opened.
    pub fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    /// The origin volume's UUID.
    pub fn origin_uuid(&self) -> [u8; 16] {
        self.engine.uuid()
    }

    /// The origin's block size.
    pub fn block_size(&self) -> u32 {
        self.engine.block_size()
    }

    /// Reads whole blocks at `lba`; blocks at or beyond the snapshot's capacity read as zeros
    /// (a clone may have grown past it).
    pub fn read(&self, lba: u64, buf: &mut [u8]) -> Result<()> {
        let bs = u64::from(self.engine.block_size());
        let cap = self.info.capacity_blocks;
        let blocks = buf.len() as u64 / bs;
        let inside = cap.saturating_sub(lba).min(blocks);
        let (head, tail) = buf.split_at_mut((inside * bs) as usize);
        tail.fill(0);
        if inside > 0 {
            self.engine.read_snapshot(self.info.id, lba, head)?;
        }
        Ok(())
    }
}

impl Backing for SnapshotView {
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<()> {
        SnapshotView::read(self, lba, buf)
    }
    fn origin_uuid(&self) -> [u8; 16] {
        SnapshotView::origin_uuid(self)
    }
    fn snapshot_id(&self) -> u64 {
        self.info.id
    }
}

impl Drop for SnapshotView {
    fn drop(&mut self) {
        let _ = self.engine.view_count(self.info.id, false);
    }
}

impl Engine {
    /// Opens a view of snapshot `id` for reading (see [`SnapshotView`]).
    pub fn snapshot_view(self: &Arc<Self>, id: u64) -> Result<SnapshotView> {
        self.check_alive()?;
        let info = self.view_count(id, true)?;
        Ok(SnapshotView {
            engine: self.clone(),
            info,
        })
    }

    /// Opens a clone in `storage` whose origin snapshot is `origin` (the view the clone reads
    /// its unwritten blocks through).
    pub fn open_clone(
        storage: Arc<dyn Storage>,
        opts: crate::engine::OpenOptions,
        origin: SnapshotView,
    ) -> Result<Arc<Engine>> {
        Engine::open_inner(storage, opts, Some(Box::new(origin)))
    }

    /// Whether every write is refused (a read-only clone: an exported snapshot).
    pub fn read_only(&self) -> bool {
        self.clone.as_ref().is_some_and(|c| c.read_only)
    }

    /// What this volume is a clone of, if it is one.
    pub fn clone_origin(&self) -> Option<CloneOrigin> {
        self.clone.as_ref().map(|c| CloneOrigin {
            origin_uuid: c.origin.origin_uuid(),
            snapshot_id: c.origin.snapshot_id(),
            read_only: c.read_only,
        })
    }

    /// Refuses writes to a read-only clone.
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.read_only() {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }
}

/// Creates a clone of the snapshot `origin` views, in `storage` (a new volume of the
/// snapshot's size and block size, with a new UUID). The origin counts it from here on.
pub fn create_clone(
    storage: &dyn Storage,
    origin: &SnapshotView,
    opts: &CloneOptions,
) -> Result<[u8; 16]> {
    if storage.exists(crate::engine::SUPERBLOCK_FILE) {
        return Err(Error::Exists(format!(
            "a volume exists at {}",
            storage.describe(crate::engine::SUPERBLOCK_FILE).display()
        )));
    }
    let bs = origin.block_size();
    let create = CreateOptions {
        block_size: bs,
        capacity_bytes: origin.info.capacity_blocks * u64::from(bs),
        wal_bytes: opts.wal_bytes,
        role: Role::Primary,
        epoch: 1,
    };
    // Counted first: a crash later leaves a count too many (fixed with clone_deleted), never
    // a clone whose snapshot could be deleted under it.
    origin.engine.add_clone(origin.info.id, 1)?;
    storage.create(WRITTEN_FILE)?;
    storage.replace(
        CLONE_METADATA,
        &CloneOrigin {
            origin_uuid: origin.origin_uuid(),
            snapshot_id: origin.info.id,
            read_only: opts.read_only,
        }
        .encode(),
    )?;
    // The superblock last: until it exists there is no volume to open.
    create_with_uuid(storage, &create, *uuid::Uuid::new_v4().as_bytes())
}
