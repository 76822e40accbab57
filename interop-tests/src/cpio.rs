//! A writer for uncompressed `newc` cpio archives, the format the Linux kernel unpacks as initramfs.
//!
//! Written here rather than calling the `cpio` tool so per-test archives are built in memory and
//! the image needs one fewer host package. Layout per entry (kernel `init/initramfs.c`,
//! `Documentation/driver-api/early-userspace/buffer-format.rst`): the 6-byte magic `070701`,
//! thirteen 8-digit hex fields, the NUL-terminated name padded to a multiple of 4, then the data
//! padded to a multiple of 4. The archive ends with an entry named `TRAILER!!!`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Streams entries into a `newc` archive; all entries are owned by root with mtime 0.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        let name = name.trim_start_matches('/');
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio entry over 4 GiB"))?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & 0o170_000 == S_IFDIR { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for f in fields {
            header.push_str(&format!("{f:08X}"));
        }
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad(4)?;
        self.put(data)?;
        self.pad(4)
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self, align: u64) -> io::Result<()> {
        let n = (align - self.written % align) % align;
        self.put(&vec![0; n as usize])
    }

    /// Adds a directory.
    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.entry(name, S_IFDIR | (perm & 0o7777), (0, 0), &[])
    }

    /// Adds a regular file with the given permission bits.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, S_IFREG | (perm & 0o7777), (0, 0), data)
    }

    /// Adds a symbolic link (the data of a link entry is its target).
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, S_IFLNK | 0o777, (0, 0), target.as_bytes())
    }

    /// Adds a character device node (e.g. `/dev/console`, 5:1, which the kernel opens for PID 1).
    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, S_IFCHR | (perm & 0o7777), (major, minor), &[])
    }

    /// Adds everything under `root` (directories before their contents, names sorted), with
    /// paths relative to `root`.
    pub fn tree(&mut self, root: &Path) -> io::Result<()> {
        self.tree_at(root, "")
    }

    fn tree_at(&mut self, dir: &Path, prefix: &str) -> io::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            let meta = e.path().symlink_metadata()?;
            let perm = meta.permissions().mode();
            if meta.file_type().is_symlink() {
                let target = fs::read_link(e.path())?;
                self.symlink(&name, &target.to_string_lossy())?;
            } else if meta.is_dir() {
                self.dir(&name, perm)?;
                self.tree_at(&e.path(), &format!("{name}/"))?;
            } else if meta.is_file() {
                self.file(&name, perm, &fs::read(e.path())?)?;
            }
        }
        Ok(())
    }

    /// Writes the trailer, pads the archive to 512 bytes (so another archive can follow it) and
    /// returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        self.pad(512)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout_matches_the_kernel_buffer_format() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("/init", 0o755, b"hello").unwrap();
        let out = w.finish().unwrap();
        // Header: magic + 13 fields of 8 hex digits = 110 bytes.
        assert_eq!(&out[..6], b"070701");
        let field = |i: usize| {
            let s = std::str::from_utf8(&out[6 + 8 * i..14 + 8 * i]).unwrap();
            u32::from_str_radix(s, 16).unwrap()
        };
        assert_eq!(field(1), 0o100_755, "mode");
        assert_eq!(field(6), 5, "filesize");
        assert_eq!(field(11), 5, "namesize counts the NUL");
        // Name "init\0" at 110 ends at 115, padded to 116; data at 116.
        assert_eq!(&out[110..115], b"init\0");
        assert_eq!(&out[116..121], b"hello");
        // Next header 4-aligned at 124, the trailer.
        assert_eq!(&out[124..130], b"070701");
        assert_eq!(&out[234..245], b"TRAILER!!!\0");
        assert_eq!(out.len() % 512, 0);
    }

    #[test]
    fn cpio_tool_lists_the_archive() {
        crate::host::ensure_host_tools().unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/a"), b"abc").unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("etc/b")).unwrap();
        let mut w = CpioWriter::new(Vec::new());
        w.tree(dir.path()).unwrap();
        let bytes = w.finish().unwrap();
        let path = dir.path().join("x.cpio");
        fs::write(&path, bytes).unwrap();
        let out = std::process::Command::new("cpio")
            .args(["-t", "--quiet", "-F"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "etc\netc/a\netc/b\n");
    }
}
