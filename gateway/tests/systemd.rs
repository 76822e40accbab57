//! Running under systemd: the unit file passes `systemd-analyze verify`, and the daemon tells
//! the service manager when it is ready (READY=1) and when it stops (STOPPING=1), while SIGHUP
//! does not stop it.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/tandem.service")
}

/// Runs `systemd-analyze verify` on `unit`; returns whether it succeeded and its diagnostics
/// about that unit (it exits 0 on values it ignores, so those lines are the real verdict).
fn verify(unit: &Path) -> (bool, Vec<String>) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("systemd-analyze runs (scripts/deps.sh installs it)");
    let name = unit.file_name().unwrap().to_string_lossy().to_string();
    let diagnostics = String::from_utf8_lossy(&out.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&out.stdout).lines())
        .filter(|l| l.contains(&name))
        .map(str::to_string)
        .collect();
    (out.status.success(), diagnostics)
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let text = std::fs::read_to_string(unit_path()).unwrap();
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "ExecStart=/usr/bin/tandem serve --config /etc/tandem/tandem.toml",
        "StateDirectory=tandem",
    ] {
        assert!(text.lines().any(|l| l == line), "unit lacks {line:?}");
    }
    // /usr/bin/tandem is not installed here, and verify checks the program exists: point it
    // at the binary under test, the rest of the unit verbatim.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("tandem.service");
    let bin = env!("CARGO_BIN_EXE_tandem");
    std::fs::write(&unit, text.replace("/usr/bin/tandem", bin)).unwrap();
    let (ok, diagnostics) = verify(&unit);
    assert!(ok && diagnostics.is_empty(), "{diagnostics:#?}");

    // The check sees mistakes: an unknown value is a diagnostic though verify exits 0.
    let broken = dir.path().join("broken.service");
    std::fs::write(
        &broken,
        text.replace("/usr/bin/tandem", bin)
            .replace("Type=notify", "Type=notifyy"),
    )
    .unwrap();
    let (_, diagnostics) = verify(&broken);
    assert!(
        diagnostics.iter().any(|l| l.contains("notifyy")),
        "{diagnostics:#?}"
    );
}

/// Waits up to `timeout` for the next datagram on `sock`.
fn next_message(sock: &UnixDatagram, timeout: Duration) -> Option<String> {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).to_string())
}

/// Waits up to `timeout` for a datagram containing the line `want`.
fn wait_for(sock: &UnixDatagram, want: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match next_message(sock, left) {
            Some(m) => {
                let found = m.lines().any(|l| l == want);
                seen.push(m);
                if found {
                    return seen;
                }
            }
            None => break,
        }
    }
    panic!("no {want} within {timeout:?}; got {seen:?}");
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: sending a signal to our own child process, which we have not reaped.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// Starts `tandem [args] serve` on free loopback ports with a notify socket; returns the
/// daemon (stderr piped), the socket, and the directory holding both.
fn start(args: &[&str]) -> (Child, UnixDatagram, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--volume",
            "default=16MiB",
            "--iscsi-listen",
            "127.0.0.1:0",
            "--nvme-listen",
            "127.0.0.1:0",
            "--nvme-discovery-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, sock, dir)
}

/// Stops the daemon with SIGTERM (checking it says STOPPING=1 and exits 0); returns its log.
fn stop(mut child: Child, sock: &UnixDatagram) -> String {
    signal(&child, libc::SIGTERM);
    wait_for(sock, "STOPPING=1", Duration::from_secs(30));
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    log
}

#[test]
fn daemon_notifies_ready_and_stopping_and_survives_sighup() {
    let (mut child, sock, _dir) = start(&[]);
    let seen = wait_for(&sock, "READY=1", Duration::from_secs(60));
    assert!(!seen.iter().any(|m| m.contains("STOPPING=1")), "{seen:?}");

    signal(&child, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP stopped the daemon"
    );
    assert!(
        next_message(&sock, Duration::from_millis(100)).is_none(),
        "SIGHUP is not a state change"
    );

    let log = stop(child, &sock);
    assert!(log.contains("SIGHUP"), "{log}");
    // stderr is not a terminal here: plain text, no colour codes
    assert!(!log.contains('\u{1b}'), "{log:?}");
    assert!(
        log.lines()
            .any(|l| l.contains("INFO") && l.contains("ready")),
        "{log}"
    );
}

#[test]
fn json_log_format_writes_one_object_per_line() {
    let (child, sock, _dir) = start(&["--log-format", "json"]);
    wait_for(&sock, "READY=1", Duration::from_secs(60));
    let log = stop(child, &sock);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let opened = lines
        .iter()
        .find(|v| v["fields"]["message"] == "opened volume")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(opened["fields"]["volume"], "default");
    assert_eq!(opened["level"], "INFO");
    assert!(lines
        .iter()
        .any(|v| v["fields"]["message"] == "volumes flushed and closed"));
}
