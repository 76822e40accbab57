//! Shared libraries for the guest: which sonames the guest's ELF files need (`readelf -d`), which
//! extracted package provides each, and copying them (with their symlinks) into the image.
//!
//! Walking NEEDED entries instead of installing whole library packages keeps the image small and
//! makes a missing library a build error naming it, not a guest that fails at run time.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{io_err, HarnessError, Result};

/// Directories (relative to a package or image root) where the dynamic loader finds libraries;
/// the first two, the multiarch ones, are searched with their subdirectories by [`LibraryIndex`].
pub const LIBRARY_DIRS: &[&str] = &[
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib64",
    "lib",
    "usr/lib",
];

/// Every regular file under `root` that starts with the ELF magic, sorted.
pub fn elf_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(root, &mut |p, ft| {
        if ft.is_file() && is_elf(p) {
            out.push(p.to_path_buf());
        }
    })?;
    out.sort();
    Ok(out)
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// Calls `f` for every entry under `root` (not following symlinks).
pub(crate) fn walk(root: &Path, f: &mut dyn FnMut(&Path, fs::FileType)) -> Result<()> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(format!("listing {}", root.display()))(e)),
    };
    for e in entries {
        let e = e.map_err(io_err(format!("listing {}", root.display())))?;
        let ft = e.file_type().map_err(io_err("reading a file type"))?;
        let path = e.path();
        f(&path, ft);
        if ft.is_dir() {
            walk(&path, f)?;
        }
    }
    Ok(())
}

/// The NEEDED sonames of each ELF file, from `readelf -d` (files without a dynamic section map to
/// an empty list).
pub fn needed(files: &[PathBuf]) -> Result<BTreeMap<PathBuf, Vec<String>>> {
    let mut out = BTreeMap::new();
    for chunk in files.chunks(200) {
        let res = Command::new("readelf")
            .args(["-d", "-W"])
            .args(chunk)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map_err(io_err("starting readelf"))?;
        let text = String::from_utf8_lossy(&res.stdout);
        let mut current = chunk.first().cloned();
        for f in chunk {
            out.insert(f.clone(), Vec::new());
        }
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("File: ") {
                current = Some(PathBuf::from(name.trim()));
            } else if line.contains("(NEEDED)") {
                let lib = line
                    .split_once("Shared library: [")
                    .and_then(|(_, rest)| rest.split_once(']'))
                    .map(|(lib, _)| lib.to_string());
                if let (Some(file), Some(lib)) = (&current, lib) {
                    out.entry(file.clone()).or_insert_with(Vec::new).push(lib);
                }
            }
        }
    }
    Ok(out)
}

/// Where each library file name (soname or symlink name) can be found among extracted packages.
#[derive(Debug, Default)]
pub struct LibraryIndex {
    /// File name -> (package, package root, path relative to the root).
    entries: BTreeMap<String, (String, PathBuf, PathBuf)>,
}

impl LibraryIndex {
    /// Indexes the library directories of an extracted package; earlier entries win on duplicates.
    ///
    /// The multiarch directories are indexed with their subdirectories too, for libraries found
    /// through a RUNPATH (e.g. `librados2` needs `ceph/libceph-common.so.2`).
    pub fn add_package(&mut self, package: &str, root: &Path) -> Result<()> {
        let mut found = Vec::new();
        for dir in LIBRARY_DIRS {
            let Ok(entries) = fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries {
                let e = e.map_err(io_err("indexing libraries"))?;
                found.push(Path::new(dir).join(e.file_name()));
            }
        }
        for dir in &LIBRARY_DIRS[..2] {
            let base = root.join(dir);
            let mut nested = Vec::new();
            walk(&base, &mut |p, _| {
                if let Ok(rel) = p.strip_prefix(root) {
                    if rel.parent() != Some(Path::new(dir)) {
                        nested.push(rel.to_path_buf());
                    }
                }
            })?;
            nested.sort();
            found.extend(nested);
        }
        for rel in found {
            let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            if name.contains(".so") {
                self.entries
                    .entry(name)
                    .or_insert_with(|| (package.to_string(), root.to_path_buf(), rel));
            }
        }
        Ok(())
    }

    /// The package providing `soname`, its root and the library's relative path.
    pub fn find(&self, soname: &str) -> Option<&(String, PathBuf, PathBuf)> {
        self.entries.get(soname)
    }
}

/// The file names present in the library directories of `root` (the image being built).
pub fn present_libraries(root: &Path) -> BTreeSet<String> {
    LIBRARY_DIRS
        .iter()
        .filter_map(|d| fs::read_dir(root.join(d)).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Copies `rel` from `src_root` to the same place under `dest_root`, keeping symlinks as symlinks
/// and copying their targets too (relative to the link, or to `src_root` when absolute).
pub fn copy_entry(src_root: &Path, rel: &Path, dest_root: &Path) -> Result<()> {
    let src = src_root.join(rel);
    let dest = dest_root.join(rel);
    if dest.symlink_metadata().is_ok() {
        return Ok(());
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
    }
    let meta = src
        .symlink_metadata()
        .map_err(io_err(format!("reading {}", src.display())))?;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(&src).map_err(io_err("reading a symlink"))?;
        std::os::unix::fs::symlink(&target, &dest)
            .map_err(io_err(format!("creating symlink {}", dest.display())))?;
        let target_rel = if target.is_absolute() {
            target.strip_prefix("/").unwrap_or(&target).to_path_buf()
        } else {
            rel.parent().unwrap_or(Path::new("")).join(&target)
        };
        let target_rel = normalize(&target_rel);
        if src_root.join(&target_rel).symlink_metadata().is_ok() {
            copy_entry(src_root, &target_rel, dest_root)?;
        }
        Ok(())
    } else if meta.is_dir() {
        fs::create_dir_all(&dest).map_err(io_err(format!("creating {}", dest.display())))
    } else {
        fs::copy(&src, &dest)
            .map(drop)
            .map_err(io_err(format!("copying {}", src.display())))
    }
}

/// Removes `.` and resolves `..` lexically, so a link target stays inside the package root.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Error for a soname no fetched package provides, naming the file that needs it.
pub fn missing(soname: &str, needed_by: &Path) -> HarnessError {
    HarnessError::MissingLibrary {
        soname: soname.to_string(),
        needed_by: needed_by.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_parent_components() {
        assert_eq!(
            normalize(Path::new("lib64/../lib/x86_64-linux-gnu/./ld.so")),
            PathBuf::from("lib/x86_64-linux-gnu/ld.so")
        );
    }

    #[test]
    fn copy_entry_follows_symlink_chain() {
        let src = tempfile::tempdir().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dir = src.path().join("usr/lib/x86_64-linux-gnu");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("libx.so.1.2.3"), b"x").unwrap();
        std::os::unix::fs::symlink("libx.so.1.2.3", dir.join("libx.so.1")).unwrap();
        let rel = Path::new("usr/lib/x86_64-linux-gnu/libx.so.1");
        copy_entry(src.path(), rel, dest.path()).unwrap();
        let copied = dest.path().join(rel);
        assert!(copied.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&copied).unwrap(), b"x");
    }
}
