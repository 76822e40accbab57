//! A meeting point between a guest script and the host test, for scenarios in phases: the guest
//! says "data written", the host restarts the target, the guest waits until the host says
//! "restarted" and goes on.
//!
//! The guest script runs to completion inside one [`crate::Guest::run`] call and the console is
//! read only by the harness, so the two sides talk over a tiny TCP service on the host instead:
//! every connection first receives the host's current state (one line), and whatever lines the
//! guest sends are recorded as messages. The guest side is busybox `nc` (see [`GUEST_FUNCTIONS`]).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{io_err, Result};

/// Shell functions for guest scripts (source them, with `RV_PORT` set to [`Rendezvous::port`]):
/// `rv_send MESSAGE` tells the host something; `rv_wait STATE [SECONDS]` polls until the host's
/// state is `STATE` (default limit 120 s) and fails the script otherwise, or at once when the
/// host's state is `abort` ([`Rendezvous::abort`]).
pub const GUEST_FUNCTIONS: &str = r#"
rv_send() {
    for _rv_try in 1 2 3 4 5; do
        if echo "$1" | nc -w 5 "$TANDEM_HOST" "$RV_PORT" >/dev/null; then
            echo "rendezvous: sent $1"
            return 0
        fi
        sleep 1
    done
    echo "rendezvous: could not send $1"
    exit 1
}
rv_wait() {
    _rv_limit=${2:-120}
    _rv_start=$(date +%s)
    while :; do
        _rv_state=$(echo | nc -w 5 "$TANDEM_HOST" "$RV_PORT" 2>/dev/null)
        if [ "$_rv_state" = "$1" ]; then
            echo "rendezvous: host is $1"
            return 0
        fi
        if [ "$_rv_state" = abort ]; then
            echo "rendezvous: the host gave up"
            exit 1
        fi
        if [ $(( $(date +%s) - _rv_start )) -ge "$_rv_limit" ]; then
            echo "rendezvous: host state '$_rv_state', not '$1' after ${_rv_limit}s"
            exit 1
        fi
        sleep 1
    done
}
"#;

#[derive(Default)]
struct Shared {
    state: String,
    messages: Vec<String>,
}

/// The host side of the meeting point: a listener on 127.0.0.1 (reached by guests at
/// `10.0.2.2:port`), stopped when dropped.
pub struct Rendezvous {
    port: u16,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Rendezvous {
    /// Listens on a free loopback port with the state `initial`.
    pub fn start(initial: &str) -> Result<Rendezvous> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(io_err("binding the rendezvous port"))?;
        let port = listener
            .local_addr()
            .map_err(io_err("reading the rendezvous port"))?
            .port();
        listener
            .set_nonblocking(true)
            .map_err(io_err("configuring the rendezvous listener"))?;
        let shared = Arc::new((
            Mutex::new(Shared {
                state: initial.to_string(),
                messages: Vec::new(),
            }),
            Condvar::new(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || serve(listener, shared, stop))
        };
        Ok(Rendezvous {
            port,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The port guests connect to (as `$TANDEM_HOST:port`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sets the state every later connection receives.
    pub fn set_state(&self, state: &str) {
        let (m, _) = &*self.shared;
        m.lock().unwrap_or_else(|e| e.into_inner()).state = state.to_string();
        println!("[rendezvous] host state: {state}");
    }

    /// Makes every guest waiting in `rv_wait` give up: for a host side that failed.
    pub fn abort(&self) {
        self.set_state("abort");
    }

    /// Waits until a guest has sent `message` (at any time since the start), up to `timeout`.
    pub fn wait_for(&self, message: &str, timeout: Duration) -> bool {
        let (m, cv) = &*self.shared;
        let deadline = Instant::now() + timeout;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if g.messages.iter().any(|x| x == message) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Every message received so far, in order.
    pub fn messages(&self) -> Vec<String> {
        let (m, _) = &*self.shared;
        m.lock().unwrap_or_else(|e| e.into_inner()).messages.clone()
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: TcpListener, shared: Arc<(Mutex<Shared>, Condvar)>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = shared.clone();
                std::thread::spawn(move || handle(stream, &shared));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Sends the current state, then records every non-empty line the peer sends until it closes.
fn handle(mut stream: TcpStream, shared: &(Mutex<Shared>, Condvar)) {
    let (m, cv) = shared;
    let state = m.lock().unwrap_or_else(|e| e.into_inner()).state.clone();
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.write_all(format!("{state}\n").as_bytes());
    for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
        let line = line.trim().to_string();
        if line.is_empty() {
            continue;
        }
        println!("[rendezvous] guest says: {line}");
        m.lock()
            .unwrap_or_else(|e| e.into_inner())
            .messages
            .push(line);
        cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn talk(port: u16, send: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(send.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).ok();
        got
    }

    #[test]
    fn state_is_served_and_messages_are_recorded() {
        let rv = Rendezvous::start("waiting").unwrap();
        assert!(!rv.wait_for("written", Duration::from_millis(100)));
        let got = talk(rv.port(), "written\n");
        assert!(got.starts_with("waiting\n"), "{got:?}");
        assert!(rv.wait_for("written", Duration::from_secs(5)));
        rv.set_state("restarted");
        assert!(talk(rv.port(), "\n").starts_with("restarted\n"));
        assert_eq!(rv.messages(), vec!["written".to_string()]);
    }
}
