//! Host commands: running them with useful errors, and installing the few the harness needs.
//!
//! The harness runs as root on throwaway Debian machines, so missing tools are installed with
//! apt-get on first use instead of being a manual setup step.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use crate::error::{io_err, HarnessError, Result};

/// Host tools the harness calls, with the Debian package that provides each.
pub const HOST_TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("depmod", "kmod"),
    ("modprobe", "kmod"),
    ("readelf", "binutils"),
    ("xz", "xz-utils"),
    ("zstd", "zstd"),
    ("cpio", "cpio"),
    ("dpkg-deb", "dpkg"),
    ("apt-get", "apt"),
    ("iscsi-test-cu", "libiscsi-bin"),
];

/// apt options that wait for the dpkg/apt locks instead of failing when another process holds them.
pub(crate) const APT_LOCK_WAIT: &[&str] = &["-o", "DPkg::Lock::Timeout=600"];

static INSTALL: Mutex<()> = Mutex::new(());

/// Whether an executable named `name` is on `PATH` (or in the sbin directories root has).
pub fn have_command(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(Into::into))
        .any(|dir| dir.join(name).is_file())
}

/// The repository's `scripts/deps.sh`: the one place that installs and checks the test tools.
pub fn deps_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("scripts/deps.sh"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| Path::new("scripts/deps.sh").to_path_buf())
}

/// Runs `scripts/deps.sh` (install what is missing, then check every tool) when a command of
/// [`HOST_TOOLS`] is missing; does nothing when all are present.
///
/// Exists so `cargo test -p interop-tests` works on a fresh machine without a setup step, through
/// the same installer as the README's test command (tools that must match each other, such as
/// qemu-img and its iscsi driver, are installed together there).
pub fn ensure_host_tools() -> Result<()> {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if HOST_TOOLS.iter().all(|(cmd, _)| have_command(cmd)) {
        return Ok(());
    }
    eprintln!("interop-tests: host tools missing, running scripts/deps.sh");
    run(Command::new("bash").arg(deps_script()))?;
    match HOST_TOOLS.iter().find(|(cmd, _)| !have_command(cmd)) {
        Some((cmd, pkg)) => Err(HarnessError::Image(format!(
            "`{cmd}` still missing after installing {pkg}"
        ))),
        None => Ok(()),
    }
}

/// Runs a command to completion, returning its stdout, or an error carrying its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command in `dir`, returning its stdout.
pub(crate) fn run_in(dir: &Path, cmd: &mut Command) -> Result<String> {
    run(cmd.current_dir(dir))
}

fn output(cmd: &mut Command) -> Result<Output> {
    let line = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("starting `{line}`")))?;
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
    Err(HarnessError::Command {
        command: line,
        status: out.status.to_string(),
        stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Makes the kernel send SIGKILL to the spawned process when the spawning thread exits, so a test
/// process that dies without running destructors (SIGKILL, abort) leaves no QEMU or server behind.
pub(crate) fn kill_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
