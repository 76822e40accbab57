//! A simulated disk for crash testing, in the spirit of redb's crash-point fuzzing.
//!
//! Every file keeps its durable bytes apart from the writes made since the last sync. A test can
//! arm a crash after any number of I/O operations: from then on every operation fails, as if power
//! was lost mid-way. [`SimStorage::crash`] then makes a new disk where each unsynced write was
//! lost, kept, or torn at 512-byte sector granularity, chosen by a seeded generator, so a test
//! replays exactly.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::storage::{BlockFile, Storage};

/// The sector size at which a lost power tears writes.
pub const SECTOR: usize = 512;

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
    Punch { offset: u64, len: u64 },
}

#[derive(Debug, Default, Clone)]
struct FileState {
    durable: Vec<u8>,
    /// The file as the running program sees it.
    current: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Debug, Default)]
struct Shared {
    files: Mutex<HashMap<String, FileState>>,
    /// Operations left before the simulated power loss; `u64::MAX` means never.
    ops_left: AtomicU64,
    dead: AtomicBool,
    ops_done: AtomicU64,
}

/// A disk that can lose power. Cloning shares the same disk.
#[derive(Debug, Clone)]
pub struct SimStorage {
    shared: Arc<Shared>,
}

impl Default for SimStorage {
    fn default() -> Self {
        Self::new()
    }
}

fn dead_error() -> io::Error {
    io::Error::other("simulated power loss")
}

/// A small deterministic generator (xorshift64*), so crash outcomes replay from a seed.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator from a seed (zero is remapped).
    pub fn new(seed: u64) -> Self {
        SimRng(seed | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn apply(buf: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::Write { offset, data } => {
            let end = *offset as usize + data.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[*offset as usize..end].copy_from_slice(data);
        }
        Pending::SetLen(len) => buf.resize(*len as usize, 0),
        Pending::Punch { offset, len } => {
            let start = (*offset as usize).min(buf.len());
            let end = (*offset as usize + *len as usize).min(buf.len());
            buf[start..end].fill(0);
        }
    }
}

impl SimStorage {
    /// An empty disk that never crashes until armed.
    pub fn new() -> Self {
        let shared = Shared::default();
        shared.ops_left.store(u64::MAX, Ordering::SeqCst);
        SimStorage {
            shared: Arc::new(shared),
        }
    }

    /// Loses power after `ops` more mutating operations (writes, syncs, length changes, punches):
    /// the `ops`+1-th fails and so does everything after it.
    pub fn arm_crash_after(&self, ops: u64) {
        self.shared.ops_left.store(ops, Ordering::SeqCst);
    }

    /// Whether power has been lost.
    pub fn is_dead(&self) -> bool {
        self.shared.dead.load(Ordering::SeqCst)
    }

    /// How many mutating operations have completed so far.
    pub fn ops_done(&self) -> u64 {
        self.shared.ops_done.load(Ordering::SeqCst)
    }

    /// Cuts the power now and returns the disk as it is found on restart: each unsynced
    /// operation is dropped, applied, or (for writes) applied to a random subset of its sectors.
    pub fn crash(&self, rng: &mut SimRng) -> SimStorage {
        self.shared.dead.store(true, Ordering::SeqCst);
        let files = self.shared.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = HashMap::new();
        for (name, st) in files.iter() {
            let mut disk = st.durable.clone();
            for op in &st.pending {
                match rng.below(3) {
                    0 => {}
                    1 => apply(&mut disk, op),
                    _ => match op {
                        Pending::Write { offset, data } => {
                            for (i, chunk) in data.chunks(SECTOR).enumerate() {
                                if rng.below(2) == 0 {
                                    let part = Pending::Write {
                                        offset: offset + (i * SECTOR) as u64,
                                        data: chunk.to_vec(),
                                    };
                                    apply(&mut disk, &part);
                                }
                            }
                        }
                        other => apply(&mut disk, other),
                    },
                }
            }
            out.insert(
                name.clone(),
                FileState {
                    current: disk.clone(),
                    durable: disk,
                    pending: Vec::new(),
                },
            );
        }
        let shared = Shared {
            files: Mutex::new(out),
            ..Shared::default()
        };
        shared.ops_left.store(u64::MAX, Ordering::SeqCst);
        SimStorage {
            shared: Arc::new(shared),
        }
    }

    /// Flips one byte of a file's durable and current contents (for corruption tests).
    pub fn corrupt_byte(&self, name: &str, offset: u64) {
        let mut files = self.shared.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(st) = files.get_mut(name) {
            for buf in [&mut st.durable, &mut st.current] {
                if let Some(b) = buf.get_mut(offset as usize) {
                    *b ^= 0xff;
                }
            }
        }
    }

    fn take_op(&self) -> io::Result<()> {
        if self.is_dead() {
            return Err(dead_error());
        }
        let left = self.shared.ops_left.load(Ordering::SeqCst);
        if left == 0 {
            self.shared.dead.store(true, Ordering::SeqCst);
            return Err(dead_error());
        }
        if left != u64::MAX {
            self.shared.ops_left.store(left - 1, Ordering::SeqCst);
        }
        self.shared.ops_done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct SimFile {
    disk: SimStorage,
    name: String,
}

impl SimFile {
    fn with<R>(&self, f: impl FnOnce(&mut FileState) -> R) -> R {
        let mut files = self
            .disk
            .shared
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let st = files.entry(self.name.clone()).or_default();
        f(st)
    }

    fn mutate(&self, op: Pending) -> io::Result<()> {
        self.disk.take_op()?;
        self.with(|st| {
            apply(&mut st.current, &op);
            st.pending.push(op);
        });
        Ok(())
    }
}

impl BlockFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.disk.is_dead() {
            return Err(dead_error());
        }
        self.with(|st| {
            let start = (offset as usize).min(st.current.len());
            let end = (offset as usize + buf.len()).min(st.current.len());
            let n = end - start;
            buf[..n].copy_from_slice(&st.current[start..end]);
            buf[n..].fill(0);
        });
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.mutate(Pending::Write {
            offset,
            data: buf.to_vec(),
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.disk.take_op()?;
        self.with(|st| {
            let pending = std::mem::take(&mut st.pending);
            for op in &pending {
                apply(&mut st.durable, op);
            }
        });
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.with(|st| st.current.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.mutate(Pending::SetLen(len))
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        self.mutate(Pending::Punch { offset, len })
    }

    /// The simulated file system keeps sectors of zeros as holes (like one that detects zero
    /// writes): a sector holding any non-zero byte is data, anything else (past the end too)
    /// is a hole. Enough for what the engine asks (`SEEK_DATA`/`SEEK_HOLE` runs), exact at
    /// sector granularity.
    fn allocation(&self, offset: u64, max: u64) -> io::Result<(bool, u64)> {
        if self.disk.is_dead() {
            return Err(dead_error());
        }
        Ok(self.with(|st| {
            let sector = SECTOR as u64;
            let is_data = |at: u64| -> bool {
                let start = (at - at % sector) as usize;
                let end = (start + SECTOR).min(st.current.len());
                st.current
                    .get(start..end)
                    .is_some_and(|s| s.iter().any(|&b| b != 0))
            };
            let first = is_data(offset);
            let mut len = sector - offset % sector;
            while len < max && is_data(offset + len) == first {
                len += sector;
            }
            (first, len.min(max))
        }))
    }
}

impl Storage for SimStorage {
    fn open(&self, name: &str) -> io::Result<Arc<dyn BlockFile>> {
        if !self.exists(name) {
            return Err(io::Error::new(io::ErrorKind::NotFound, name.to_string()));
        }
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            name: name.to_string(),
        }))
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn BlockFile>> {
        self.take_op()?;
        let mut files = self.shared.files.lock().unwrap_or_else(|e| e.into_inner());
        files.insert(name.to_string(), FileState::default());
        drop(files);
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            name: name.to_string(),
        }))
    }

    fn exists(&self, name: &str) -> bool {
        let files = self.shared.files.lock().unwrap_or_else(|e| e.into_inner());
        files.contains_key(name)
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.take_op()
    }

    fn describe(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("sim:{name}"))
    }

    fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.take_op()?;
        let mut files = self.shared.files.lock().unwrap_or_else(|e| e.into_inner());
        files.insert(
            name.to_string(),
            FileState {
                durable: bytes.to_vec(),
                current: bytes.to_vec(),
                pending: Vec::new(),
            },
        );
        Ok(())
    }

    /// Removal is durable at once (like [`Storage::replace`]): a crash keeps the file or not
    /// as of the call.
    fn remove(&self, name: &str) -> io::Result<()> {
        self.take_op()?;
        let mut files = self.shared.files.lock().unwrap_or_else(|e| e.into_inner());
        files.remove(name);
        Ok(())
    }

    fn read_all(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        if self.is_dead() {
            return Err(dead_error());
        }
        let files = self.shared.files.lock().unwrap_or_else(|e| e.into_inner());
        Ok(files.get(name).map(|f| f.current.clone()))
    }
}
