//! The guest kernel: the uncompressed ELF extracted from Debian's bzImage, and the kernel modules
//! the initiators need, with their dependencies, plus a `modules.dep` for busybox `modprobe`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{io_err, HarnessError, Result};
use crate::host::run;

/// Modules loaded by `/init` at boot, in order (names as `modprobe` takes them).
pub const BOOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "configfs",
    "crc32c_generic",
    "crc32c-intel",
    "libcrc32c",
    "scsi_mod",
    "sd_mod",
    "sg",
    "scsi_dh_alua",
    "scsi_transport_iscsi",
    "libiscsi",
    "libiscsi_tcp",
    "iscsi_tcp",
    "dm-mod",
    "dm-multipath",
    "dm-round-robin",
    "dm-service-time",
    "nvme-core",
    "nvme-fabrics",
    "nvme-tcp",
];

/// Modules put into the image but not loaded: the kernel's own NVMe target (a reference peer),
/// RAM and null block devices, and ext4 for filesystem tests.
pub const EXTRA_MODULES: &[&str] = &["nvmet", "nvmet-tcp", "brd", "null_blk", "ext4"];

/// Modules of NVMe in-band authentication (DH-HMAC-CHAP), put into images whose kernel has
/// `CONFIG_NVME_AUTH` (the backports kernel); `nvme-core` depends on them there, so they load
/// with it at boot.
pub const AUTH_MODULES: &[&str] = &["nvme-keyring", "nvme-auth"];

/// The XZ stream magic that starts the compressed payload inside a Debian bzImage.
const XZ_MAGIC: &[u8] = &[0xFD, b'7', b'z', b'X', b'Z', 0x00];

/// The kernel release (e.g. `6.1.0-56-amd64`) of an extracted kernel package: its one
/// `lib/modules/<release>` directory.
pub fn kernel_release(kernel_root: &Path) -> Result<String> {
    let dir = kernel_root.join("lib/modules");
    let mut releases: Vec<String> = fs::read_dir(&dir)
        .map_err(io_err(format!("listing {}", dir.display())))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match releases.len() {
        1 => Ok(releases.remove(0)),
        _ => Err(HarnessError::Image(format!(
            "expected one kernel release in {}, found {releases:?}",
            dir.display()
        ))),
    }
}

/// Writes the uncompressed ELF kernel found inside `boot/vmlinuz-<release>` to `out`.
///
/// QEMU boots an ELF `vmlinux` through its PVH entry point, skipping the bzImage's own
/// decompression, which under TCG saves several seconds per boot.
pub fn extract_vmlinux(kernel_root: &Path, release: &str, out: &Path) -> Result<()> {
    let bz_path = kernel_root.join(format!("boot/vmlinuz-{release}"));
    let bz = fs::read(&bz_path).map_err(io_err(format!("reading {}", bz_path.display())))?;
    let start = bz
        .windows(XZ_MAGIC.len())
        .position(|w| w == XZ_MAGIC)
        .ok_or_else(|| HarnessError::Image(format!("no XZ stream in {}", bz_path.display())))?;
    let file = fs::File::create(out).map_err(io_err(format!("creating {}", out.display())))?;
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("starting xz"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let payload = bz[start..].to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&payload));
    let res = child.wait_with_output().map_err(io_err("running xz"))?;
    // xz stops reading after the stream, so a broken pipe from the feeder is expected.
    let _ = feeder.join();
    if !res.status.success() {
        return Err(HarnessError::Image(format!(
            "xz could not decompress the kernel: {}",
            String::from_utf8_lossy(&res.stderr)
        )));
    }
    let mut magic = [0u8; 4];
    use std::io::Read;
    fs::File::open(out)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(io_err("reading vmlinux"))?;
    if magic != *b"\x7fELF" {
        return Err(HarnessError::Image("decompressed kernel is not ELF".into()));
    }
    Ok(())
}

/// Writes the decompressed contents of the XZ file `src` to `dest`.
fn decompress_xz(src: &Path, dest: &Path) -> Result<()> {
    let file = fs::File::create(dest).map_err(io_err(format!("creating {}", dest.display())))?;
    let res = Command::new("xz")
        .arg("-dc")
        .arg(src)
        .stdout(file)
        .stderr(Stdio::piped())
        .output()
        .map_err(io_err("starting xz"))?;
    if !res.status.success() {
        return Err(HarnessError::Image(format!(
            "xz could not decompress {}: {}",
            src.display(),
            String::from_utf8_lossy(&res.stderr)
        )));
    }
    Ok(())
}

/// Copies `modules` and everything they depend on from the extracted kernel package into
/// `image_root`, then runs `depmod` there so busybox `modprobe` resolves dependencies in the guest.
/// XZ-compressed modules (`.ko.xz`, newer Debian kernels) are stored decompressed, so busybox
/// `modprobe` needs no decompression support.
pub fn install_modules(
    kernel_root: &Path,
    release: &str,
    modules: &[&str],
    image_root: &Path,
) -> Result<()> {
    let system_map = kernel_root.join(format!("boot/System.map-{release}"));
    // The package ships no modules.dep; modprobe --show-depends needs one.
    run(Command::new("depmod")
        .arg("-b")
        .arg(kernel_root)
        .arg("-F")
        .arg(&system_map)
        .arg(release))?;
    let src_dir = kernel_root.join("lib/modules").join(release);
    let dest_dir = image_root.join("lib/modules").join(release);
    fs::create_dir_all(&dest_dir).map_err(io_err("creating the modules directory"))?;
    for m in modules {
        let out = run(Command::new("modprobe").arg("-d").arg(kernel_root).args([
            "-S",
            release,
            "--show-depends",
            m,
        ]))?;
        for path in out.lines().filter_map(|l| l.strip_prefix("insmod ")) {
            let path = PathBuf::from(path.trim());
            let rel = path.strip_prefix(&src_dir).map_err(|_| {
                HarnessError::Image(format!(
                    "module {} outside {}",
                    path.display(),
                    src_dir.display()
                ))
            })?;
            let dest = dest_dir.join(rel);
            fs::create_dir_all(dest.parent().unwrap_or(&dest_dir))
                .map_err(io_err("creating a module directory"))?;
            if path.extension().is_some_and(|e| e == "xz") {
                decompress_xz(&path, &dest.with_extension(""))?;
            } else {
                fs::copy(&path, &dest).map_err(io_err(format!("copying {}", path.display())))?;
            }
        }
    }
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        if src_dir.join(f).exists() {
            fs::copy(src_dir.join(f), dest_dir.join(f)).map_err(io_err(format!("copying {f}")))?;
        }
    }
    run(Command::new("depmod")
        .arg("-b")
        .arg(image_root)
        .arg("-F")
        .arg(&system_map)
        .arg(release))
    .map(drop)
}
