//! The files under a volume, behind a trait.
//!
//! The engine never calls the operating system directly: it sees a [`Storage`] that opens named
//! [`BlockFile`]s. Production uses [`DirStorage`] (real files, `fdatasync`, hole punching); the
//! model tests use [`crate::sim::SimStorage`], which can lose or tear every write not yet synced.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One file of a volume, addressed by byte offset.
pub trait BlockFile: Send + Sync + 'static {
    /// Fills `buf` from `offset`; bytes past the end of the file read as zeros.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed. Not durable until
    /// [`BlockFile::sync_data`] returns.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Sets the length (sparse when growing).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Deallocates a byte range, which then reads as zeros; the length is kept.
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Fills `buf` from `offset` only if that needs no waiting for the disk (the data is in the
    /// page cache): `Ok(true)` when done, `Ok(false)` when the read would block and must be
    /// retried with [`BlockFile::read_at`] off the async threads.
    fn read_at_nowait(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        let _ = (buf, offset);
        Ok(false)
    }
    /// Whether `offset` lies in allocated data, and how far from `offset` that status lasts
    /// (at most `max` bytes). Storage that cannot tell reports everything allocated.
    fn allocation(&self, offset: u64, max: u64) -> io::Result<(bool, u64)> {
        let _ = offset;
        Ok((true, max))
    }
    /// Takes an exclusive advisory lock on the file without waiting (`flock`): `Ok(false)` when
    /// someone else holds it. Held until [`BlockFile::unlock`] or until the file is closed.
    /// Storage without locks always succeeds.
    fn try_lock(&self) -> io::Result<bool> {
        Ok(true)
    }
    /// Releases the lock [`BlockFile::try_lock`] took.
    fn unlock(&self) {}
}

/// Where a volume's files live.
pub trait Storage: Send + Sync + 'static {
    /// Opens an existing file.
    fn open(&self, name: &str) -> io::Result<Arc<dyn BlockFile>>;
    /// Creates a new, empty file, replacing any left over from an interrupted create.
    fn create(&self, name: &str) -> io::Result<Arc<dyn BlockFile>>;
    /// Whether a file exists.
    fn exists(&self, name: &str) -> bool;
    /// Makes the creation of files durable (fsync of the directory).
    fn sync_dir(&self) -> io::Result<()>;
    /// A human-readable location for error messages.
    fn describe(&self, name: &str) -> PathBuf;
    /// Replaces a small file atomically and durably (all of the old or all of the new content
    /// survives a crash). Used for metadata such as persistent reservations.
    fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Reads a whole small file; `None` if it does not exist.
    fn read_all(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Removes a file (a deleted snapshot's delta store) and makes the removal durable; a
    /// file that does not exist is not an error. Storage that cannot remove files empties
    /// them instead, which frees their space just the same.
    fn remove(&self, name: &str) -> io::Result<()> {
        if self.exists(name) {
            self.create(name)?;
            self.sync_dir()?;
        }
        Ok(())
    }
}

/// Mode of every file a volume creates: its data and metadata are the host's disks, readable by
/// the owner (the daemon) only, whatever the umask.
pub const FILE_MODE: u32 = 0o600;
/// Mode of a volume directory the storage creates.
pub const DIR_MODE: u32 = 0o700;

/// Real files in one directory.
#[derive(Debug, Clone)]
pub struct DirStorage {
    dir: PathBuf,
}

impl DirStorage {
    /// Storage rooted at `dir` (created on demand by [`Storage::create`]).
    pub fn new(dir: impl AsRef<Path>) -> Self {
        DirStorage {
            dir: dir.as_ref().to_path_buf(),
        }
    }
}

impl Storage for DirStorage {
    fn open(&self, name: &str) -> io::Result<Arc<dyn BlockFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(name))?;
        Ok(Arc::new(RealFile(f)))
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn BlockFile>> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&self.dir)?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(self.dir.join(name))?;
        Ok(Arc::new(RealFile(f)))
    }

    fn exists(&self, name: &str) -> bool {
        self.dir.join(name).exists()
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn describe(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(name))?;
        self.sync_dir()
    }

    fn read_all(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.dir.join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match std::fs::remove_file(self.dir.join(name)) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A real file.
struct RealFile(File);

impl BlockFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.0.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    return Ok(());
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn read_at_nowait(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        let mut done = 0usize;
        while done < buf.len() {
            let Ok(off) = i64::try_from(offset + done as u64) else {
                return Ok(false);
            };
            let rest = &mut buf[done..];
            let iov = libc::iovec {
                iov_base: rest.as_mut_ptr().cast(),
                iov_len: rest.len(),
            };
            // SAFETY: the iovec points into `rest`, which stays borrowed mutably for the call;
            // preadv2 writes at most iov_len bytes there.
            let n = unsafe { libc::preadv2(self.0.as_raw_fd(), &iov, 1, off, libc::RWF_NOWAIT) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) => Ok(false),
                    Some(libc::EINTR) => continue,
                    _ => Err(e),
                };
            }
            if n == 0 {
                rest.fill(0);
                return Ok(true);
            }
            done += n as usize;
        }
        Ok(true)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (Ok(off), Ok(l)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range too large",
            ));
        };
        // SAFETY: fallocate only reads its integer arguments; the descriptor is owned by self.
        let rc = unsafe {
            libc::fallocate(
                self.0.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                l,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
            // A file system without hole punching: write zeros instead (still reads as zeros).
            let zeros = vec![0u8; 1 << 20];
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(zeros.len() as u64) as usize;
                self.0.write_all_at(&zeros[..n], offset + done)?;
                done += n as u64;
            }
            return Ok(());
        }
        Err(err)
    }

    fn try_lock(&self) -> io::Result<bool> {
        loop {
            // SAFETY: flock only reads its integer arguments; the descriptor is owned by self.
            if unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => return Ok(false),
                Some(libc::EINTR) => {}
                _ => return Err(e),
            }
        }
    }

    fn unlock(&self) {
        // SAFETY: as in try_lock.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }

    fn allocation(&self, offset: u64, max: u64) -> io::Result<(bool, u64)> {
        let fd = self.0.as_raw_fd();
        let seek = |whence: libc::c_int| -> io::Result<Option<u64>> {
            let Ok(off) = i64::try_from(offset) else {
                return Ok(None);
            };
            // SAFETY: lseek only reads its integer arguments; the descriptor is owned by self.
            let r = unsafe { libc::lseek(fd, off, whence) };
            if r >= 0 {
                return Ok(Some(r as u64));
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                Ok(None)
            } else {
                Err(e)
            }
        };
        match seek(libc::SEEK_DATA) {
            // No data at or after offset: a hole to the end.
            Ok(None) => Ok((false, max)),
            Ok(Some(data)) if data > offset => Ok((false, (data - offset).min(max))),
            Ok(Some(_)) => {
                let hole = seek(libc::SEEK_HOLE)?.unwrap_or(offset + max);
                Ok((true, hole.saturating_sub(offset).clamp(1, max)))
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((true, max)),
            Err(e) => Err(e),
        }
    }
}
