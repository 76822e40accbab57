//! The async face of a volume, for the gateway.
//!
//! File I/O blocks, so every call that may touch a file runs on tokio's blocking pool and the
//! async worker threads never wait on the disk.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::engine::{create, CreateOptions, Engine, OpenOptions};
use crate::error::{Error, Result};
use crate::role::{AccessState, Role, RoleState};
use crate::stats::StatsSnapshot;
use crate::storage::{DirStorage, Storage};

/// A handle to an open volume; cheap to clone, shared by every connection that serves it.
#[derive(Clone)]
pub struct Volume {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("location", &self.engine.location())
            .finish()
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
}

impl Volume {
    /// Creates a volume in directory `dir`.
    pub async fn create(dir: impl AsRef<Path>, opts: CreateOptions) -> Result<[u8; 16]> {
        let storage = DirStorage::new(dir);
        blocking(move || create(&storage, &opts)).await
    }

    /// Opens (and recovers) the volume in directory `dir`.
    pub async fn open(dir: impl AsRef<Path>, opts: OpenOptions) -> Result<Volume> {
        let storage = DirStorage::new(dir);
        Self::open_storage(Arc::new(storage), opts).await
    }

    /// Opens (and recovers) a volume on any storage.
    pub async fn open_storage(storage: Arc<dyn Storage>, opts: OpenOptions) -> Result<Volume> {
        let engine = blocking(move || Engine::open_shared(storage, opts)).await?;
        Ok(Volume { engine })
    }

    /// Wraps an engine opened synchronously.
    pub fn from_engine(engine: Arc<Engine>) -> Volume {
        Volume { engine }
    }

    /// The synchronous engine underneath.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Reads `blocks` blocks at `lba`.
    pub async fn read(&self, lba: u64, blocks: u64) -> Result<Vec<u8>> {
        let e = self.engine.clone();
        blocking(move || e.read(lba, blocks)).await
    }

    /// Writes whole blocks at `lba`; with `fua`, durable on return.
    pub async fn write(&self, lba: u64, data: Vec<u8>, fua: bool) -> Result<()> {
        let e = self.engine.clone();
        blocking(move || e.write(lba, &data, fua)).await
    }

    /// Makes every acknowledged write durable.
    pub async fn flush(&self) -> Result<()> {
        let e = self.engine.clone();
        blocking(move || e.flush()).await
    }

    /// Deallocates blocks.
    pub async fn trim(&self, lba: u64, blocks: u64) -> Result<()> {
        let e = self.engine.clone();
        blocking(move || e.trim(lba, blocks)).await
    }

    /// Writes zeros (thin).
    pub async fn write_zeroes(&self, lba: u64, blocks: u64, fua: bool) -> Result<()> {
        let e = self.engine.clone();
        blocking(move || e.write_zeroes(lba, blocks, fua)).await
    }

    /// Atomic compare-and-write.
    pub async fn compare_and_write(
        &self,
        lba: u64,
        compare: Vec<u8>,
        write: Vec<u8>,
        fua: bool,
    ) -> Result<()> {
        let e = self.engine.clone();
        blocking(move || e.compare_and_write(lba, &compare, &write, fua)).await
    }

    /// Provisioning status at `lba` (see [`Engine::lba_status`]).
    pub async fn lba_status(&self, lba: u64, max: u64) -> Result<(bool, u64)> {
        let e = self.engine.clone();
        blocking(move || e.lba_status(lba, max)).await
    }

    /// Stores named volume metadata atomically (see [`Engine::save_metadata`]).
    pub async fn save_metadata(&self, name: &'static str, bytes: Vec<u8>) -> Result<()> {
        let e = self.engine.clone();
        blocking(move || e.save_metadata(name, &bytes)).await
    }

    /// Reads named volume metadata.
    pub async fn load_metadata(&self, name: &'static str) -> Result<Option<Vec<u8>>> {
        let e = self.engine.clone();
        blocking(move || e.load_metadata(name)).await
    }

    /// Grows the volume online.
    pub async fn grow(&self, blocks: u64) -> Result<()> {
        let e = self.engine.clone();
        blocking(move || e.grow(blocks)).await
    }

    /// Changes role under an epoch (persisted before it takes effect).
    pub async fn set_role(&self, role: Role, epoch: u64) -> Result<()> {
        let e = self.engine.clone();
        blocking(move || e.set_role(role, epoch)).await
    }

    /// Grants or removes the lease.
    pub fn set_lease(&self, until: Option<Instant>) {
        self.engine.set_lease(until)
    }

    /// Flushes into the extent and closes.
    pub async fn close(&self) -> Result<()> {
        let e = self.engine.clone();
        blocking(move || e.close()).await
    }

    /// Capacity in blocks.
    pub fn capacity_blocks(&self) -> u64 {
        self.engine.capacity_blocks()
    }

    /// Logical block size.
    pub fn block_size(&self) -> u32 {
        self.engine.block_size()
    }

    /// The identity both protocols report.
    pub fn uuid(&self) -> [u8; 16] {
        self.engine.uuid()
    }

    /// Counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.engine.stats()
    }

    /// Role, epoch and lease.
    pub fn role_state(&self) -> RoleState {
        self.engine.role_state()
    }

    /// Current access state.
    pub fn access_state(&self) -> AccessState {
        self.engine.access_state()
    }

    /// Watches access-state changes (for ALUA / ANA notifications).
    pub fn watch_access(&self) -> tokio::sync::watch::Receiver<AccessState> {
        self.engine.watch_access()
    }
}
