//! The volume engine: the synchronous core every other part of the crate builds on.
//!
//! Writes append a record to the log and update the in-memory index; flushes share one
//! `fdatasync` of the log (group commit); reads lay the index over the extent. A checkpoint
//! ([`Engine::flush_once`]) copies logged blocks into the extent (see [`crate::extent_copy`]) and
//! advances the checkpoint, freeing log space; a background flusher thread (see
//! [`crate::flusher`]) decides when, and a lease timer thread (see [`crate::lease_timer`])
//! publishes the access state when a lease runs out. Both see the engine only through narrow
//! traits ([`Flush`], [`LeaseClock`]) implemented here.
//!
//! Online grow (a log record, so replicas grow at the same position) lives in `grow`.
//! Snapshots and clones live in [`crate::snapshot`], `snapshot_ops`, `cow`
//! (the copy-on-write step of a checkpoint) and [`crate::clone`].
//!
//! Lock order (outer first): `caw`, `flush_lock`, `snaps`, a clone's `written`, `retention`,
//! `log`, `reclaim`, `index`, `sb`, `sync`, `role`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use crate::backing::{Backing, CloneState};
use crate::error::{Error, Result};
use crate::extent_copy::copy_to_extent;
use crate::flusher::{Flush, Flusher};
use crate::index::{Index, Loc};
use crate::lease_timer::{LeaseClock, LeaseTimer};
use crate::record::{record_len, Header, Kind, ALIGN, HEADER_LEN};
use crate::recovery;
use crate::replica_gate::{
    decode_applied, encode_applied, LogPos, ReplicaGate, APPLIED_METADATA, RESYNC_METADATA,
};
use crate::role::{AccessState, Role, RoleState};
use crate::role_machine::{Change, RoleError, RoleMachine};
use crate::snapshot::Snapshots;
use crate::stats::Stats;
use crate::storage::{BlockFile, Storage};
use crate::superblock::Superblock;

/// File names inside a volume's storage.
pub const SUPERBLOCK_FILE: &str = "superblock";
/// The circular write-ahead log.
pub(crate) const WAL_FILE: &str = "wal";
/// The volume's data (sparse).
pub(crate) const EXTENT_FILE: &str = "extent";
/// Largest data payload of one log record.
pub(crate) const MAX_RECORD_DATA: u64 = 1 << 20;

/// Parameters of a new volume.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Logical block size: 512 or 4096.
    pub block_size: u32,
    /// Capacity in bytes (a multiple of the block size).
    pub capacity_bytes: u64,
    /// Size of the write-ahead log in bytes (a multiple of 512).
    pub wal_bytes: u64,
    /// Initial role.
    pub role: Role,
    /// Initial epoch.
    pub epoch: u64,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            block_size: 512,
            capacity_bytes: 1 << 30,
            wal_bytes: 128 << 20,
            role: Role::Primary,
            epoch: 1,
        }
    }
}

/// Run-time behaviour of an opened volume.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Run the flusher and the lease timer in background threads. Tests that want determinism
    /// turn it off; writers then run the flusher themselves when the log is full, and a lease
    /// running out shows in [`Engine::access_state`] but is not pushed to watchers.
    pub background_flusher: bool,
    /// The flusher runs at least this often while the log holds records.
    pub flush_interval: Duration,
    /// How long a writer waits for log space before giving up with [`Error::LogFull`]. Keep it
    /// below the hosts' command timeouts (SCSI and the Linux NVMe host use 30 s), so a host sees
    /// an error it can act on rather than timing the command out and aborting it.
    pub log_full_timeout: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            background_flusher: true,
            flush_interval: Duration::from_millis(200),
            log_full_timeout: DEFAULT_LOG_FULL_TIMEOUT,
        }
    }
}

/// The default of [`OpenOptions::log_full_timeout`]: well below the hosts' 30 s command
/// timeouts.
pub const DEFAULT_LOG_FULL_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether an I/O error says the file system has no space (or quota) left.
fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Position of the log: appended up to `head`, checkpointed up to `tail`.
#[derive(Debug)]
pub(crate) struct LogState {
    pub(crate) next_lsn: u64,
    pub(crate) head: u64,
    pub(crate) tail: u64,
    pub(crate) tail_lsn: u64,
    pub(crate) generation: u64,
}

#[derive(Debug)]
struct SyncState {
    syncing: bool,
}

/// The volume engine.
pub struct Engine {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) meta: Arc<dyn BlockFile>,
    pub(crate) wal: Arc<dyn BlockFile>,
    pub(crate) extent: Arc<dyn BlockFile>,
    meta_path: std::path::PathBuf,
    uuid: [u8; 16],
    pub(crate) block_size: u32,
    pub(crate) wal_size: u64,
    pub(crate) max_record_blocks: u64,
    pub(crate) capacity: AtomicU64,
    pub(crate) log: Mutex<LogState>,
    pub(crate) space_cv: Condvar,
    pub(crate) reclaim: RwLock<()>,
    pub(crate) index: RwLock<Index>,
    pub(crate) sb: Mutex<Superblock>,
    sync: Mutex<SyncState>,
    sync_cv: Condvar,
    pub(crate) durable_lsn: AtomicU64,
    pub(crate) flush_lock: Mutex<()>,
    pub(crate) caw: RwLock<()>,
    /// The role rules ([`RoleMachine`]); the engine persists what it decides.
    pub(crate) role: Mutex<RoleMachine>,
    access_tx: tokio::sync::watch::Sender<AccessState>,
    failed: AtomicBool,
    closed: AtomicBool,
    /// The last checkpoint found the file system full: the log takes writes while it has room,
    /// then they fail with [`Error::NoSpace`] until a checkpoint succeeds again.
    no_space: AtomicBool,
    pub(crate) opts: OpenOptions,
    flusher: Flusher,
    lease_timer: LeaseTimer,
    pub(crate) stats: Stats,
    /// The first record a standby still needs ([`crate::replica`]).
    pub(crate) retention: Mutex<Option<LogPos>>,
    /// The replication link flushes wait for, on a primary with standbys.
    pub(crate) replica_gate: RwLock<Option<Arc<dyn ReplicaGate>>>,
    /// On a standby: the primary LSN through which records were applied.
    pub(crate) applied_lsn: AtomicU64,
    /// On a standby: a full resync began and its image is not consistent yet ([`crate::resync`]).
    pub(crate) resyncing: AtomicBool,
    /// The first LSN of this log whose records' origins count towards the applied position
    /// (set whenever the position is set anew: see [`crate::recovery`]).
    pub(crate) applied_from: AtomicU64,
    /// Signalled after every append, so a primary's shipping task sends records as soon as
    /// they are in the log instead of polling for growth ([`Engine::appended`]).
    pub(crate) appended: tokio::sync::Notify,
    /// The volume's snapshots ([`crate::snapshot`]).
    pub(crate) snaps: RwLock<Snapshots>,
    /// Set when the volume is a clone of another volume's snapshot ([`crate::clone`]).
    pub(crate) clone: Option<CloneState>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("location", &self.meta_path)
            .field("block_size", &self.block_size)
            .field("capacity_blocks", &self.capacity_blocks())
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, ignoring poisoning (a panicking holder cannot leave these states torn: each
/// critical section completes its updates before any call that could fail).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The engine's error for a change the role machine refused.
pub(crate) fn role_error(e: RoleError) -> Error {
    match e {
        RoleError::StaleEpoch { current, presented } => Error::StaleEpoch { current, presented },
        RoleError::Busy => Error::RoleChangeInProgress,
    }
}

fn max_record_blocks(wal_bytes: u64, block_size: u32) -> u64 {
    let bs = u64::from(block_size);
    let fit = (wal_bytes / 4).saturating_sub(ALIGN) / bs;
    fit.min(MAX_RECORD_DATA / bs)
}

/// Creates a new volume in `storage`. Fails with [`Error::Exists`] if one is there.
pub fn create(storage: &dyn Storage, opts: &CreateOptions) -> Result<[u8; 16]> {
    create_with_uuid(storage, opts, *uuid::Uuid::new_v4().as_bytes())
}

/// Creates a new volume in `storage` with the identity `uuid`: the two nodes of a replicated
/// volume serve the same volume, so both are created with the UUID the configuration gives.
pub fn create_with_uuid(
    storage: &dyn Storage,
    opts: &CreateOptions,
    uuid: [u8; 16],
) -> Result<[u8; 16]> {
    let bs = opts.block_size;
    if bs != 512 && bs != 4096 {
        return Err(Error::InvalidGeometry(format!(
            "block size {bs} (must be 512 or 4096)"
        )));
    }
    if opts.capacity_bytes == 0 || !opts.capacity_bytes.is_multiple_of(u64::from(bs)) {
        return Err(Error::InvalidGeometry(format!(
            "capacity {} is not a positive multiple of {bs}",
            opts.capacity_bytes
        )));
    }
    if !opts.wal_bytes.is_multiple_of(ALIGN) || max_record_blocks(opts.wal_bytes, bs) == 0 {
        return Err(Error::TooSmall(format!(
            "write-ahead log of {} bytes cannot hold records of {bs}-byte blocks",
            opts.wal_bytes
        )));
    }
    if storage.exists(SUPERBLOCK_FILE) {
        return Err(Error::Exists(format!(
            "a volume exists at {}",
            storage.describe(SUPERBLOCK_FILE).display()
        )));
    }
    let extent = storage.create(EXTENT_FILE)?;
    extent.set_len(opts.capacity_bytes)?;
    extent.sync_data()?;
    let wal = storage.create(WAL_FILE)?;
    // Real zeros, not a sparse file: overwriting allocated blocks lets fdatasync skip metadata.
    let zeros = vec![0u8; (1 << 20).min(opts.wal_bytes as usize)];
    let mut off = 0;
    while off < opts.wal_bytes {
        let n = (opts.wal_bytes - off).min(zeros.len() as u64) as usize;
        wal.write_at(&zeros[..n], off)?;
        off += n as u64;
    }
    wal.sync_data()?;
    let meta = storage.create(SUPERBLOCK_FILE)?;
    let mut sb = Superblock {
        seq: 0,
        uuid,
        block_size: bs,
        capacity_blocks: opts.capacity_bytes / u64::from(bs),
        wal_size: opts.wal_bytes,
        generation: 1,
        checkpoint_lsn: 1,
        checkpoint_virt: 0,
        epoch: opts.epoch,
        role: opts.role,
    };
    sb.store(meta.as_ref())?;
    sb.store(meta.as_ref())?;
    storage.sync_dir()?;
    Ok(uuid)
}

impl Engine {
    /// Opens a volume, recovering from its log. Everything recovered is checkpointed into the
    /// extent before the volume serves, and the log generation advances so that records left
    /// behind a torn tail can never be replayed later.
    pub fn open<S: Storage + Clone>(storage: &S, opts: OpenOptions) -> Result<Arc<Engine>> {
        Self::open_shared(Arc::new(storage.clone()), opts)
    }

    /// [`Engine::open`] for storage the engine may keep a handle to.
    pub fn open_shared(storage: Arc<dyn Storage>, opts: OpenOptions) -> Result<Arc<Engine>> {
        Self::open_inner(storage, opts, None)
    }

    /// Opens a volume, which is a clone when `origin` is given (see [`crate::clone`]).
    pub(crate) fn open_inner(
        storage: Arc<dyn Storage>,
        opts: OpenOptions,
        origin: Option<Box<dyn Backing>>,
    ) -> Result<Arc<Engine>> {
        let clone = CloneState::open(storage.as_ref(), origin)?;
        let storage_handle = storage.clone();
        let storage = storage.as_ref();
        if !storage.exists(SUPERBLOCK_FILE) {
            return Err(Error::Exists(format!(
                "no volume at {}",
                storage.describe(SUPERBLOCK_FILE).display()
            )));
        }
        let meta = storage.open(SUPERBLOCK_FILE)?;
        let meta_path = storage.describe(SUPERBLOCK_FILE);
        // One opener at a time: a second daemon on the same data directory, or the same
        // directory configured twice, would interleave two logs in one file.
        if !meta.try_lock()? {
            return Err(Error::Locked { path: meta_path });
        }
        let sb = Superblock::load(meta.as_ref(), &meta_path)?;
        let wal = storage.open(WAL_FILE)?;
        let extent = storage.open(EXTENT_FILE)?;
        let corrupt = |reason: String| Error::CorruptSuperblock {
            path: meta_path.clone(),
            reason,
        };
        if sb.block_size != 512 && sb.block_size != 4096 {
            return Err(corrupt(format!("block size {}", sb.block_size)));
        }
        let mrb = max_record_blocks(sb.wal_size, sb.block_size);
        if !sb.wal_size.is_multiple_of(ALIGN) || mrb == 0 || wal.size()? < sb.wal_size {
            return Err(corrupt(format!(
                "log size {} does not match the log file",
                sb.wal_size
            )));
        }
        let (checkpointed_applied, applied_from) =
            match storage_handle.read_all(APPLIED_METADATA)? {
                Some(b) => decode_applied(&b),
                None => (0, 0),
            };
        let scan = recovery::scan(
            wal.as_ref(),
            &sb,
            mrb * u64::from(sb.block_size),
            applied_from,
        )?;
        // A standby's applied position is what its log holds: the newest primary record the
        // recovered log applies, or what the checkpoint stored when the log holds none since.
        let applied_lsn = checkpointed_applied.max(scan.max_origin);
        tracing::info!(
            records = scan.records,
            next_lsn = scan.next_lsn,
            applied_lsn,
            "recovered write-ahead log"
        );
        if let Some(tail) = &scan.torn_tail {
            tracing::warn!(
                volume = %meta_path.parent().unwrap_or(&meta_path).display(),
                tail = %tail,
                "cut off a torn log tail (writes never acknowledged as durable)"
            );
        }
        let role = RoleMachine::new(sb.role, sb.epoch);
        let resyncing = storage_handle
            .read_all(RESYNC_METADATA)?
            .is_some_and(|b| !b.is_empty());
        let snaps = Snapshots::load(storage)?;
        let (access_tx, _) = tokio::sync::watch::channel(role.access_state(Instant::now()));
        let engine = Arc::new(Engine {
            storage: storage_handle,
            meta,
            wal,
            extent,
            meta_path,
            uuid: sb.uuid,
            block_size: sb.block_size,
            wal_size: sb.wal_size,
            max_record_blocks: mrb,
            capacity: AtomicU64::new(sb.capacity_blocks),
            log: Mutex::new(LogState {
                next_lsn: scan.next_lsn,
                head: scan.head_virt,
                tail: sb.checkpoint_virt,
                tail_lsn: sb.checkpoint_lsn,
                generation: sb.generation,
            }),
            space_cv: Condvar::new(),
            reclaim: RwLock::new(()),
            index: RwLock::new(scan.index),
            durable_lsn: AtomicU64::new(sb.checkpoint_lsn),
            sb: Mutex::new(sb),
            sync: Mutex::new(SyncState { syncing: false }),
            sync_cv: Condvar::new(),
            flush_lock: Mutex::new(()),
            caw: RwLock::new(()),
            role: Mutex::new(role),
            access_tx,
            failed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            no_space: AtomicBool::new(false),
            opts,
            flusher: Flusher::default(),
            lease_timer: LeaseTimer::default(),
            stats: Stats::default(),
            retention: Mutex::new(None),
            replica_gate: RwLock::new(None),
            applied_lsn: AtomicU64::new(applied_lsn),
            resyncing: AtomicBool::new(resyncing),
            applied_from: AtomicU64::new(applied_from),
            appended: tokio::sync::Notify::new(),
            snaps: RwLock::new(snaps),
            clone,
        });
        // A grow whose record the log holds but whose superblock update a crash cut off (an
        // unfinished snapshot is the last operation of the log, so it sees the grown size).
        engine.redo_grow(scan.capacity_blocks)?;
        // Snapshot operations whose records survived but which did not finish come first:
        // the checkpoint below must preserve blocks for a snapshot the log says exists.
        engine.redo_snapshot_ops(&scan.snap_ops)?;
        engine.flush_once()?;
        engine.new_generation()?;
        if engine.opts.background_flusher {
            engine.flusher.start(&engine, engine.opts.flush_interval);
            engine.lease_timer.start(&engine);
        }
        // A rollback cut off by a crash is completed (it appends records, so the flusher runs).
        engine.redo_rollback()?;
        Ok(engine)
    }

    /// Starts a new log generation at the current head (the log is empty after the open-time
    /// checkpoint), so stale records of earlier runs fail the generation check.
    fn new_generation(&self) -> Result<()> {
        let _f = lock(&self.flush_lock);
        let mut log = lock(&self.log);
        let mut sb = lock(&self.sb);
        sb.generation += 1;
        sb.checkpoint_lsn = log.next_lsn;
        sb.checkpoint_virt = log.head;
        sb.store(self.meta.as_ref()).map_err(|e| self.fail(e))?;
        log.generation = sb.generation;
        log.tail = log.head;
        log.tail_lsn = log.next_lsn;
        Ok(())
    }

    /// The volume's UUID: the identity both protocols report.
    pub fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    /// Logical block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Capacity in logical blocks.
    pub fn capacity_blocks(&self) -> u64 {
        self.capacity.load(Ordering::Acquire)
    }

    /// Largest number of blocks one log record carries (larger writes become several records).
    pub fn max_record_blocks(&self) -> u64 {
        self.max_record_blocks
    }

    /// Where the superblock lives (for messages).
    pub(crate) fn location(&self) -> &std::path::Path {
        &self.meta_path
    }

    /// The volume's directory (where its superblock lives), which names the volume in log
    /// lines: the engine does not know the name its user gave it.
    pub(crate) fn volume_dir(&self) -> std::path::PathBuf {
        self.meta_path
            .parent()
            .map_or_else(|| self.meta_path.clone(), std::path::Path::to_path_buf)
    }

    /// Whether every write appended so far is durable in the log (no write completed since the
    /// last log sync). Lets tests see what a completion promised without cutting the power.
    pub fn all_durable(&self) -> bool {
        self.durable_lsn.load(Ordering::Acquire) >= lock(&self.log).next_lsn
    }

    /// Whether the file system under the volume ran out of space at the last checkpoint (writes
    /// are refused once the log is full; see [`Error::NoSpace`]).
    pub fn space_exhausted(&self) -> bool {
        self.no_space.load(Ordering::Acquire)
    }

    /// Runs `f`, containing a panic inside it: the engine cannot know what a panic left half
    /// done, so it is marked failed (everything is refused until the volume is reopened and
    /// recovered from its log), the panic is logged, and the caller gets [`Error::Failed`]
    /// instead of an unwinding thread that would strand every request queued behind it.
    pub(crate) fn contain<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            self.fail(Error::Io(std::io::Error::other(format!(
                "a volume job panicked: {what}"
            ))));
            Error::Failed
        })
    }

    /// Marks the engine failed after an I/O error and passes the error on.
    pub(crate) fn fail(&self, e: impl Into<Error>) -> Error {
        let e = e.into();
        if !self.failed.swap(true, Ordering::SeqCst) {
            tracing::error!(
                volume = %self.volume_dir().display(),
                error = %e,
                "volume failed; it must be reopened"
            );
        }
        self.space_cv.notify_all();
        self.sync_cv.notify_all();
        e
    }

    pub(crate) fn check_alive(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Failed);
        }
        Ok(())
    }

    pub(crate) fn check_range(&self, lba: u64, blocks: u64) -> Result<()> {
        let capacity = self.capacity_blocks();
        if lba.checked_add(blocks).is_none_or(|end| end > capacity) {
            return Err(Error::OutOfRange {
                lba,
                blocks,
                capacity,
            });
        }
        Ok(())
    }

    pub(crate) fn blocks_of(&self, len: usize) -> Result<u64> {
        let bs = self.block_size as usize;
        if !len.is_multiple_of(bs) {
            return Err(Error::Misaligned {
                len,
                block_size: self.block_size,
            });
        }
        Ok((len / bs) as u64)
    }

    /// Refuses host I/O unless the role, epoch and lease make this path optimized.
    pub(crate) fn gate(&self) -> Result<()> {
        match self.access_state() {
            AccessState::Optimized => Ok(()),
            other => Err(Error::NotServing(other)),
        }
    }

    // ----- roles -------------------------------------------------------------------------

    /// The access state hosts should see now.
    pub fn access_state(&self) -> AccessState {
        lock(&self.role).access_state(Instant::now())
    }

    /// Role, epoch, lease and transition flag.
    pub fn role_state(&self) -> RoleState {
        lock(&self.role).state()
    }

    /// A receiver that sees every change of the access state.
    pub fn watch_access(&self) -> tokio::sync::watch::Receiver<AccessState> {
        self.access_tx.subscribe()
    }

    /// Recomputes the access state and tells watchers if it changed.
    pub(crate) fn publish_access(&self) {
        let now = self.access_state();
        self.access_tx.send_if_modified(|cur| {
            let changed = *cur != now;
            *cur = now;
            changed
        });
    }

    /// Changes the role under `epoch`, which must not be older than the current one. The new
    /// role and epoch are durable in the superblock before they take effect; meanwhile hosts see
    /// the volume as transitioning.
    pub fn set_role(&self, role: Role, epoch: u64) -> Result<()> {
        self.check_alive()?;
        let change = lock(&self.role).begin(role, epoch).map_err(role_error)?;
        self.persist_role(change)
    }

    /// Becomes primary under a new epoch (the current one plus one). Refused while a full
    /// resync has not completed: the image is a mix of copied regions, not any state the
    /// primary ever acknowledged.
    pub fn promote(&self) -> Result<()> {
        self.check_alive()?;
        if self.resync_incomplete() {
            return Err(Error::Invalid(
                "a full resync of this volume has not completed: its image is not consistent, \
                 it cannot be promoted"
                    .into(),
            ));
        }
        // Everything this standby received (plain writes a host saw completed on the old
        // primary among it) is made durable before it serves.
        self.sync_wal()?;
        let change = lock(&self.role).promote().map_err(role_error)?;
        self.persist_role(change)
    }

    /// Becomes a standby under a new epoch (the current one plus one).
    pub fn demote(&self) -> Result<()> {
        self.check_alive()?;
        let change = lock(&self.role).demote().map_err(role_error)?;
        self.persist_role(change)
    }

    /// Tells the volume that a node holds epoch `seen`: a primary meeting a newer epoch stops
    /// serving at once (its paths turn unavailable before this returns) and persists that it is
    /// stale under that epoch; any other role adopts the newer epoch.
    pub fn observe_epoch(&self, seen: u64) -> Result<()> {
        let change = lock(&self.role).observe_epoch(seen);
        self.publish_access();
        match change {
            Some(c) => self.persist_role(c),
            None => Ok(()),
        }
    }

    /// Persists a change the role machine started, then completes it.
    pub(crate) fn persist_role(&self, change: Change) -> Result<()> {
        self.publish_access();
        let persisted = {
            let mut sb = lock(&self.sb);
            sb.role = change.role;
            sb.epoch = change.epoch;
            sb.store(self.meta.as_ref())
        };
        lock(&self.role).finish(change, persisted.is_ok());
        self.publish_access();
        // The lease deadline counts again once the change is done.
        self.lease_timer.lease_changed();
        persisted.map_err(|e| self.fail(e))
    }

    /// Grants (or with `None` removes) a lease: a primary serves only until it ends.
    pub fn set_lease(&self, until: Option<Instant>) {
        lock(&self.role).set_lease(until);
        self.publish_access();
        self.lease_timer.lease_changed();
    }

    /// Refuses a request carrying an epoch older than the volume's (fencing of an old primary).
    pub fn check_epoch(&self, presented: u64) -> Result<()> {
        lock(&self.role).check_epoch(presented).map_err(role_error)
    }

    // ----- writes ------------------------------------------------------------------------

    /// Writes whole blocks at `lba`. With `fua` the data is durable when this returns.
    /// Without `fua` it returns once every in-sync standby received the data (see
    /// [`crate::replica::ReplicaGate::wait_received`]).
    pub fn write(&self, lba: u64, data: &[u8], fua: bool) -> Result<()> {
        {
            let _c = self.caw.read().unwrap_or_else(|e| e.into_inner());
            self.write_locked(lba, data, fua)?;
        }
        if !fua {
            self.wait_received()?;
        }
        Ok(())
    }

    /// Appends a write (and with `fua` syncs it here and on the standbys); a plain write is
    /// not waited for on the standbys here: the caller does that (without holding locks).
    pub(crate) fn write_locked(&self, lba: u64, data: &[u8], fua: bool) -> Result<()> {
        self.check_alive()?;
        self.gate()?;
        self.check_writable()?;
        let blocks = self.blocks_of(data.len())?;
        self.check_range(lba, blocks)?;
        let chunk = (self.max_record_blocks * u64::from(self.block_size)) as usize;
        let mut cur = lba;
        for part in data.chunks(chunk.max(1)) {
            let n = part.len() as u64 / u64::from(self.block_size);
            self.append(Kind::Write, cur, n, part)?;
            cur += n;
        }
        self.stats.add_write(data.len() as u64);
        if fua {
            self.sync_replicated()?;
        }
        Ok(())
    }

    /// Deallocates blocks: they read as zeros and their extent space is released.
    pub fn trim(&self, lba: u64, blocks: u64) -> Result<()> {
        self.zero_range(Kind::Trim, lba, blocks)?;
        self.wait_received()
    }

    /// Writes zeros over blocks, stored thin (the same as a trim on disk).
    pub fn write_zeroes(&self, lba: u64, blocks: u64, fua: bool) -> Result<()> {
        self.zero_range(Kind::Zero, lba, blocks)?;
        if fua {
            self.sync_replicated()
        } else {
            self.wait_received()
        }
    }

    fn zero_range(&self, kind: Kind, lba: u64, blocks: u64) -> Result<()> {
        let _c = self.caw.read().unwrap_or_else(|e| e.into_inner());
        self.check_alive()?;
        self.gate()?;
        self.check_writable()?;
        self.check_range(lba, blocks)?;
        let mut cur = lba;
        let end = lba + blocks;
        while cur < end {
            let n = (end - cur).min(u64::from(u32::MAX));
            self.append(kind, cur, n, &[])?;
            cur += n;
        }
        self.stats.add_trim(blocks);
        Ok(())
    }

    /// Compares `compare` with the blocks at `lba` and, only if equal, writes `write` there, with
    /// no other write to the volume in between (SCSI COMPARE AND WRITE, NVMe fused compare).
    pub fn compare_and_write(
        &self,
        lba: u64,
        compare: &[u8],
        write: &[u8],
        fua: bool,
    ) -> Result<()> {
        {
            let _c = self.caw.write().unwrap_or_else(|e| e.into_inner());
            if compare.len() != write.len() {
                return Err(Error::Invalid(
                    "compare and write buffers differ in length".into(),
                ));
            }
            let mut cur = vec![0u8; compare.len()];
            self.read_into(lba, &mut cur)?;
            if let Some(i) = cur.iter().zip(compare).position(|(a, b)| a != b) {
                return Err(Error::Miscompare { offset: i as u64 });
            }
            self.write_locked(lba, write, fua)?;
        }
        if !fua {
            self.wait_received()?;
        }
        Ok(())
    }

    /// Appends one record and indexes it.
    pub(crate) fn append(&self, kind: Kind, lba: u64, blocks: u64, data: &[u8]) -> Result<()> {
        self.append_from(kind, lba, blocks, data, 0)
    }

    /// [`Engine::append`] for a record that applies (or completes applying) the primary's
    /// record `origin` on a standby (0: none).
    pub(crate) fn append_from(
        &self,
        kind: Kind,
        lba: u64,
        blocks: u64,
        data: &[u8],
        origin: u64,
    ) -> Result<()> {
        self.append_record(kind, lba, blocks, data, origin)
            .map(|_| ())
    }

    /// Appends a record that changes no block (a snapshot operation: `id` in the `lba` field,
    /// `data` its payload) and returns its LSN.
    pub(crate) fn append_lsn(&self, kind: Kind, id: u64, data: &[u8], origin: u64) -> Result<u64> {
        self.append_record(kind, id, 0, data, origin)
    }

    /// [`Engine::append_from`], returning the record's LSN.
    fn append_record(
        &self,
        kind: Kind,
        lba: u64,
        blocks: u64,
        data: &[u8],
        origin: u64,
    ) -> Result<u64> {
        let data_crc = crc32c::crc32c(data);
        let rlen = record_len(data.len());
        let mut buf = vec![0u8; rlen as usize];
        let w = self.wal_size;
        let epoch = lock(&self.role).state().epoch;
        let mut log = lock(&self.log);
        let mut waited_since: Option<Instant> = None;
        let wrap = loop {
            self.check_alive()?;
            let phys = log.head % w;
            let wrap = if phys + rlen > w { w - phys } else { 0 };
            if log.head + wrap + rlen - log.tail <= w {
                break wrap;
            }
            if self.no_space.load(Ordering::Acquire) {
                // The flusher cannot free log space until the file system has room: refuse
                // now (the flusher keeps retrying) instead of waiting out the timeout.
                self.request_flush();
                if let Some(since) = waited_since {
                    self.stats.log_full_wait_ended(since.elapsed());
                }
                return Err(Error::NoSpace);
            }
            let since = *waited_since.get_or_insert_with(|| {
                self.stats.log_full_wait_started();
                Instant::now()
            });
            if since.elapsed() >= self.opts.log_full_timeout {
                self.stats.log_full_wait_ended(since.elapsed());
                return Err(Error::LogFull {
                    waited: since.elapsed(),
                });
            }
            log = if self.opts.background_flusher {
                self.request_flush();
                self.space_cv
                    .wait_timeout(log, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            } else {
                drop(log);
                self.flush_once()?;
                lock(&self.log)
            };
        };
        if let Some(since) = waited_since {
            self.stats.log_full_wait_ended(since.elapsed());
        }
        let synced_lsn = self.durable_lsn.load(Ordering::Acquire);
        if wrap > 0 {
            let hdr = Header {
                lsn: log.next_lsn,
                generation: log.generation,
                epoch,
                synced_lsn,
                lba: 0,
                blocks: 0,
                data_len: 0,
                kind: Kind::Wrap,
                origin: 0,
            };
            let mut wbuf = [0u8; ALIGN as usize];
            hdr.encode_record(&[], crc32c::crc32c(&[]), &mut wbuf);
            self.wal
                .write_at(&wbuf, log.head % w)
                .map_err(|e| self.fail(e))?;
            log.next_lsn += 1;
            log.head += wrap;
        }
        let lsn = log.next_lsn;
        let hdr = Header {
            lsn,
            generation: log.generation,
            epoch,
            synced_lsn,
            lba,
            blocks: blocks as u32,
            data_len: data.len() as u32,
            kind,
            origin,
        };
        hdr.encode_record(data, data_crc, &mut buf);
        self.wal
            .write_at(&buf, log.head % w)
            .map_err(|e| self.fail(e))?;
        let loc = match kind {
            Kind::Write => Some(Loc::Log {
                virt: log.head + HEADER_LEN as u64,
                lsn,
            }),
            Kind::Trim | Kind::Zero => Some(Loc::Zero { lsn }),
            Kind::Wrap | Kind::Snapshot | Kind::SnapshotDelete | Kind::Grow => None,
        };
        if let Some(loc) = loc {
            self.index
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(lba, blocks, loc);
        }
        log.next_lsn += 1;
        log.head += rlen;
        self.stats.set_log_used(log.head - log.tail);
        drop(log);
        self.appended.notify_one();
        Ok(lsn)
    }

    /// Makes every write acknowledged so far durable. Concurrent callers share one fdatasync.
    pub fn flush(&self) -> Result<()> {
        self.check_alive()?;
        self.stats.add_flush();
        self.sync_replicated()
    }

    /// Group commit: wait for an in-progress sync that covers us, or become the leader.
    pub(crate) fn sync_wal(&self) -> Result<()> {
        let target = lock(&self.log).next_lsn;
        let mut s = lock(&self.sync);
        loop {
            self.check_alive()?;
            if self.durable_lsn.load(Ordering::Acquire) >= target {
                return Ok(());
            }
            if s.syncing {
                s = self.sync_cv.wait(s).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            s.syncing = true;
            drop(s);
            let upto = lock(&self.log).next_lsn;
            let r = self.wal.sync_data();
            self.stats.add_log_sync();
            s = lock(&self.sync);
            s.syncing = false;
            match r {
                Ok(()) => {
                    self.durable_lsn.fetch_max(upto, Ordering::AcqRel);
                    self.sync_cv.notify_all();
                }
                Err(e) => {
                    drop(s);
                    return Err(self.fail(e));
                }
            }
        }
    }

    // ----- reads -------------------------------------------------------------------------

    /// Reads `blocks` blocks at `lba`.
    pub fn read(&self, lba: u64, blocks: u64) -> Result<Vec<u8>> {
        let len = blocks
            .checked_mul(u64::from(self.block_size))
            .filter(|l| *l <= 1 << 31)
            .ok_or(Error::OutOfRange {
                lba,
                blocks,
                capacity: self.capacity_blocks(),
            })?;
        self.check_range(lba, blocks)?;
        let mut buf = vec![0u8; len as usize];
        self.read_into(lba, &mut buf)?;
        Ok(buf)
    }

    /// Reads whole blocks at `lba` into `buf`: the newest data, never-written and trimmed blocks
    /// as zeros.
    pub fn read_into(&self, lba: u64, buf: &mut [u8]) -> Result<()> {
        self.read_pieces(lba, buf, false).map(|_| ())
    }

    /// [`Engine::read_into`] for callers on async threads: succeeds only if every piece is in
    /// memory (page cache), and returns `None` when the read would have to wait for the disk.
    pub(crate) fn try_read_nowait(&self, lba: u64, buf: &mut [u8]) -> Option<Result<()>> {
        match self.read_pieces(lba, buf, true) {
            Ok(true) => Some(Ok(())),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// The read path of both: the index laid over the extent. With `nowait`, returns
    /// `Ok(false)` as soon as a piece would wait for the disk.
    fn read_pieces(&self, lba: u64, buf: &mut [u8], nowait: bool) -> Result<bool> {
        self.check_alive()?;
        self.gate()?;
        let blocks = self.blocks_of(buf.len())?;
        self.check_range(lba, blocks)?;
        let bs = u64::from(self.block_size);
        let read = |file: &Arc<dyn BlockFile>, out: &mut [u8], off: u64| -> Result<bool> {
            if nowait {
                Ok(file.read_at_nowait(out, off)?)
            } else {
                file.read_at(out, off)?;
                Ok(true)
            }
        };
        let _r = self.reclaim.read().unwrap_or_else(|e| e.into_inner());
        let pieces = {
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            if index.entries() == 0 && self.clone.is_none() {
                // Everything is in the extent (the common case once the flusher has run).
                drop(index);
                let done = read(&self.extent, buf, lba * bs)?;
                if done {
                    self.stats.add_read(buf.len() as u64);
                }
                return Ok(done);
            }
            index.lookup(lba, blocks)
        };
        for (start, len, loc) in pieces {
            let from = ((start - lba) * bs) as usize;
            let to = from + (len * bs) as usize;
            let out = &mut buf[from..to];
            let done = match loc {
                None if self.clone.is_some() => {
                    // A clone's unwritten blocks come from its origin snapshot.
                    if nowait {
                        return Ok(false);
                    }
                    self.read_base(start, out)?;
                    true
                }
                None => read(&self.extent, out, start * bs)?,
                Some(Loc::Zero { .. }) => {
                    out.fill(0);
                    true
                }
                Some(Loc::Log { virt, .. }) => read(&self.wal, out, virt % self.wal_size)?,
            };
            if !done {
                return Ok(false);
            }
        }
        self.stats.add_read(buf.len() as u64);
        Ok(true)
    }

    // ----- checkpoint --------------------------------------------------------------------

    /// Runs one checkpoint in the calling thread. Returns whether there was anything to do.
    ///
    /// It takes everything appended so far, makes it durable in the log, writes each block's
    /// newest logged version into the extent (punching holes for trimmed ranges), syncs the
    /// extent, persists the new checkpoint in the superblock, and only then drops the copied
    /// entries from the index and advances the log tail. A crash at any point leaves the old
    /// checkpoint, from which recovery replays the same records again.
    pub fn flush_once(&self) -> Result<bool> {
        let _only_one = lock(&self.flush_lock);
        self.check_alive()?;
        // Read before the target: every record counted in it is below the target.
        let applied = self.applied_lsn.load(Ordering::Acquire);
        let applied_from = self.applied_from.load(Ordering::Acquire);
        let (target_lsn, target_virt) = {
            let log = lock(&self.log);
            if log.next_lsn == log.tail_lsn {
                return Ok(false);
            }
            (log.next_lsn, log.head)
        };
        self.sync_wal()?;
        let entries = self
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .below(target_lsn);
        let tail = self.retained_tail(
            LogPos {
                virt: target_virt,
                lsn: target_lsn,
            },
            target_virt,
        );
        if entries.is_empty() && tail.lsn == lock(&self.log).tail_lsn {
            // Only records a standby still needs are left, and they are in the extent already.
            return Ok(false);
        }
        let bs = u64::from(self.block_size());
        // Copy-on-write first: what the newest snapshot needs of the blocks about to be
        // overwritten is durable in its delta store before the extent changes.
        if let Err(e) = self.before_extent_copy(&entries).and_then(|()| {
            copy_to_extent(
                &entries,
                bs,
                self.wal.as_ref(),
                self.wal_size,
                self.extent.as_ref(),
            )
        }) {
            if is_no_space(&e) {
                // A write the file system refused for space changed nothing durable: the log
                // still holds every record and the checkpoint did not move, so the next
                // checkpoint copies the same records again once there is room.
                if !self.no_space.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        volume = %self.volume_dir().display(),
                        error = %e,
                        "no space left for the volume's data: writes are refused once the log \
                         is full, until space is freed"
                    );
                }
                return Err(Error::NoSpace);
            }
            return Err(self.fail(e));
        }
        self.extent.sync_data().map_err(|e| self.fail(e))?;
        // Everything below the target is in the extent now; the tail stops at the retention
        // floor when a standby still needs records (recovery then replays them again, which
        // changes nothing).
        // The applied position goes first: once the new checkpoint is stored, recovery no
        // longer sees the records it covers, so it must find their position stored already.
        if applied != 0 {
            self.storage
                .replace(APPLIED_METADATA, &encode_applied(applied, applied_from))
                .map_err(|e| self.fail(e))?;
        }
        {
            let mut sb = lock(&self.sb);
            sb.checkpoint_lsn = tail.lsn;
            sb.checkpoint_virt = tail.virt;
            sb.store(self.meta.as_ref()).map_err(|e| self.fail(e))?;
        }
        {
            let _w = self.reclaim.write().unwrap_or_else(|e| e.into_inner());
            self.index
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove_below(target_lsn);
            let mut log = lock(&self.log);
            log.tail = tail.virt;
            log.tail_lsn = tail.lsn;
            self.stats.set_log_used(log.head - log.tail);
        }
        if self.no_space.swap(false, Ordering::AcqRel) {
            tracing::info!(
                volume = %self.volume_dir().display(),
                "space available again: the volume takes writes"
            );
        }
        self.space_cv.notify_all();
        self.stats.add_flusher_run(entries.len() as u64);
        Ok(true)
    }

    /// Asks the background flusher to run now.
    pub(crate) fn request_flush(&self) {
        self.flusher.request();
    }

    // ----- resize and shutdown -----------------------------------------------------------

    /// Shrinks the volume to `blocks` blocks (at least one), discarding everything beyond.
    ///
    /// Meant for a volume no host uses (the caller checks that): new requests beyond the new
    /// end are refused at once, everything logged is checkpointed into the extent, then the
    /// superblock records the new capacity (synced) and only then is the extent truncated. A
    /// crash before the superblock write leaves the old capacity and data; after it, the new
    /// capacity, with at most a stale extent tail that [`Engine::grow`] cuts off before it
    /// extends. Growing is refused here (see `Engine::grow`).
    pub fn shrink(&self, blocks: u64) -> Result<()> {
        self.check_alive()?;
        let old = self.capacity_blocks();
        if blocks > old {
            return Err(Error::Invalid(format!(
                "cannot shrink from {old} to {blocks} blocks: that is a grow"
            )));
        }
        if blocks == 0 {
            return Err(Error::InvalidGeometry(
                "a volume needs at least one block".into(),
            ));
        }
        if blocks == old {
            return Ok(());
        }
        // Refuse requests beyond the new end from now on, then move every logged block into
        // the extent, so no record after the checkpoint lies beyond the new end.
        self.capacity.store(blocks, Ordering::Release);
        let shrunk = (|| {
            while self.flush_once()? {}
            let mut sb = lock(&self.sb);
            sb.capacity_blocks = blocks;
            sb.store(self.meta.as_ref()).map_err(|e| self.fail(e))?;
            drop(sb);
            let bytes = blocks * u64::from(self.block_size);
            self.extent.set_len(bytes).map_err(|e| self.fail(e))?;
            self.extent.sync_data().map_err(|e| self.fail(e))
        })();
        if shrunk.is_err() && lock(&self.sb).capacity_blocks == old {
            self.capacity.store(old, Ordering::Release);
        }
        shrunk
    }

    /// Flushes everything into the extent, stops the flusher and refuses further requests.
    pub fn close(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.flusher.stop();
        self.lease_timer.stop();
        let r = if self.failed.load(Ordering::Acquire) {
            Ok(())
        } else {
            self.flush_once().map(|_| ())
        };
        self.closed.store(true, Ordering::Release);
        self.space_cv.notify_all();
        self.meta.unlock();
        r
    }

    /// Stores a small named piece of volume metadata (for example the persistent-reservation
    /// state) atomically and durably beside the volume's files.
    pub fn save_metadata(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.check_alive()?;
        if !name.starts_with("meta-") {
            return Err(Error::Invalid(format!(
                "metadata name {name:?} must start with meta-"
            )));
        }
        self.storage.replace(name, bytes)?;
        Ok(())
    }

    /// Reads what [`Engine::save_metadata`] stored, if anything.
    pub fn load_metadata(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.storage.read_all(name)?)
    }

    /// Provisioning status at `lba`: whether the block is mapped (holds data) or deallocated
    /// (reads as zeros without storage behind it), and for how many blocks (at most `max`) that
    /// status continues.
    pub fn lba_status(&self, lba: u64, max: u64) -> Result<(bool, u64)> {
        self.check_alive()?;
        self.check_range(lba, 1)?;
        let max = max.min(self.capacity_blocks() - lba).max(1);
        let bs = u64::from(self.block_size);
        let _r = self.reclaim.read().unwrap_or_else(|e| e.into_inner());
        let pieces = self
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .lookup(lba, max);
        let Some(&(_, len, loc)) = pieces.first() else {
            return Ok((false, max));
        };
        match loc {
            Some(Loc::Log { .. }) => Ok((true, len)),
            Some(Loc::Zero { .. }) => Ok((false, len)),
            None => {
                let mut len = len;
                if let Some(c) = &self.clone {
                    // Blocks a clone never wrote hold its origin's data: reported mapped.
                    let (written, n) = c
                        .written
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .run(lba, len);
                    if !written {
                        return Ok((true, n));
                    }
                    len = n;
                }
                let (mapped, bytes) = self.extent.allocation(lba * bs, len * bs)?;
                Ok((mapped, (bytes / bs).max(1)))
            }
        }
    }

    /// Counters for metrics and tests.
    pub fn stats(&self) -> crate::stats::StatsSnapshot {
        let idx = self.index.read().unwrap_or_else(|e| e.into_inner());
        self.stats.snapshot(idx.blocks(), self.wal_size)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl Flush for Engine {
    fn flush_once(&self) -> Result<bool> {
        Engine::flush_once(self)
    }

    fn log_pending(&self) -> bool {
        let log = lock(&self.log);
        log.next_lsn != log.tail_lsn
    }

    /// More than an eighth of the log in use (half on a standby, see [`Flush::lazy`]): worth
    /// a flusher run right away.
    fn log_pressure(&self) -> bool {
        let share = if self.lazy() { 2 } else { 8 };
        let log = lock(&self.log);
        (log.head - log.tail) * share >= self.wal_size
    }

    /// A standby's log is read only at a promotion or a restart: it is checkpointed under
    /// log-space pressure, not every interval.
    fn lazy(&self) -> bool {
        self.role_state().role == Role::Standby
    }

    fn location(&self) -> std::path::PathBuf {
        self.volume_dir()
    }
}

impl LeaseClock for Engine {
    fn lease_until(&self) -> Option<Instant> {
        lock(&self.role).poll_timeout()
    }

    fn tick(&self) {
        self.publish_access();
    }
}
