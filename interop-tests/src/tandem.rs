//! Running the `tandem` binary for a test: on a private data directory, ready once its port
//! accepts connections, killed when the test drops it.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{io_err, HarnessError, Result};
use crate::paths::profile_dir;
use crate::ports::accepts;

/// Environment variable naming the binary to start instead of the workspace's built `tandem`.
pub const TANDEM_BIN_ENV: &str = "TANDEM_BIN";

/// The binary [`TandemProcess`] starts by default: `$TANDEM_BIN`, else `tandem` next to the test
/// binaries in the cargo target directory (built by `cargo build -p gateway`).
pub fn tandem_bin() -> PathBuf {
    std::env::var_os(TANDEM_BIN_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            profile_dir()
                .unwrap_or_else(|| "target/debug".into())
                .join("tandem")
        })
}

/// A running server process owned by a test.
///
/// The process runs in its own temporary directory (also its working directory), its output goes
/// to the test log with a `[tandem]` prefix, and it is killed when this value is dropped. (Unlike
/// QEMU it is not tied to the starting thread's life, so one process may be shared by tests.)
pub struct TandemProcess {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    bin: PathBuf,
    args: Vec<OsString>,
    log: ProcessLog,
}

/// Every line the process printed (both streams, escape sequences removed), with the moment it
/// was read: tests look for log lines (and measure when they came), e.g. a dropped controller.
type ProcessLog = Arc<Mutex<Vec<(Instant, String)>>>;

impl TandemProcess {
    /// Starts [`tandem_bin`] with `args` and waits until `127.0.0.1:port` accepts connections.
    pub fn start<I, S>(args: I, port: u16, timeout: Duration) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self::start_binary(&tandem_bin(), args, port, timeout)
    }

    /// Starts `bin` with `args` (`{dir}` in an argument is replaced by the data directory) and
    /// waits until `127.0.0.1:port` accepts connections; fails if the process exits first.
    pub fn start_binary<I, S>(bin: &Path, args: I, port: u16, timeout: Duration) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        if !bin.is_file() {
            return Err(HarnessError::MissingBinary {
                path: bin.to_path_buf(),
                hint: format!("build it with `cargo build -p gateway` or set {TANDEM_BIN_ENV}"),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("tandem-test-")
            .tempdir()
            .map_err(io_err("creating the data directory"))?;
        let dir_str = dir.path().to_string_lossy().into_owned();
        let args: Vec<OsString> = args
            .into_iter()
            .map(|a| {
                let a: OsString = a.into();
                match a.to_str() {
                    Some(s) if s.contains("{dir}") => s.replace("{dir}", &dir_str).into(),
                    _ => a,
                }
            })
            .collect();
        let log = ProcessLog::default();
        let child = spawn(bin, &args, dir.path(), &log)?;
        let mut proc = TandemProcess {
            child,
            dir,
            addr: ([127, 0, 0, 1], port).into(),
            bin: bin.to_path_buf(),
            args,
            log,
        };
        proc.wait_ready(timeout)?;
        Ok(proc)
    }

    /// Starts the same binary again with the same arguments, in the same data directory, and
    /// waits until the same port accepts connections: a restart of the server on its persistent
    /// state, as an operator (or a crash and a supervisor) would do it.
    ///
    /// A process still running is killed (SIGKILL) first; stop it with [`Self::signal_and_wait`]
    /// beforehand to choose how it stops.
    pub fn restart(&mut self, timeout: Duration) -> Result<()> {
        if self.is_running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.child = spawn(&self.bin, &self.args, self.dir.path(), &self.log)?;
        self.wait_ready(timeout)
    }

    /// Waits until the port accepts connections; fails if the process exits first.
    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(HarnessError::Process(format!(
                    "{} exited ({status}) before accepting on {}",
                    self.bin.display(),
                    self.addr
                )));
            }
            if accepts(self.addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Process(format!(
                    "{} did not accept on {} within {timeout:?}",
                    self.bin.display(),
                    self.addr
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process's private data directory (its working directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The address it was waited on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every output line so far (across restarts), with the moment the harness read it.
    pub fn log_lines(&self) -> Vec<(Instant, String)> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits up to `timeout` for an output line accepted by `matches` (lines printed before
    /// the call count too); returns the first such line and when it was read.
    pub fn wait_for_log(
        &self,
        timeout: Duration,
        mut matches: impl FnMut(&str) -> bool,
    ) -> Option<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(hit) = self
                .log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|(_, l)| matches(l))
            {
                return Some(hit.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`, `libc::SIGKILL`) and waits up to `timeout` for the
    /// process to exit. Returns its exit status, or `None` if it is still running.
    pub fn signal_and_wait(
        &mut self,
        signal: i32,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) only reads its arguments; the pid belongs to our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TandemProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `bin` in `dir` with its output forwarded to the test log and recorded in `log`.
fn spawn(bin: &Path, args: &[OsString], dir: &Path, log: &ProcessLog) -> Result<Child> {
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(format!("starting {}", bin.display())))?;
    forward(child.stdout.take(), "tandem", log.clone());
    forward(child.stderr.take(), "tandem", log.clone());
    Ok(child)
}

/// Copies a child's output stream into the test log, line by line, with a prefix, and records
/// each line without terminal escape sequences in `log`.
fn forward(stream: Option<impl Read + Send + 'static>, prefix: &'static str, log: ProcessLog) {
    if let Some(s) = stream {
        std::thread::spawn(move || {
            for line in BufReader::new(s).lines().map_while(|l| l.ok()) {
                println!("[{prefix}] {line}");
                let plain = strip_escapes(&line);
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((Instant::now(), plain));
            }
        });
    }
}

/// `line` without ANSI CSI sequences (`ESC [ ... letter`): the colours a logger may add.
pub fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_stripped() {
        assert_eq!(
            strip_escapes("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m closed reason=x"),
            "2026  INFO closed reason=x"
        );
        assert_eq!(strip_escapes("plain"), "plain");
    }

    #[test]
    fn missing_binary_is_a_clear_error() {
        let err = TandemProcess::start_binary(
            Path::new("/nonexistent/tandem"),
            ["serve"],
            1,
            Duration::from_secs(1),
        )
        .err()
        .expect("must fail");
        let text = err.to_string();
        assert!(matches!(err, HarnessError::MissingBinary { .. }), "{text}");
        assert!(
            text.contains("/nonexistent/tandem") && text.contains(TANDEM_BIN_ENV),
            "{text}"
        );
    }

    #[test]
    fn early_exit_is_reported() {
        let port = crate::ports::free_tcp_port().unwrap();
        let err = TandemProcess::start_binary(
            Path::new("/bin/sh"),
            ["-c", "exit 4"],
            port,
            Duration::from_secs(10),
        )
        .err()
        .expect("must fail");
        assert!(err.to_string().contains("exited"), "{err}");
    }

    #[test]
    fn waits_for_the_port_and_kills_on_drop() {
        let port = crate::ports::free_tcp_port().unwrap();
        // A stand-in server: python is not guaranteed, but perl ships with Debian's base system
        // (scripts/deps.sh checks it).
        let script = format!(
            "use IO::Socket::INET; open(F, '>>', '{{dir}}/started'); print F \"started\\n\"; close F; \
             my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1:{port}', Listen => 5, ReuseAddr => 1) \
             or die; while (my $c = $s->accept) {{ close $c }}"
        );
        let mut p = TandemProcess::start_binary(
            Path::new("/usr/bin/perl"),
            ["-e".to_string(), script],
            port,
            Duration::from_secs(20),
        )
        .unwrap();
        assert!(p.is_running());
        assert!(p.dir().join("started").exists(), "{{dir}} substituted");
        let addr = p.addr();
        // A restart runs in the same directory and listens on the same port again.
        assert!(p
            .signal_and_wait(libc::SIGKILL, Duration::from_secs(5))
            .is_some());
        assert!(
            !crate::ports::accepts(addr),
            "the killed server still accepts"
        );
        p.restart(Duration::from_secs(20)).unwrap();
        assert!(p.is_running() && crate::ports::accepts(addr));
        assert_eq!(
            std::fs::read_to_string(p.dir().join("started")).unwrap(),
            "started\nstarted\n"
        );
        drop(p);
        assert!(!crate::ports::wait_for_port(
            addr,
            Duration::from_millis(300)
        ));
    }
}
