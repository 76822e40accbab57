//! The admin API's limits against a real `tandem serve` configured through its file: a client
//! that trickles its request headers (slow loris) is disconnected after
//! `header_read_timeout_ms` while other clients are served, and the connection beyond
//! `max_connections` is answered 503 and closed, a slot freeing up again when a client leaves.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `tandem serve` with only the admin API (and one small volume), killed on drop.
struct Daemon {
    child: Child,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Daemon {
    fn start(admin_keys: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let cfg = dir.path().join("tandem.toml");
        std::fs::write(
            &cfg,
            format!(
                "data_dir = \"{}\"\n[[volume]]\nname = \"default\"\nsize = \"16MiB\"\n\
                 wal_size = \"4MiB\"\n[iscsi]\nenabled = false\n[nvme]\nenabled = false\n\
                 [admin]\nlisten = \"{admin}\"\n{admin_keys}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            admin,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(d.admin, "/healthz").is_none() {
            assert!(Instant::now() < deadline, "the admin API never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }
}

/// `GET path` on a fresh connection: the whole response, or `None` when none came.
fn get(admin: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(admin).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    (!out.is_empty()).then_some(out)
}

/// Whether the server closed `s` (a read sees end of file or a reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn a_slow_loris_client_is_dropped_while_others_are_served() {
    let d = Daemon::start("header_read_timeout_ms = 700\nmax_connections = 8");
    let mut loris = TcpStream::connect(d.admin).unwrap();
    loris.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    // One header line every 100 ms, for up to 10 s: never a complete request head.
    let mut dropped_after = None;
    for i in 0..100 {
        if loris
            .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
            .is_err()
            || closed_within(&mut loris, Duration::from_millis(100))
        {
            dropped_after = Some(started.elapsed());
            break;
        }
        if i == 2 {
            // The daemon serves other clients meanwhile.
            let ok = get(d.admin, "/healthz").expect("a prompt client is answered");
            assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        }
    }
    let after = dropped_after.expect("the slow-loris client was never disconnected");
    assert!(
        after >= Duration::from_millis(600),
        "dropped too early ({after:?}): the timeout is 700 ms"
    );
    println!("slow loris dropped after {after:?} (header_read_timeout_ms = 700)");
}

#[test]
fn the_connection_beyond_max_connections_is_refused_and_a_freed_slot_is_reused() {
    let d = Daemon::start("header_read_timeout_ms = 20000\nmax_connections = 2");
    // Two clients hold both slots (each has begun a request, none finished it).
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(d.admin).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    // Give the server time to accept them (accepts are in order, so the probe is third).
    std::thread::sleep(Duration::from_millis(200));
    let refused = get(d.admin, "/healthz").expect("the third connection gets an answer");
    assert!(
        refused.starts_with("HTTP/1.1 503") && refused.contains("too many admin connections"),
        "{refused}"
    );
    // The held ones are still served once they finish their requests.
    let mut first = held.remove(0);
    first
        .write_all(b"Host: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    first.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(first);
    // Its slot is free again (the server notices the close asynchronously).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(d.admin, "/healthz").unwrap_or_default();
        if r.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed slot never served: {r}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(held);
}
