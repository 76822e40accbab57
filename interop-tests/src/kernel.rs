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

/// The zstd magic that starts a zstd frame.
const ZSTD_MAGIC: &[u8] = &[0x28, 0xB5, 0x2F, 0xFD];

/// The zstd-compressed kernel inside a bzImage, located through the x86 boot header
/// (`setup_sects`, `payload_offset`, `payload_length`) and without the 4-byte decompressed size
/// the build appends, so `zstd -d` sees exactly one frame. `None` when the header does not
/// describe a zstd payload inside the file.
fn zstd_payload(bz: &[u8]) -> Option<&[u8]> {
    let u32_at = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bz.get(at..at + 4)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(b)).ok()
    };
    if bz.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let setup_sects = match *bz.get(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
    let end = start.checked_add(u32_at(0x24c)?)?.checked_sub(4)?;
    let payload = bz.get(start..end)?;
    payload.starts_with(ZSTD_MAGIC).then_some(payload)
}

/// Writes the uncompressed ELF kernel found inside `boot/vmlinuz-<release>` to `out`.
///
/// QEMU boots an ELF `vmlinux` through its PVH entry point, skipping the bzImage's own
/// decompression, which under TCG saves several seconds per boot.
pub fn extract_vmlinux(kernel_root: &Path, release: &str, out: &Path) -> Result<()> {
    let bz_path = kernel_root.join(format!("boot/vmlinuz-{release}"));
    let bz = fs::read(&bz_path).map_err(io_err(format!("reading {}", bz_path.display())))?;
    // bookworm's 6.1 is XZ-compressed; newer Debian kernels (6.12 in backports) use zstd.
    let (program, args, payload): (&str, &[&str], Vec<u8>) =
        match bz.windows(XZ_MAGIC.len()).position(|w| w == XZ_MAGIC) {
            Some(start) => ("xz", &["-dc", "--single-stream"], bz[start..].to_vec()),
            None => match zstd_payload(&bz) {
                Some(p) => ("zstd", &["-dc"], p.to_vec()),
                None => {
                    return Err(HarnessError::Image(format!(
                        "no XZ or zstd payload in {}",
                        bz_path.display()
                    )))
                }
            },
        };
    let file = fs::File::create(out).map_err(io_err(format!("creating {}", out.display())))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(format!("starting {program}")))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let feeder = std::thread::spawn(move || stdin.write_all(&payload));
    let res = child
        .wait_with_output()
        .map_err(io_err(format!("running {program}")))?;
    // xz stops reading after the stream, so a broken pipe from the feeder is expected.
    let _ = feeder.join();
    if !res.status.success() {
        return Err(HarnessError::Image(format!(
            "{program} could not decompress the kernel: {}",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A bzImage-shaped buffer: boot header with `setup_sects`, `payload_offset` and
    /// `payload_length`, and `payload` (plus the 4-byte size trailer) where they point.
    fn bz_image(setup_sects: u8, payload: &[u8]) -> Vec<u8> {
        let start = (usize::from(setup_sects.max(1)) + 1) * 512;
        let mut bz = vec![0u8; start + 0x40];
        bz[0x1f1] = setup_sects;
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x248..0x24c].copy_from_slice(&0x40u32.to_le_bytes());
        let len = u32::try_from(payload.len() + 4).unwrap();
        bz[0x24c..0x250].copy_from_slice(&len.to_le_bytes());
        bz.extend_from_slice(payload);
        bz.extend_from_slice(&[0xAA; 4]);
        bz.extend_from_slice(&[0u8; 16]);
        bz
    }

    #[test]
    fn finds_the_zstd_payload_through_the_boot_header() {
        let payload = [ZSTD_MAGIC, b"frame"].concat();
        let bz = bz_image(30, &payload);
        assert_eq!(zstd_payload(&bz), Some(&payload[..]));
    }

    #[test]
    fn rejects_headers_that_do_not_describe_a_zstd_payload() {
        assert_eq!(zstd_payload(&bz_image(30, b"not zstd")), None);
        let mut no_magic = bz_image(30, &[ZSTD_MAGIC, b"x"].concat());
        no_magic[0x202] = b'X';
        assert_eq!(zstd_payload(&no_magic), None);
        let mut too_long = bz_image(30, &[ZSTD_MAGIC, b"x"].concat());
        too_long[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(zstd_payload(&too_long), None);
        assert_eq!(zstd_payload(&[0u8; 16]), None);
    }
}
