//! The async face of a volume, for the gateway.
//!
//! File I/O may block, so every call that may wait for the disk runs on the volume's own I/O
//! threads and the async worker threads never wait on the disk. Two things are done on the
//! caller's thread because they are only memory copies: reads of data already in the page cache
//! (`RWF_NOWAIT`), and appending a batch of plain writes to the log when it fits without waiting
//! (a copy into the log file's page cache; see [`Engine::try_write_many_nowait`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::clone::{CloneOptions, CloneOrigin};
use crate::engine::{create, CreateOptions, Engine, OpenOptions};
use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::role::{AccessState, Role, RoleState};
use crate::snapshot::SnapshotInfo;
use crate::stats::StatsSnapshot;
use crate::storage::{DirStorage, Storage};

/// A handle to an open volume; cheap to clone, shared by every connection that serves it.
#[derive(Clone)]
pub struct Volume {
    engine: Arc<Engine>,
    exec: Arc<ExecutorHandle>,
    writes: Arc<WriteQueue>,
}

/// One write waiting for the batch appender.
struct PendingWrite {
    lba: u64,
    data: Box<dyn AsRef<[u8]> + Send>,
    fua: bool,
    done: tokio::sync::oneshot::Sender<Result<()>>,
}

/// Writes from all connections queue here; one I/O job at a time drains whatever has queued
/// and appends it with one log write ([`Engine::write_many`]), so a deep queue of small writes
/// costs one thread hand-off and one `pwrite` per batch rather than per write.
#[derive(Default)]
struct WriteQueue {
    state: std::sync::Mutex<(Vec<PendingWrite>, bool)>,
}

/// What one [`WriteQueue::drain_once`] did.
enum Drained {
    /// Nothing was queued; the queue is idle again.
    Empty,
    /// A batch was written and every write in it answered.
    Answered,
    /// The writer declined the batch; it is back at the head of the queue, in order.
    Declined,
}

impl WriteQueue {
    /// Takes everything queued and hands it to `write`, which returns one result per write or
    /// `None` to decline the batch without writing any of it.
    fn drain_once(
        &self,
        write: impl FnOnce(&[(u64, &[u8], bool)]) -> Option<Vec<Result<()>>>,
    ) -> Drained {
        let batch = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.0.is_empty() {
                st.1 = false;
                return Drained::Empty;
            }
            std::mem::take(&mut st.0)
        };
        let reqs: Vec<(u64, &[u8], bool)> = batch
            .iter()
            .map(|p| (p.lba, (*p.data).as_ref(), p.fua))
            .collect();
        let results = write(&reqs);
        drop(reqs);
        let Some(results) = results else {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.0.splice(0..0, batch);
            return Drained::Declined;
        };
        for (p, r) in batch.into_iter().zip(results) {
            let _ = p.done.send(r);
        }
        Drained::Answered
    }

    /// Marks the queue idle if nothing is queued; returns whether it did.
    fn stop_if_empty(&self) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.0.is_empty() {
            st.1 = false;
        }
        !st.1
    }
}

/// The answers to a batch of `n` writes whose job panicked.
fn failed(n: usize) -> Vec<Result<()>> {
    (0..n).map(|_| Err(Error::Failed)).collect()
}

/// Stops the volume's I/O threads when the last handle goes.
struct ExecutorHandle(Executor);

impl Drop for ExecutorHandle {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// I/O threads per volume: enough that a few fdatasyncs in progress do not stall reads.
const IO_THREADS: usize = 4;

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

    /// Creates a volume in directory `dir` with a given identity (see
    /// [`crate::engine::create_with_uuid`]).
    pub async fn create_with_uuid(
        dir: impl AsRef<Path>,
        opts: CreateOptions,
        uuid: [u8; 16],
    ) -> Result<[u8; 16]> {
        let storage = DirStorage::new(dir);
        blocking(move || crate::engine::create_with_uuid(&storage, &opts, uuid)).await
    }

    /// Opens (and recovers) the volume in directory `dir`.
    pub async fn open(dir: impl AsRef<Path>, opts: OpenOptions) -> Result<Volume> {
        let storage = DirStorage::new(dir);
        Self::open_storage(Arc::new(storage), opts).await
    }

    /// Opens (and recovers) a volume on any storage.
    pub async fn open_storage(storage: Arc<dyn Storage>, opts: OpenOptions) -> Result<Volume> {
        let engine = blocking(move || Engine::open_shared(storage, opts)).await?;
        Ok(Self::from_engine(engine))
    }

    /// Wraps an engine opened synchronously.
    pub(crate) fn from_engine(engine: Arc<Engine>) -> Volume {
        Volume {
            engine,
            exec: Arc::new(ExecutorHandle(Executor::new("volume", IO_THREADS))),
            writes: Arc::new(WriteQueue::default()),
        }
    }

    /// Drains the write queue until it is empty (runs on an I/O thread).
    fn drain_writes(engine: &Engine, queue: &WriteQueue) {
        while let Drained::Answered = queue.drain_once(|reqs| {
            Some(
                engine
                    .contain(|| engine.write_many(reqs))
                    .unwrap_or_else(|_| failed(reqs.len())),
            )
        }) {}
    }

    /// Appends the queued writes on the calling thread with
    /// [`Engine::try_write_many_nowait`]. Returns `true` when the queue is done with (the
    /// batch answered and nothing new queued), `false` when an I/O thread must drain the rest.
    fn drain_inline(engine: &Engine, queue: &WriteQueue) -> bool {
        match queue.drain_once(|reqs| {
            engine
                .contain(|| engine.try_write_many_nowait(reqs))
                .unwrap_or_else(|_| Some(failed(reqs.len())))
        }) {
            Drained::Empty => true,
            Drained::Declined => false,
            Drained::Answered => queue.stop_if_empty(),
        }
    }

    /// Runs blocking engine work on the volume's I/O threads.
    async fn io<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let e = self.engine.clone();
        self.exec
            .0
            .run(move || e.contain(|| f(&e)).and_then(|r| r))
            .await
            .unwrap_or(Err(Error::Closed))
    }

    /// The synchronous engine underneath.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Reads `blocks` blocks at `lba`.
    pub async fn read(&self, lba: u64, blocks: u64) -> Result<Vec<u8>> {
        // Data in the page cache is copied right here; only reads that would wait for the disk
        // go to an I/O thread.
        let len = blocks.saturating_mul(u64::from(self.engine.block_size()));
        if len <= 1 << 20 {
            let mut buf = vec![0u8; len as usize];
            if let Some(r) = self.engine.try_read_nowait(lba, &mut buf) {
                return r.map(|()| buf);
            }
        }
        self.io(move |e| e.read(lba, blocks)).await
    }

    /// Writes whole blocks at `lba`; with `fua`, durable on return.
    pub async fn write(
        &self,
        lba: u64,
        data: impl AsRef<[u8]> + Send + 'static,
        fua: bool,
    ) -> Result<()> {
        let data: Box<dyn AsRef<[u8]> + Send> = Box::new(data);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut st = self.writes.state.lock().unwrap_or_else(|e| e.into_inner());
            st.0.push(PendingWrite {
                lba,
                data,
                fua,
                done: tx,
            });
            !std::mem::replace(&mut st.1, true)
        };
        if start {
            // Let the other commands of this poll round (a host's queue arrives in bursts)
            // queue behind this write, then append them all right here if that is only a copy
            // into the page cache; anything that may wait goes to an I/O thread.
            tokio::task::yield_now().await;
            if !Self::drain_inline(&self.engine, &self.writes) {
                let (e, q) = (self.engine.clone(), self.writes.clone());
                if !self.exec.0.execute(move || Self::drain_writes(&e, &q)) {
                    // Shut down: fail everything queued (their senders are dropped here).
                    let mut st = self.writes.state.lock().unwrap_or_else(|e| e.into_inner());
                    st.0.clear();
                    st.1 = false;
                }
            }
        }
        rx.await.unwrap_or(Err(Error::Closed))?;
        if !fua {
            // In the log here: a plain write completes once the standbys received it too
            // (awaited here, so the group commit of the writes behind it goes on meanwhile).
            self.engine.received_wait().await?;
        }
        Ok(())
    }

    /// Makes every acknowledged write durable.
    pub async fn flush(&self) -> Result<()> {
        self.io(move |e| e.flush()).await
    }

    /// Deallocates blocks.
    pub async fn trim(&self, lba: u64, blocks: u64) -> Result<()> {
        self.io(move |e| e.trim(lba, blocks)).await
    }

    /// Writes zeros (thin).
    pub async fn write_zeroes(&self, lba: u64, blocks: u64, fua: bool) -> Result<()> {
        self.io(move |e| e.write_zeroes(lba, blocks, fua)).await
    }

    /// Atomic compare-and-write.
    pub async fn compare_and_write(
        &self,
        lba: u64,
        compare: Vec<u8>,
        write: Vec<u8>,
        fua: bool,
    ) -> Result<()> {
        self.io(move |e| e.compare_and_write(lba, &compare, &write, fua))
            .await
    }

    /// Provisioning status at `lba` (see [`Engine::lba_status`]).
    pub async fn lba_status(&self, lba: u64, max: u64) -> Result<(bool, u64)> {
        self.io(move |e| e.lba_status(lba, max)).await
    }

    /// Stores named volume metadata atomically (see [`Engine::save_metadata`]).
    pub async fn save_metadata(&self, name: &'static str, bytes: Vec<u8>) -> Result<()> {
        self.io(move |e| e.save_metadata(name, &bytes)).await
    }

    /// Reads named volume metadata.
    pub async fn load_metadata(&self, name: &'static str) -> Result<Option<Vec<u8>>> {
        self.io(move |e| e.load_metadata(name)).await
    }

    /// Grows the volume online to `blocks` blocks (durable when it returns).
    pub async fn grow(&self, blocks: u64) -> Result<()> {
        self.io(move |e| e.grow(blocks)).await
    }

    /// Shrinks the volume to `blocks` blocks, discarding the rest (see [`Engine::shrink`]:
    /// only for a volume no host uses).
    pub async fn shrink(&self, blocks: u64) -> Result<()> {
        self.io(move |e| e.shrink(blocks)).await
    }

    /// Changes role under an epoch (persisted before it takes effect).
    pub async fn set_role(&self, role: Role, epoch: u64) -> Result<()> {
        self.io(move |e| e.set_role(role, epoch)).await
    }

    /// Becomes primary under a new epoch (persisted before it takes effect).
    pub async fn promote(&self) -> Result<()> {
        self.io(move |e| e.promote()).await
    }

    /// Becomes a standby under a new epoch (persisted before it takes effect).
    pub async fn demote(&self) -> Result<()> {
        self.io(move |e| e.demote()).await
    }

    /// Tells the volume a node holds epoch `seen`: a primary meeting a newer epoch stops serving
    /// at once and persists that it is stale.
    pub async fn observe_epoch(&self, seen: u64) -> Result<()> {
        self.io(move |e| e.observe_epoch(seen)).await
    }

    // ----- snapshots and clones (see `crate::snapshot`, `crate::clone`) ---------------------

    /// Takes a snapshot: every write acknowledged before the call is in it, none after.
    pub async fn create_snapshot(&self, name: impl Into<String>) -> Result<SnapshotInfo> {
        let name = name.into();
        self.io(move |e| e.create_snapshot(&name)).await
    }

    /// The volume's snapshots, oldest first.
    pub fn list_snapshots(&self) -> Vec<SnapshotInfo> {
        self.engine.list_snapshots()
    }

    /// Deletes a snapshot (refused while it has clones or open views).
    pub async fn delete_snapshot(&self, id: u64) -> Result<()> {
        self.io(move |e| e.delete_snapshot(id)).await
    }

    /// Rolls the volume back to a snapshot (durable on return; host writes wait meanwhile).
    pub async fn rollback_snapshot(&self, id: u64) -> Result<()> {
        self.io(move |e| e.rollback_snapshot(id)).await
    }

    /// Reads whole blocks of a snapshot.
    pub async fn read_snapshot(&self, id: u64, lba: u64, blocks: u64) -> Result<Vec<u8>> {
        self.io(move |e| {
            let len = blocks
                .checked_mul(u64::from(e.block_size()))
                .filter(|l| *l <= 1 << 31)
                .ok_or_else(|| Error::Invalid(format!("{blocks} blocks is too large a read")))?;
            let mut buf = vec![0u8; len as usize];
            e.read_snapshot(id, lba, &mut buf)?;
            Ok(buf)
        })
        .await
    }

    /// Creates a clone of snapshot `id` in directory `dir`: writable, or with
    /// [`CloneOptions::read_only_view`] the read-only view that exports the snapshot. Open it
    /// with [`Volume::open_clone`].
    pub async fn create_clone(
        &self,
        id: u64,
        dir: impl AsRef<Path>,
        opts: CloneOptions,
    ) -> Result<[u8; 16]> {
        let storage = DirStorage::new(dir);
        let engine = self.engine.clone();
        blocking(move || {
            let view = engine.snapshot_view(id)?;
            crate::clone::create_clone(&storage, &view, &opts)
        })
        .await
    }

    /// Opens (and recovers) the clone in `dir`, whose origin is `origin` (see
    /// [`crate::clone_origin`] to learn which volume that is before opening it).
    pub async fn open_clone(
        dir: impl AsRef<Path>,
        opts: OpenOptions,
        origin: &Volume,
    ) -> Result<Volume> {
        let storage: Arc<dyn Storage> = Arc::new(DirStorage::new(dir.as_ref()));
        let dir = dir.as_ref().to_path_buf();
        let origin = origin.engine.clone();
        let engine = blocking(move || {
            let c = crate::clone::clone_origin(&dir)?
                .ok_or_else(|| Error::Invalid(format!("{} is not a clone", dir.display())))?;
            if c.origin_uuid != origin.uuid() {
                return Err(Error::Invalid(format!(
                    "{} is a clone of volume {}, not of {}",
                    dir.display(),
                    uuid::Uuid::from_bytes(c.origin_uuid),
                    uuid::Uuid::from_bytes(origin.uuid())
                )));
            }
            let view = origin.snapshot_view(c.snapshot_id)?;
            Engine::open_clone(storage, opts, view)
        })
        .await?;
        Ok(Self::from_engine(engine))
    }

    /// Tells the origin that a clone of snapshot `id` was deleted (after its directory was
    /// removed), so the snapshot may be deleted again once it has no clones.
    pub async fn clone_deleted(&self, id: u64) -> Result<()> {
        self.io(move |e| e.clone_deleted(id)).await
    }

    /// Whether writes are refused (a read-only clone: an exported snapshot). Front ends
    /// report it as write protection.
    pub fn read_only(&self) -> bool {
        self.engine.read_only()
    }

    /// What this volume is a clone of, if it is one.
    pub fn clone_origin(&self) -> Option<CloneOrigin> {
        self.engine.clone_origin()
    }

    /// Grants or removes the lease.
    pub fn set_lease(&self, until: Option<Instant>) {
        self.engine.set_lease(until)
    }

    /// Flushes into the extent and closes.
    pub async fn close(&self) -> Result<()> {
        self.io(move |e| e.close()).await
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

    /// Role state and access state from one look at the role machine.
    pub fn role_snapshot(&self) -> (RoleState, AccessState) {
        self.engine.role_snapshot()
    }

    /// Watches access-state changes (for ALUA / ANA notifications).
    pub fn watch_access(&self) -> tokio::sync::watch::Receiver<AccessState> {
        self.engine.watch_access()
    }
}
