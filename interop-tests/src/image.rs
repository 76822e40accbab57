//! The guest image: an ELF kernel plus an uncompressed base initramfs, built from Debian packages
//! into the cache directory and rebuilt only when its inputs change.

use std::collections::BTreeSet;
use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::cpio::CpioWriter;
use crate::error::{io_err, HarnessError, Result};
use crate::host::{ensure_host_tools, run};
use crate::init::{init_script, ETC_FILES};
use crate::kernel::{self, AUTH_MODULES, BOOT_MODULES, EXTRA_MODULES};
use crate::libs::{self, LibraryIndex};
use crate::packages::{self, ImageFlavor, KernelSuite, EXTRA_LIBRARY_PACKAGES, TOOL_PACKAGES};
use crate::paths::cache_dir;

/// Bumped when the build logic changes in a way the other inputs do not capture.
const BUILDER_VERSION: &str = "1";

/// Package content left out of the image: documentation and service-manager glue.
const SKIPPED_DIRS: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/bug",
    "usr/share/bash-completion",
    "usr/share/zsh",
    "usr/share/initramfs-tools",
    "lib/systemd",
    "usr/lib/systemd",
    "etc/init.d",
];

/// How many rounds of "fetch the library dependencies of the packages in use" before giving up.
const MAX_LIBRARY_ROUNDS: usize = 8;

/// A built guest image in the cache.
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// The uncompressed ELF kernel, booted through its PVH entry point.
    pub kernel: PathBuf,
    /// The base initramfs (uncompressed `newc` cpio).
    pub initrd: PathBuf,
    /// The kernel release, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// How long this process spent building or validating the image.
    pub prepare_time: Duration,
    /// Whether this process built the image (false: it was reused from the cache).
    pub built: bool,
}

type SharedImage = OnceLock<std::result::Result<GuestImage, String>>;

static SHARED: SharedImage = OnceLock::new();
static SHARED_BACKPORTS: SharedImage = OnceLock::new();
static SHARED_BLKTESTS: SharedImage = OnceLock::new();
static SHARED_BACKPORTS_BLKTESTS: SharedImage = OnceLock::new();

impl GuestImage {
    /// The image with the stable kernel in the default cache directory, built on first use in
    /// this process and shared by every test after that.
    pub fn shared() -> Result<&'static GuestImage> {
        Self::shared_for(KernelSuite::Stable)
    }

    /// The image with the kernel of `suite`, built on first use in this process and shared by
    /// every test after that.
    pub fn shared_for(suite: KernelSuite) -> Result<&'static GuestImage> {
        Self::shared_flavor(suite, ImageFlavor::Standard)
    }

    /// The image with the kernel of `suite` and the userspace of `flavor`, built on first use in
    /// this process and shared by every test after that.
    pub fn shared_flavor(suite: KernelSuite, flavor: ImageFlavor) -> Result<&'static GuestImage> {
        let cell = match (suite, flavor) {
            (KernelSuite::Stable, ImageFlavor::Standard) => &SHARED,
            (KernelSuite::Backports, ImageFlavor::Standard) => &SHARED_BACKPORTS,
            (KernelSuite::Stable, ImageFlavor::Blktests) => &SHARED_BLKTESTS,
            (KernelSuite::Backports, ImageFlavor::Blktests) => &SHARED_BACKPORTS_BLKTESTS,
        };
        cell.get_or_init(|| {
            Self::ensure_flavor(&cache_dir(), suite, flavor).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| HarnessError::Image(e.clone()))
    }

    /// Returns the image with the stable kernel in `cache`, (re)building it when it is missing
    /// or its inputs changed.
    pub fn ensure(cache: &Path) -> Result<GuestImage> {
        Self::ensure_for(cache, KernelSuite::Stable)
    }

    /// Returns the image with the kernel of `suite` in `cache`, (re)building it when it is
    /// missing or its inputs changed. Each suite has its own image directory.
    pub fn ensure_for(cache: &Path, suite: KernelSuite) -> Result<GuestImage> {
        Self::ensure_flavor(cache, suite, ImageFlavor::Standard)
    }

    /// Returns the image with the kernel of `suite` and the userspace of `flavor` in `cache`,
    /// (re)building it when it is missing or its inputs changed. Each combination has its own
    /// image directory.
    pub fn ensure_flavor(
        cache: &Path,
        suite: KernelSuite,
        flavor: ImageFlavor,
    ) -> Result<GuestImage> {
        let started = Instant::now();
        ensure_host_tools()?;
        let kernel_package = packages::suite_kernel_package(suite, cache)?;
        let stamp = input_hash(&kernel_package, suite, flavor);
        let mut dir_name = match suite {
            KernelSuite::Stable => "image".to_string(),
            KernelSuite::Backports => "image-backports".to_string(),
        };
        if flavor != ImageFlavor::Standard {
            dir_name = format!("{dir_name}-{}", flavor.name());
        }
        let dir = cache.join(dir_name);
        let stamp_path = dir.join("stamp");
        let mut built = false;
        if fs::read_to_string(&stamp_path).ok().as_deref() != Some(stamp.as_str()) {
            fs::create_dir_all(cache).map_err(io_err(format!("creating {}", cache.display())))?;
            let work = tempfile::Builder::new()
                .prefix("build-")
                .tempdir_in(cache)
                .map_err(io_err("creating a build directory"))?;
            let out = work.path().join("image");
            fs::create_dir(&out).map_err(io_err("creating the output directory"))?;
            build(cache, work.path(), &out, &kernel_package, suite, flavor)?;
            fs::write(out.join("stamp"), &stamp).map_err(io_err("writing the stamp"))?;
            if dir.exists() {
                fs::remove_dir_all(&dir).map_err(io_err("removing the old image"))?;
            }
            fs::rename(&out, &dir).map_err(io_err("installing the image"))?;
            built = true;
        }
        let release = fs::read_to_string(dir.join("release"))
            .map_err(io_err("reading the image's kernel release"))?;
        let image = GuestImage {
            kernel: dir.join("vmlinux"),
            initrd: dir.join("base.cpio"),
            release: release.trim().to_string(),
            prepare_time: started.elapsed(),
            built,
        };
        eprintln!(
            "interop-tests: guest image {} (kernel {}) {} in {:.1?}",
            dir.display(),
            image.release,
            if built { "built" } else { "reused" },
            image.prepare_time
        );
        Ok(image)
    }
}

/// Hash of everything the image is made from; a different hash means a rebuild.
fn input_hash(kernel_package: &str, suite: KernelSuite, flavor: ImageFlavor) -> String {
    let mut h = Sha256::new();
    for part in [BUILDER_VERSION, kernel_package, &init_script()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    if suite != KernelSuite::Stable {
        // Kept out of the stable image's hash, so adding suites did not rebuild that image.
        h.update(suite.name().as_bytes());
        h.update(AUTH_MODULES.join(",").as_bytes());
        h.update([0]);
    }
    if flavor != ImageFlavor::Standard {
        // Kept out of the standard images' hash, so adding flavours did not rebuild them.
        h.update(flavor.name().as_bytes());
        h.update(flavor.extra_packages().join(",").as_bytes());
        h.update([0]);
        h.update(flavor.extra_modules().join(",").as_bytes());
        h.update([0]);
    }
    for list in [
        TOOL_PACKAGES,
        EXTRA_LIBRARY_PACKAGES,
        BOOT_MODULES,
        EXTRA_MODULES,
    ] {
        h.update(list.join(",").as_bytes());
        h.update([0]);
    }
    for (path, text) in ETC_FILES {
        h.update(path.as_bytes());
        h.update(text.as_bytes());
    }
    hex::encode(h.finalize())
}

fn build(
    cache: &Path,
    work: &Path,
    out: &Path,
    kernel_package: &str,
    suite: KernelSuite,
    flavor: ImageFlavor,
) -> Result<()> {
    let mut pool = Pool {
        debs: cache.join("debs"),
        dir: work.join("pool"),
        fetched: BTreeSet::new(),
        index: LibraryIndex::default(),
    };
    let root = work.join("root");

    // Kernel: ELF image and modules.
    let deb = packages::fetch_kernel(suite, cache, &pool.debs, kernel_package)?;
    let kroot = pool.dir.join(kernel_package);
    packages::extract(&deb, &kroot)?;
    let release = kernel::kernel_release(&kroot)?;
    kernel::extract_vmlinux(&kroot, &release, &out.join("vmlinux"))?;
    let auth: &[&str] = match suite {
        KernelSuite::Stable => &[],
        KernelSuite::Backports => AUTH_MODULES,
    };
    let modules: Vec<&str> = BOOT_MODULES
        .iter()
        .chain(EXTRA_MODULES)
        .chain(auth)
        .chain(flavor.extra_modules())
        .copied()
        .collect();
    kernel::install_modules(&kroot, &release, &modules, &root)?;
    if flavor != ImageFlavor::Standard {
        // The kernel's configuration, where tools that check kernel options look for it
        // (blktests' `_have_kernel_option` reads /boot/config-<release>).
        let config = format!("boot/config-{release}");
        libs::copy_entry(&kroot, Path::new(&config), &root)?;
    }
    fs::remove_dir_all(&kroot).map_err(io_err("removing the extracted kernel"))?;
    fs::write(out.join("release"), &release).map_err(io_err("writing the release"))?;

    // Userspace tools, whole packages minus documentation.
    let tools: Vec<String> = TOOL_PACKAGES
        .iter()
        .chain(flavor.extra_packages())
        .map(|s| s.to_string())
        .collect();
    let extra: Vec<String> = EXTRA_LIBRARY_PACKAGES
        .iter()
        .map(|s| s.to_string())
        .collect();
    pool.fetch(tools.iter().chain(&extra).cloned().collect())?;
    for t in &tools {
        copy_tree(&pool.dir.join(t), &root)?;
    }
    // The dynamic loader at the path executables name as their interpreter.
    libs::copy_entry(
        &pool.dir.join("libc6"),
        Path::new("lib64/ld-linux-x86-64.so.2"),
        &root,
    )?;
    busybox_links(&root)?;

    // Shared libraries: copy what NEEDED entries name, fetching library dependencies as required.
    let mut in_use: BTreeSet<String> = tools.iter().cloned().collect();
    let mut scanned: BTreeSet<PathBuf> = BTreeSet::new();
    let mut rounds = 0;
    loop {
        let files: Vec<PathBuf> = libs::elf_files(&root)?
            .into_iter()
            .filter(|f| !scanned.contains(f))
            .collect();
        if files.is_empty() {
            break;
        }
        let needed = libs::needed(&files)?;
        scanned.extend(files);
        let mut missing: Vec<(String, PathBuf)> = Vec::new();
        for (file, sonames) in &needed {
            for so in sonames {
                if libs::present_libraries(&root).contains(so) {
                    continue;
                }
                match pool.index.find(so) {
                    Some((pkg, pkg_root, rel)) => {
                        libs::copy_entry(pkg_root, rel, &root)?;
                        in_use.insert(pkg.clone());
                    }
                    None => missing.push((so.clone(), file.clone())),
                }
            }
        }
        if missing.is_empty() {
            continue;
        }
        rounds += 1;
        let candidates: Vec<String> =
            packages::library_dependencies(&in_use.iter().cloned().collect::<Vec<_>>())?
                .into_iter()
                .filter(|p| !pool.fetched.contains(p))
                .collect();
        if candidates.is_empty() || rounds > MAX_LIBRARY_ROUNDS {
            let (so, file) = &missing[0];
            return Err(libs::missing(so, file.strip_prefix(&root).unwrap_or(file)));
        }
        pool.fetch(candidates)?;
        // Rescan the files whose libraries were missing.
        for (_, file) in missing {
            scanned.remove(&file);
        }
    }

    // Base files and the archive.
    for (path, text) in ETC_FILES {
        write_file(&root.join(path), text.as_bytes(), 0o644)?;
    }
    write_file(&root.join("init"), init_script().as_bytes(), 0o755)?;
    for d in ["proc", "sys", "dev", "run", "tmp", "root", "var/lib", "mnt"] {
        fs::create_dir_all(root.join(d)).map_err(io_err("creating base directories"))?;
    }
    let file = fs::File::create(out.join("base.cpio")).map_err(io_err("creating base.cpio"))?;
    let mut w = CpioWriter::new(BufWriter::new(file));
    w.char_device("dev/console", 0o600, 5, 1)
        .and_then(|_| w.tree(&root))
        .and_then(|_| w.finish().map(drop))
        .map_err(io_err("writing base.cpio"))
}

/// Extracted packages of one build, and the libraries they provide.
struct Pool {
    debs: PathBuf,
    dir: PathBuf,
    fetched: BTreeSet<String>,
    index: LibraryIndex,
}

impl Pool {
    /// Downloads (or takes from the cache) and extracts the packages not fetched yet.
    fn fetch(&mut self, names: Vec<String>) -> Result<()> {
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| !self.fetched.contains(n))
            .collect();
        for (name, deb) in names.iter().zip(packages::fetch(&self.debs, &names)?) {
            let dest = self.dir.join(name);
            packages::extract(&deb, &dest)?;
            self.index.add_package(name, &dest)?;
            self.fetched.insert(name.clone());
        }
        Ok(())
    }
}

/// Copies a package tree into the image, leaving out [`SKIPPED_DIRS`].
fn copy_tree(pkg_root: &Path, root: &Path) -> Result<()> {
    let mut rels = Vec::new();
    libs::walk(pkg_root, &mut |p, _| {
        if let Ok(rel) = p.strip_prefix(pkg_root) {
            if !SKIPPED_DIRS.iter().any(|s| rel.starts_with(s)) {
                rels.push(rel.to_path_buf());
            }
        }
    })?;
    rels.iter()
        .try_for_each(|rel| libs::copy_entry(pkg_root, rel, root))
}

/// Links every busybox applet to `/bin/busybox` where no real tool of that name exists.
fn busybox_links(root: &Path) -> Result<()> {
    let busybox = root.join("bin/busybox");
    let list = run(Command::new(&busybox).arg("--list-full"))?;
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let dest = root.join(applet);
        let name = dest.file_name().map(|n| n.to_owned());
        let elsewhere = ["bin", "sbin", "usr/bin", "usr/sbin"]
            .iter()
            .any(|d| name.as_ref().is_some_and(|n| root.join(d).join(n).exists()));
        if elsewhere || dest.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err("creating an applet directory"))?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &dest)
            .map_err(io_err(format!("linking applet {applet}")))?;
    }
    Ok(())
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
    }
    fs::write(path, data).map_err(io_err(format!("writing {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("setting the mode of {}", path.display())))
}
