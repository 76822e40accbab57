//! Size-limited file systems for the disk-fault tests (the blockstore's own and the
//! gateway's): a tmpfs mounted for a test and unmounted when dropped, and a filler that leaves
//! a file system nearly full. Needs root (tests run as root here).

use std::path::{Path, PathBuf};

/// A size-limited tmpfs mounted for the test, unmounted (lazily) when dropped.
pub struct Tmpfs {
    /// Where it is mounted.
    pub dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` (mode 0700) in a new temporary directory; panics when it
    /// cannot (not root).
    pub fn mount(bytes: u64) -> Tmpfs {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("fs");
        std::fs::create_dir(&dir).unwrap();
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        let (src, target, fstype, data) = (
            c("tandem-test"),
            c(dir.to_str().unwrap()),
            c("tmpfs"),
            c(&format!("size={bytes},mode=0700")),
        );
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mounting a tmpfs (the test runs as root): {}",
            std::io::Error::last_os_error()
        );
        Tmpfs {
            dir,
            _parent: parent,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Ok(target) = std::ffi::CString::new(self.dir.to_str().unwrap_or_default()) {
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Fills the file system holding `dir` with a file, leaving less than `leave` bytes free.
pub fn fill(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("filler");
    let f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xEEu8; 64 << 10];
    let mut off = 0u64;
    loop {
        // SAFETY: statvfs only writes into the struct it is given.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let p = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::statvfs(p.as_ptr(), &mut st) }, 0);
        let free = st.f_bavail * st.f_frsize;
        if free < leave {
            return path;
        }
        let n = (free - leave + 4096).min(chunk.len() as u64) as usize;
        match std::os::unix::fs::FileExt::write_at(&f, &chunk[..n], off) {
            Ok(w) => off += w as u64,
            Err(_) => return path,
        }
    }
}
