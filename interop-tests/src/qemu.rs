//! Booting a guest: the per-test archive, the QEMU command line, console streaming, the time
//! limit, and the script's exit status read back from the console.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::cpio::CpioWriter;
use crate::error::{io_err, Result};
use crate::image::GuestImage;
use crate::init::{EXIT_MARKER, START_MARKER, TEST_DIR};
use crate::packages::{ImageFlavor, KernelSuite};

/// Default time limit for one guest run, boot included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

/// How long QEMU gets to power off after the script finished before it is killed.
const POWEROFF_GRACE: Duration = Duration::from_secs(15);

/// Entry point of the guest API: `Guest::builder().script("...").run()`.
pub struct Guest;

impl Guest {
    /// A builder for one guest run with the defaults (no script, [`DEFAULT_TIMEOUT`], 1 GiB, 2 CPUs).
    pub fn builder() -> GuestBuilder {
        GuestBuilder {
            script: String::new(),
            kernel_args: Vec::new(),
            env: Vec::new(),
            files: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            memory_mib: 1024,
            cpus: 2,
            name: "guest".into(),
            qemu_args: Vec::new(),
            kernel: KernelSuite::Stable,
            flavor: ImageFlavor::Standard,
        }
    }
}

/// Configures one guest run. The script runs under busybox `sh` after `/init` set up the guest.
#[derive(Debug, Clone)]
pub struct GuestBuilder {
    script: String,
    kernel_args: Vec<String>,
    env: Vec<(String, String)>,
    files: Vec<(String, Vec<u8>, u32)>,
    timeout: Duration,
    memory_mib: u32,
    cpus: u32,
    name: String,
    qemu_args: Vec<String>,
    kernel: KernelSuite,
    flavor: ImageFlavor,
}

impl GuestBuilder {
    /// Boots the kernel of `suite` (default: [`KernelSuite::Stable`]); each suite has its own
    /// cached image.
    pub fn kernel(mut self, suite: KernelSuite) -> Self {
        self.kernel = suite;
        self
    }

    /// Boots the image of `flavor` (default: [`ImageFlavor::Standard`]); each flavour has its
    /// own cached image.
    pub fn flavor(mut self, flavor: ImageFlavor) -> Self {
        self.flavor = flavor;
        self
    }

    /// The shell script to run in the guest; its exit status is the outcome.
    pub fn script(mut self, script: impl Into<String>) -> Self {
        self.script = script.into();
        self
    }

    /// Extra kernel command-line arguments (readable in the guest from `/proc/cmdline`).
    pub fn kernel_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.kernel_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable exported to the script (e.g. the target's port).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// An extra file for the script, placed under `/tandem/` in the guest (`name` is relative to it).
    pub fn file(mut self, name: impl Into<String>, data: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push((name.into(), data.into(), mode));
        self
    }

    /// Time limit for the whole run; QEMU is killed when it passes.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Guest memory in MiB.
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Number of guest CPUs.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// Extra QEMU arguments (e.g. a second `-netdev`/`-device` pair for multipath tests).
    pub fn qemu_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.qemu_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Prefix of the console lines in the test log, to tell several guests apart.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Builds the image if needed, boots the guest, streams its console to the test log and
    /// returns once the script finished, QEMU died, or the time limit passed.
    pub fn run(self) -> Result<GuestOutcome> {
        let image = GuestImage::shared_flavor(self.kernel, self.flavor)?;
        let dir = tempfile::Builder::new()
            .prefix("tandem-guest-")
            .tempdir()
            .map_err(io_err("creating the guest directory"))?;
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let initrd = dir.path().join("initrd");
        self.write_initrd(&initrd, &image.initrd, &nonce)?;
        let mut append = vec!["console=ttyS0".to_string(), "panic=-1".to_string()];
        append.extend(self.kernel_args.iter().cloned());
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg", "-cpu", "max", "-nographic", "-no-reboot"])
            .args([
                "-smp",
                &self.cpus.to_string(),
                "-m",
                &self.memory_mib.to_string(),
            ])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", &append.join(" ")])
            .args([
                "-netdev",
                "user,id=n0",
                "-device",
                "virtio-net-pci,netdev=n0,romfile=",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        crate::host::kill_with_parent(&mut cmd);
        let started = Instant::now();
        let mut qemu = QemuChild(cmd.spawn().map_err(io_err("starting qemu-system-x86_64"))?);
        let lines = console_lines(&mut qemu.0);
        let outcome = self.watch(&mut qemu, &lines, started, &nonce);
        drop(qemu);
        println!(
            "[{}] {:?}: script started after {:?}, run took {:?}",
            self.name, outcome.status, outcome.boot_to_script, outcome.elapsed
        );
        Ok(outcome)
    }

    fn write_initrd(&self, initrd: &Path, base: &Path, nonce: &str) -> Result<()> {
        let mut w = CpioWriter::new(Vec::new());
        let dir = TEST_DIR.trim_start_matches('/');
        let mut env = String::new();
        for (k, v) in &self.env {
            env.push_str(&format!("export {k}='{}'\n", v.replace('\'', r"'\''")));
        }
        let mut made_dirs = vec![dir.to_string()];
        let res = w
            .dir(dir, 0o755)
            .and_then(|_| w.file(&format!("{dir}/script.sh"), 0o755, self.script.as_bytes()))
            .and_then(|_| w.file(&format!("{dir}/nonce"), 0o644, nonce.as_bytes()))
            .and_then(|_| w.file(&format!("{dir}/env"), 0o644, env.as_bytes()));
        res.map_err(io_err("writing the test archive"))?;
        for (name, data, mode) in &self.files {
            let path = format!("{dir}/{}", name.trim_start_matches('/'));
            // Parent directories first: the kernel does not create them.
            let mut parent = String::new();
            for part in path
                .split('/')
                .collect::<Vec<_>>()
                .split_last()
                .map_or(&[][..], |p| p.1)
            {
                parent = if parent.is_empty() {
                    part.to_string()
                } else {
                    format!("{parent}/{part}")
                };
                if !made_dirs.contains(&parent) {
                    w.dir(&parent, 0o755)
                        .map_err(io_err("writing the test archive"))?;
                    made_dirs.push(parent.clone());
                }
            }
            w.file(&path, *mode, data)
                .map_err(io_err("writing the test archive"))?;
        }
        let small = w.finish().map_err(io_err("writing the test archive"))?;
        // The small archive goes first: the kernel unpacks both, and nothing is lost whatever
        // compression the base archive might use.
        let mut out = fs::File::create(initrd).map_err(io_err("creating the initrd"))?;
        std::io::Write::write_all(&mut out, &small).map_err(io_err("writing the initrd"))?;
        let mut base = fs::File::open(base).map_err(io_err("opening the base initrd"))?;
        std::io::copy(&mut base, &mut out).map_err(io_err("writing the initrd"))?;
        Ok(())
    }

    fn watch(
        &self,
        qemu: &mut QemuChild,
        lines: &Receiver<String>,
        started: Instant,
        nonce: &str,
    ) -> GuestOutcome {
        let deadline = started + self.timeout;
        let mut console = String::new();
        let mut boot_to_script = None;
        let mut status = None;
        let mut grace_deadline = None;
        loop {
            let now = Instant::now();
            let limit = grace_deadline.unwrap_or(deadline);
            if now >= limit {
                break;
            }
            match lines.recv_timeout(limit - now) {
                Ok(line) => {
                    println!("[{}] {line}", self.name);
                    console.push_str(&line);
                    console.push('\n');
                    if marker_rest(&line, START_MARKER, nonce).is_some() {
                        boot_to_script = Some(started.elapsed());
                    } else if let Some(rest) = marker_rest(&line, EXIT_MARKER, nonce) {
                        if let Ok(code) = rest.trim().parse::<i32>() {
                            status = Some(GuestStatus::Exited(code));
                            grace_deadline = Some(Instant::now() + POWEROFF_GRACE);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    // Console closed: QEMU exited.
                    let _ = qemu.0.wait();
                    break;
                }
            }
        }
        let status = status.unwrap_or_else(|| match qemu.0.try_wait() {
            Ok(Some(st)) => GuestStatus::QemuExited(st.to_string()),
            _ => {
                println!(
                    "[{}] time limit {:?} passed: killing QEMU",
                    self.name, self.timeout
                );
                GuestStatus::TimedOut
            }
        });
        GuestOutcome {
            status,
            console,
            boot_to_script,
            elapsed: started.elapsed(),
        }
    }
}

/// The text after `<marker> <nonce> ` on a console line, if the line carries this run's marker.
fn marker_rest<'a>(line: &'a str, marker: &str, nonce: &str) -> Option<&'a str> {
    let at = line.find(marker)?;
    let rest = line[at + marker.len()..].trim_start();
    rest.strip_prefix(nonce)
}

/// Merges QEMU's stdout (the serial console) and stderr into one stream of lines.
fn console_lines(child: &mut Child) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let streams: Vec<Box<dyn Read + Send>> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .collect();
    for stream in streams {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            while matches!(r.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                if tx.send(line).is_err() {
                    break;
                }
                buf.clear();
            }
        });
    }
    rx
}

/// A QEMU process that is killed and reaped when dropped, so no test leaves a guest running.
struct QemuChild(Child);

impl Drop for QemuChild {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// How a guest run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestStatus {
    /// The test script finished with this exit status.
    Exited(i32),
    /// The time limit passed before the script finished; QEMU was killed.
    TimedOut,
    /// QEMU exited before the script finished (kernel panic, init failure, QEMU error).
    QemuExited(String),
}

/// The result of a guest run.
#[derive(Debug, Clone)]
pub struct GuestOutcome {
    /// How the run ended.
    pub status: GuestStatus,
    /// Everything the guest printed on its console (and QEMU on stderr), one line per line.
    pub console: String,
    /// Time from starting QEMU until the test script started, if it did.
    pub boot_to_script: Option<Duration>,
    /// Time from starting QEMU until the run ended.
    pub elapsed: Duration,
}

impl GuestOutcome {
    /// The script's exit status, if it finished.
    pub fn exit_code(&self) -> Option<i32> {
        match self.status {
            GuestStatus::Exited(code) => Some(code),
            _ => None,
        }
    }

    /// Whether the time limit ended the run.
    pub fn timed_out(&self) -> bool {
        self.status == GuestStatus::TimedOut
    }

    /// Panics (failing the test) unless the script exited with status 0.
    #[track_caller]
    pub fn assert_success(&self) {
        assert_eq!(
            self.status,
            GuestStatus::Exited(0),
            "guest script failed; console above"
        );
    }
}
