//! Debian packages for the guest: resolving the kernel, fetching `.deb` files into the cache with
//! `apt-get download` (nothing is installed on the host) and extracting them with `dpkg-deb -x`.
//!
//! The kernel comes from the host's apt sources ([`KernelSuite::Stable`]) or from Debian's
//! backports suite ([`KernelSuite::Backports`]), read through a private apt state in the cache
//! directory, so the host's apt configuration is never changed.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{io_err, HarnessError, Result};
use crate::host::{run, run_in, APT_LOCK_WAIT};

/// The meta package whose dependency names the kernel image package of the configured suite.
pub const KERNEL_META_PACKAGE: &str = "linux-image-amd64";

/// Userspace packages whose whole contents (minus documentation) go into the guest: the
/// initiators and tools the interop tests drive, and busybox as init, shell and coreutils.
pub const TOOL_PACKAGES: &[&str] = &[
    "busybox-static",
    "nvme-cli",
    "open-iscsi",
    "multipath-tools",
    "sg3-utils",
    "e2fsprogs",
    "fio",
    // dm-multipath finds paths only among block devices udev has initialised (the failover
    // tests start `systemd-udevd`, a link to `udevadm`, before `multipathd`).
    "udev",
];

/// Userspace a guest image carries besides [`TOOL_PACKAGES`].
///
/// Exists so a suite with big needs (blktests wants bash and the GNU tools) gets its own image
/// while every other guest test keeps the small image its timings were tuned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ImageFlavor {
    /// [`TOOL_PACKAGES`] only.
    #[default]
    Standard,
    /// Plus [`BLKTESTS_PACKAGES`]: what blktests' `check` and its nvme group run.
    Blktests,
}

impl ImageFlavor {
    /// The packages this flavour adds to [`TOOL_PACKAGES`].
    pub fn extra_packages(self) -> &'static [&'static str] {
        match self {
            ImageFlavor::Standard => &[],
            ImageFlavor::Blktests => BLKTESTS_PACKAGES,
        }
    }

    /// The kernel modules this flavour adds (blktests' `_have_loop`, `_have_xfs`).
    pub fn extra_modules(self) -> &'static [&'static str] {
        match self {
            ImageFlavor::Standard => &[],
            ImageFlavor::Blktests => &["loop", "xfs"],
        }
    }

    /// A short name for image directories and log lines.
    pub fn name(self) -> &'static str {
        match self {
            ImageFlavor::Standard => "standard",
            ImageFlavor::Blktests => "blktests",
        }
    }
}

/// What blktests (`check`, common/rc, common/nvme, tests/nvme) runs beyond [`TOOL_PACKAGES`]:
/// bash and the GNU tools its scripts rely on (busybox's applets differ in options and output),
/// losetup and findmnt, kmod's modprobe/modinfo, zgrep (kernel options), xfs tools, and curl for the control script
/// that drives Tandem's admin API from the guest.
pub const BLKTESTS_PACKAGES: &[&str] = &[
    "bash",
    "coreutils",
    "util-linux",
    "mount",
    "uuid-runtime",
    "bsdextrautils",
    "kmod",
    "gawk",
    "sed",
    "grep",
    "findutils",
    "diffutils",
    "gzip",
    "procps",
    "xfsprogs",
    "curl",
];

/// Library packages fetched up front. Other libraries are found by following the `lib*`
/// dependencies of fetched packages; `libc6` is listed because it also provides the dynamic loader.
pub const EXTRA_LIBRARY_PACKAGES: &[&str] = &["libc6"];

/// The apt source line of the backports suite the [`KernelSuite::Backports`] kernel comes from.
pub const BACKPORTS_SOURCE: &str = "deb http://deb.debian.org/debian bookworm-backports main";

/// Which Debian suite the guest kernel comes from.
///
/// Exists because bookworm's 6.1 kernel is built without `CONFIG_NVME_AUTH`: the tests of NVMe
/// in-band authentication need the backports kernel (6.12, with DH-HMAC-CHAP), while every
/// other guest test keeps the kernel its timings were tuned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KernelSuite {
    /// `linux-image-amd64` of the host's own apt sources (bookworm's 6.1).
    #[default]
    Stable,
    /// `linux-image-amd64` of [`BACKPORTS_SOURCE`], through a private apt state.
    Backports,
}

impl KernelSuite {
    /// A short name for image directories and log lines.
    pub fn name(self) -> &'static str {
        match self {
            KernelSuite::Stable => "stable",
            KernelSuite::Backports => "backports",
        }
    }
}

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Serialises the private backports apt state of this process (its lists and caches).
static BACKPORTS_APT: Mutex<bool> = Mutex::new(false);

/// The apt options that make apt read only the private backports state below `state`
/// (sources, lists, caches) and leave the host's apt configuration and caches alone.
fn backports_options(state: &Path) -> Vec<String> {
    let opt = |k: &str, v: &Path| ["-o".to_string(), format!("{k}={}", v.display())];
    let mut o = Vec::new();
    o.extend(opt("Dir::Etc::sourcelist", &state.join("sources.list")));
    o.extend(["-o".to_string(), "Dir::Etc::sourceparts=-".to_string()]);
    o.extend(opt("Dir::State::Lists", &state.join("lists")));
    o.extend(opt("Dir::Cache", &state.join("cache")));
    o
}

/// How old the private backports package lists may get before `apt-get update` refreshes them.
const BACKPORTS_LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The file whose modification time records the last successful `apt-get update` of the
/// private state (apt keeps the server's times on the lists themselves).
const UPDATED_STAMP: &str = "updated";

/// How long ago the private state below `state` was last updated; `None` when never.
fn lists_age(state: &Path) -> Option<Duration> {
    let modified = fs::metadata(state.join(UPDATED_STAMP))
        .and_then(|m| m.modified())
        .ok()?;
    Some(modified.elapsed().unwrap_or_default())
}

/// Prepares the private apt state for the backports suite below `state` and runs
/// `apt-get update` on it when its lists are missing or stale (at most once per process);
/// returns the options that select it.
fn backports_apt(state: &Path) -> Result<Vec<String>> {
    let mut updated = BACKPORTS_APT.lock().unwrap_or_else(|e| e.into_inner());
    for d in ["lists/partial", "cache/archives/partial"] {
        fs::create_dir_all(state.join(d))
            .map_err(io_err(format!("creating {}", state.join(d).display())))?;
    }
    fs::write(state.join("sources.list"), format!("{BACKPORTS_SOURCE}\n"))
        .map_err(io_err("writing the backports sources.list"))?;
    let options = backports_options(state);
    let age = lists_age(state);
    if !*updated && age.is_none_or(|a| a >= BACKPORTS_LISTS_MAX_AGE) {
        eprintln!("interop-tests: apt-get update ({BACKPORTS_SOURCE}, private state)");
        match run(Command::new("apt-get").args(&options).arg("update")) {
            Ok(_) => fs::write(state.join(UPDATED_STAMP), b"")
                .map_err(io_err("writing the apt update stamp"))?,
            // Stale lists still name a kernel whose image may be cached: keep going offline.
            Err(e) if age.is_some() => {
                eprintln!("interop-tests: apt-get update failed, using the old lists: {e}")
            }
            Err(e) => return Err(e),
        }
        *updated = true;
    }
    Ok(options)
}

/// The kernel image package of `suite`; the backports suite's apt state lives below `cache`.
pub fn suite_kernel_package(suite: KernelSuite, cache: &Path) -> Result<String> {
    match suite {
        KernelSuite::Stable => kernel_package(),
        KernelSuite::Backports => {
            let options = backports_apt(&backports_state(cache))?;
            let out = run(Command::new("apt-cache")
                .args(&options)
                .args(["depends", KERNEL_META_PACKAGE]))?;
            kernel_in_depends(&out)
        }
    }
}

/// Where the private apt state of the backports suite lives in the cache directory.
fn backports_state(cache: &Path) -> PathBuf {
    cache.join("apt-backports")
}

/// Downloads the kernel package `package` of `suite` into `debs` (a no-op when cached there).
pub fn fetch_kernel(
    suite: KernelSuite,
    cache: &Path,
    debs: &Path,
    package: &str,
) -> Result<PathBuf> {
    let packages = [package.to_string()];
    let found = match suite {
        KernelSuite::Stable => fetch(debs, &packages)?,
        KernelSuite::Backports => {
            let options = backports_apt(&backports_state(cache))?;
            fetch_with(debs, &packages, |tmp, missing| {
                run_in(
                    tmp,
                    Command::new("apt-get")
                        .args(&options)
                        .arg("download")
                        .args(missing),
                )
            })?
        }
    };
    found
        .into_iter()
        .next()
        .ok_or_else(|| HarnessError::Image(format!("no .deb for the kernel package {package}")))
}

/// Runs `apt-get update` at most once per process; used when apt metadata is missing or stale.
fn apt_update() -> Result<()> {
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        eprintln!("interop-tests: running apt-get update");
        run(Command::new("apt-get").args(APT_LOCK_WAIT).arg("update"))?;
    }
    Ok(())
}

/// Runs an apt command; on failure refreshes the package lists once and retries.
fn with_apt_retry<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    f().or_else(|first| {
        if APT_UPDATED.load(Ordering::SeqCst) {
            return Err(first);
        }
        apt_update()?;
        f()
    })
}

/// The kernel image package `linux-image-amd64` depends on in the configured apt sources
/// (e.g. `linux-image-6.1.0-56-amd64` on bookworm).
pub fn kernel_package() -> Result<String> {
    with_apt_retry(|| {
        let out = run(Command::new("apt-cache").args(["depends", KERNEL_META_PACKAGE]))?;
        kernel_in_depends(&out)
    })
}

/// The `linux-image-*` package in `apt-cache depends linux-image-amd64` output.
fn kernel_in_depends(out: &str) -> Result<String> {
    depends_of(out)
        .into_iter()
        .find(|p| p.starts_with("linux-image-"))
        .ok_or_else(|| {
            HarnessError::Image(format!(
                "`apt-cache depends {KERNEL_META_PACKAGE}` names no linux-image package:\n{out}"
            ))
        })
}

/// The (pre-)dependencies listed in `apt-cache depends` output, virtual packages (`<name>`) left out.
pub fn depends_of(apt_cache_output: &str) -> Vec<String> {
    apt_cache_output
        .lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches('|');
            l.strip_prefix("Depends:")
                .or_else(|| l.strip_prefix("PreDepends:"))
        })
        .map(str::trim)
        .filter(|p| !p.starts_with('<') && !p.is_empty())
        .map(|p| p.split(':').next().unwrap_or(p).to_string())
        .collect()
}

/// The library dependencies (names containing `lib`, e.g. `libaio1`, `zlib1g`) of `packages`: the
/// candidates for providing a shared library a file of those packages needs.
pub fn library_dependencies(packages: &[String]) -> Result<BTreeSet<String>> {
    if packages.is_empty() {
        return Ok(BTreeSet::new());
    }
    let out = with_apt_retry(|| run(Command::new("apt-cache").arg("depends").args(packages)))?;
    Ok(depends_of(&out)
        .into_iter()
        .filter(|p| p.contains("lib"))
        .collect())
}

/// The cached `.deb` of `package` in `debs`, if one was downloaded before.
fn cached_deb(debs: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    let mut found = None;
    for e in fs::read_dir(debs).map_err(io_err(format!("listing {}", debs.display())))? {
        let e = e.map_err(io_err("reading the deb cache"))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            found = Some(e.path());
        }
    }
    Ok(found)
}

/// Returns the `.deb` file of each package, downloading the missing ones into `debs` with
/// `apt-get download` (into a private directory first, so concurrent builds never see partial files).
pub fn fetch(debs: &Path, packages: &[String]) -> Result<Vec<PathBuf>> {
    fetch_with(debs, packages, |tmp, missing| {
        with_apt_retry(|| run_in(tmp, Command::new("apt-get").arg("download").args(missing)))
    })
}

/// [`fetch`] with the download step given: `download(dir, missing)` puts the `.deb` files of
/// `missing` into `dir`.
fn fetch_with(
    debs: &Path,
    packages: &[String],
    download: impl Fn(&Path, &[String]) -> Result<String>,
) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(debs).map_err(io_err(format!("creating {}", debs.display())))?;
    let mut missing = Vec::new();
    for p in packages {
        if cached_deb(debs, p)?.is_none() {
            missing.push(p.clone());
        }
    }
    if !missing.is_empty() {
        eprintln!("interop-tests: apt-get download {}", missing.join(" "));
        let tmp = tempfile::tempdir_in(debs).map_err(io_err("creating a download directory"))?;
        download(tmp.path(), &missing)?;
        for e in fs::read_dir(tmp.path()).map_err(io_err("listing downloads"))? {
            let e = e.map_err(io_err("listing downloads"))?;
            fs::rename(e.path(), debs.join(e.file_name()))
                .map_err(io_err("moving a download into the cache"))?;
        }
    }
    packages
        .iter()
        .map(|p| {
            cached_deb(debs, p)?.ok_or_else(|| {
                HarnessError::Image(format!("apt-get download left no .deb for {p}"))
            })
        })
        .collect()
}

/// Extracts a `.deb` into `dest` with `dpkg-deb -x` (files only; maintainer scripts do not run).
pub fn extract(deb: &Path, dest: &Path) -> Result<()> {
    fs::create_dir_all(dest).map_err(io_err(format!("creating {}", dest.display())))?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apt_cache_depends_output() {
        // Layout of `apt-cache depends` (apt 2.6): alternatives marked with `|`, virtual packages in <>.
        let out = "open-iscsi\n  Depends: udev\n |Depends: debconf\n  Depends: <debconf-2.0>\n  \
                   PreDepends: libc6\n  Depends: libisns0\n  Recommends: finalrd\n";
        assert_eq!(depends_of(out), ["udev", "debconf", "libc6", "libisns0"]);
    }
}
