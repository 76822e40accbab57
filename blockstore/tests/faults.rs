//! Disk faults and file hygiene of one volume on real files: private file modes, the advisory
//! lock that keeps a second process off a volume, space exhaustion of the file system under
//! the extent (writes refused with a typed error, reads served, writes resumed once space is
//! freed, nothing acknowledged lost), and a panic inside a volume job.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockstore::engine::{create, CreateOptions, Engine, OpenOptions};
use blockstore::sim::SimStorage;
use blockstore::storage::{BlockFile, Storage};
use blockstore::tmpfs::{fill, Tmpfs};
use blockstore::{DirStorage, Error, Volume};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn volume_files_and_metadata_are_private_to_the_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vol");
    let storage = DirStorage::new(&dir);
    create(
        &storage,
        &CreateOptions {
            capacity_bytes: 1 << 20,
            wal_bytes: 1 << 20,
            ..CreateOptions::default()
        },
    )
    .unwrap();
    let e = Engine::open(&storage, OpenOptions::default()).unwrap();
    e.save_metadata("meta-test", b"x").unwrap();
    for f in ["superblock", "wal", "extent", "meta-test"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&dir), 0o700, "the volume directory");
}

#[test]
fn a_second_open_of_an_open_volume_is_refused_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = DirStorage::new(tmp.path());
    create(
        &storage,
        &CreateOptions {
            capacity_bytes: 1 << 20,
            wal_bytes: 1 << 20,
            ..CreateOptions::default()
        },
    )
    .unwrap();
    let first = Engine::open(&storage, OpenOptions::default()).unwrap();
    first.write(0, &[7u8; 512], true).unwrap();
    let err = Engine::open(&storage, OpenOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("in use"), "{err}");
    // The first holder is untouched, and once it is gone the volume opens again.
    assert_eq!(first.read(0, 1).unwrap(), vec![7u8; 512]);
    drop(first);
    let again = Engine::open(&storage, OpenOptions::default()).unwrap();
    assert_eq!(again.read(0, 1).unwrap(), vec![7u8; 512]);
}

#[test]
fn a_full_file_system_refuses_writes_serves_reads_and_resumes_once_space_is_freed() {
    let fs = Tmpfs::mount(16 << 20);
    let dir = fs.dir.join("vol");
    let storage = DirStorage::new(&dir);
    let bs = 4096usize;
    create(
        &storage,
        &CreateOptions {
            block_size: bs as u32,
            capacity_bytes: 64 << 20,
            wal_bytes: 2 << 20,
            ..CreateOptions::default()
        },
    )
    .unwrap();
    let e = Engine::open(
        &storage,
        OpenOptions {
            flush_interval: Duration::from_millis(20),
            // Far longer than the test may take: space exhaustion must not wait for it.
            log_full_timeout: Duration::from_secs(3600),
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let filler = fill(&fs.dir, 256 << 10);
    let block = |i: u64| vec![(i % 251) as u8 + 1; bs];
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..4096u64 {
        match e.write(i, &block(i), false) {
            Ok(()) => acked.push(i),
            Err(err) => {
                refused = Some(err);
                break;
            }
        }
    }
    let refused = refused.expect("a full file system must refuse writes at some point");
    assert!(matches!(refused, Error::NoSpace), "{refused:?}");
    assert!(
        acked.len() > 64,
        "the log still takes writes while the extent cannot grow: {}",
        acked.len()
    );
    assert!(
        e.space_exhausted(),
        "the engine reports the exhausted space"
    );
    // Reads are served from the log and the extent.
    for &i in &acked {
        assert_eq!(e.read(i, 1).unwrap(), block(i), "block {i}");
    }
    // A flush of what was acknowledged still works: it lives in the log.
    e.flush().unwrap();
    std::fs::remove_file(&filler).unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    let next = *acked.last().unwrap() + 1;
    loop {
        match e.write(next, &block(next), false) {
            Ok(()) => break,
            Err(Error::NoSpace) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(err) => panic!("writes did not resume after space was freed: {err:?}"),
        }
    }
    acked.push(next);
    e.flush_once().unwrap();
    assert!(!e.space_exhausted());
    drop(e);
    let e = Engine::open(&storage, OpenOptions::default()).unwrap();
    for &i in &acked {
        assert_eq!(e.read(i, 1).unwrap(), block(i), "block {i} after reopen");
    }
}

/// Storage whose log writes panic while armed: a bug inside a volume job.
#[derive(Clone)]
struct Panicky {
    inner: SimStorage,
    armed: Arc<AtomicBool>,
}

struct PanickyFile {
    inner: Arc<dyn BlockFile>,
    armed: Option<Arc<AtomicBool>>,
}

impl BlockFile for PanickyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if self
            .armed
            .as_ref()
            .is_some_and(|a| a.load(Ordering::SeqCst))
        {
            panic!("injected panic in a log write");
        }
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.inner.sync_data()
    }
    fn size(&self) -> std::io::Result<u64> {
        self.inner.size()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn punch_hole(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.inner.punch_hole(offset, len)
    }
}

impl Storage for Panicky {
    fn open(&self, name: &str) -> std::io::Result<Arc<dyn BlockFile>> {
        Ok(Arc::new(PanickyFile {
            inner: self.inner.open(name)?,
            armed: (name == "wal").then(|| self.armed.clone()),
        }))
    }
    fn create(&self, name: &str) -> std::io::Result<Arc<dyn BlockFile>> {
        self.inner.create(name)
    }
    fn exists(&self, name: &str) -> bool {
        self.inner.exists(name)
    }
    fn sync_dir(&self) -> std::io::Result<()> {
        self.inner.sync_dir()
    }
    fn describe(&self, name: &str) -> PathBuf {
        self.inner.describe(name)
    }
    fn replace(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.replace(name, bytes)
    }
    fn read_all(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        self.inner.read_all(name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_volume_job_fails_its_requests_and_never_hangs_the_queue() {
    let disk = SimStorage::new();
    create(
        &disk,
        &CreateOptions {
            capacity_bytes: 1 << 20,
            wal_bytes: 1 << 20,
            ..CreateOptions::default()
        },
    )
    .unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let storage = Panicky {
        inner: disk,
        armed: armed.clone(),
    };
    let v = Volume::open_storage(Arc::new(storage), OpenOptions::default())
        .await
        .unwrap();
    v.write(0, vec![1u8; 512], true).await.unwrap();
    armed.store(true, Ordering::SeqCst);
    let limit = Duration::from_secs(20);
    // Plain writes (appended inline) and FUA writes (on an I/O thread) both meet the panic.
    for fua in [false, true, false, true] {
        let r = tokio::time::timeout(limit, v.write(1, vec![2u8; 512], fua))
            .await
            .expect("a write after a panicking volume job must be answered");
        assert!(r.is_err(), "a write whose job panicked cannot succeed");
    }
    armed.store(false, Ordering::SeqCst);
    // The volume refuses further work (it cannot know what the panic left behind) but
    // answers every request, reads and writes, instead of hanging.
    let r = tokio::time::timeout(limit, v.write(2, vec![3u8; 512], false))
        .await
        .expect("the write queue is not stuck");
    assert!(matches!(r, Err(Error::Failed)), "{r:?}");
    let r = tokio::time::timeout(limit, v.read(0, 1))
        .await
        .expect("reads are answered");
    assert!(r.is_err());
}
