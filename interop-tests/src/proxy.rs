//! A TCP relay between a guest and one node's listener that a test can cut: the path-loss
//! case of the failover tests (the primary's listener unreachable, the process untouched).
//!
//! Cutting a path with a firewall rule needs netfilter in the host kernel and root-owned,
//! machine-wide state; the relay gives the same view to the host (its packets answered by no
//! one, its connections open but silent) with nothing outside the test process. Once cut,
//! bytes from either side are read and dropped, and new connections are accepted and held
//! silent, as a `DROP` rule on the port would leave them.
//!
//! While the node is down (killed, restarting) the relay refuses connections as the node's own
//! port would: when the node ends a relayed connection and no longer listens, the relay stops
//! listening before it closes the host's side (a connection it cannot forward anyway is reset),
//! until the node accepts again. (Accepting and closing at once instead left open-iscsi's
//! reconnection stuck in "can't bind conn ... retcode -107" after the node came back.)

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{io_err, Result};

/// How often relay threads look at the stop and cut flags while idle.
const POLL: Duration = Duration::from_millis(100);

/// A relay from a loopback port to `127.0.0.1:target`; stopped (every connection closed)
/// when dropped.
pub struct PathProxy {
    port: u16,
    target: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PathProxy {
    /// Listens on a free loopback port and relays every connection to `127.0.0.1:target`.
    pub fn start(target: u16) -> Result<PathProxy> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(io_err("binding the relay port"))?;
        let port = listener
            .local_addr()
            .map_err(io_err("reading the relay port"))?
            .port();
        listener
            .set_nonblocking(true)
            .map_err(io_err("configuring the relay listener"))?;
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (cut, stop) = (cut.clone(), stop.clone());
            let to: SocketAddr = ([127, 0, 0, 1], target).into();
            std::thread::spawn(move || accept_loop(listener, to, cut, stop))
        };
        Ok(PathProxy {
            port,
            target,
            cut,
            stop,
            thread: Some(thread),
        })
    }

    /// The port the relay listens on (guests reach it at `10.0.2.2:port`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node's own port behind the relay.
    pub fn target(&self) -> u16 {
        self.target
    }

    /// Makes the path silent: nothing more crosses in either direction, on open or new
    /// connections.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        println!("[proxy] path {} -> {} cut", self.port, self.target);
    }

    /// Lets traffic cross again (on new connections; the ones open during the cut stay silent).
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
        println!("[proxy] path {} -> {} healed", self.port, self.target);
    }
}

impl Drop for PathProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The relay's listening socket, closed while the node does not listen.
type Slot = Arc<Mutex<Option<TcpListener>>>;

fn accept_loop(listener: TcpListener, to: SocketAddr, cut: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let slot: Slot = Arc::new(Mutex::new(Some(listener)));
    let mut pumps = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let accepted = {
            let guard = slot.lock().unwrap_or_else(|e| e.into_inner());
            guard.as_ref().map(|l| l.accept())
        };
        let Some(accepted) = accepted else {
            // The node was not listening: this port refuses connections too (as the node's
            // own would) until the node accepts again.
            std::thread::sleep(POLL);
            if TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_ok() {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = relisten(port);
            }
            continue;
        };
        match accepted {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                let _ = client.set_nodelay(true);
                if cut.load(Ordering::SeqCst) {
                    pumps.push(std::thread::spawn({
                        let stop = stop.clone();
                        move || hold_silent(client, &stop)
                    }));
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&to, Duration::from_secs(5)) else {
                    // The node does not listen: reset this connection (a host sees what a
                    // refused connection shows it, not an accepted one closed at once) and
                    // refuse the next ones.
                    reset(client);
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    continue;
                };
                let _ = server.set_nodelay(true);
                for (from, into, from_node) in [(&client, &server, false), (&server, &client, true)]
                {
                    let (Ok(from), Ok(into)) = (from.try_clone(), into.try_clone()) else {
                        continue;
                    };
                    let (cut, stop) = (cut.clone(), stop.clone());
                    // Only the node's side watches for the node going away.
                    let watch = from_node.then(|| (slot.clone(), to));
                    pumps.push(std::thread::spawn(move || {
                        pump(from, into, &cut, &stop, watch)
                    }));
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
        pumps.retain(|p: &JoinHandle<()>| !p.is_finished());
    }
    for p in pumps {
        let _ = p.join();
    }
}

/// Listens on `port` again (the OS sets SO_REUSEADDR), non-blocking; `None` if it cannot yet.
fn relisten(port: u16) -> Option<TcpListener> {
    let l = TcpListener::bind(("127.0.0.1", port)).ok()?;
    l.set_nonblocking(true).ok()?;
    Some(l)
}

/// Closes `s` with a reset (SO_LINGER 0) instead of an orderly close.
fn reset(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `linger` (a valid, live value of the size passed) and the
    // descriptor belongs to `s`, open until it is dropped below.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

/// Reads and drops whatever a connection accepted on a cut path sends, until the relay stops.
fn hold_silent(client: TcpStream, stop: &AtomicBool) {
    let _ = client.set_read_timeout(Some(POLL));
    let mut buf = [0u8; 4096];
    let mut c = &client;
    while !stop.load(Ordering::SeqCst) {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => break,
        }
    }
}

/// Copies `from` into `into` until either side closes or the relay stops; drops the bytes
/// once the path is cut. With `watch` (the node's side), a connection the node ended makes the
/// relay check that the node still listens, and stop listening itself if not, before the
/// host's side is closed: a host that reconnects at once is refused, as it would be by the
/// node's own port, instead of being accepted and reset.
fn pump(
    mut from: TcpStream,
    mut into: TcpStream,
    cut: &AtomicBool,
    stop: &AtomicBool,
    watch: Option<(Slot, SocketAddr)>,
) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 64 << 10];
    let mut node_ended = false;
    while !stop.load(Ordering::SeqCst) {
        match from.read(&mut buf) {
            Ok(0) => {
                node_ended = true;
                break;
            }
            Ok(n) => {
                if cut.load(Ordering::SeqCst) {
                    continue;
                }
                if into.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => {
                node_ended = true;
                break;
            }
        }
    }
    if let Some((slot, to)) = watch.filter(|_| node_ended && !cut.load(Ordering::SeqCst)) {
        if TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_err() {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
    if !cut.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
        let _ = into.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_until_cut_then_stays_silent() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = server.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in server.incoming().map_while(|s| s.ok()) {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = PathProxy::start(target).unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        c.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        proxy.cut();
        c.write_all(b"lost").unwrap();
        assert!(c.read(&mut got).is_err(), "a cut path answered");
        let mut d = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        d.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        d.write_all(b"new").unwrap();
        assert!(
            d.read(&mut got).is_err(),
            "a new connection crossed a cut path"
        );
    }

    #[test]
    fn a_node_that_goes_away_is_refused_before_the_host_sees_its_connection_end() {
        let node = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = node.local_addr().unwrap().port();
        let proxy = PathProxy::start(port).unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        let (s, _) = node.accept().unwrap();
        // The node dies: its listener and its connection close.
        drop(node);
        drop(s);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4];
        assert!(!matches!(c.read(&mut buf), Ok(n) if n > 0));
        assert!(
            TcpStream::connect(("127.0.0.1", proxy.port())).is_err(),
            "the relay accepted a reconnection for a node that went away"
        );
    }

    #[test]
    fn a_node_not_listening_is_refused_until_it_listens_again() {
        let port = crate::ports::free_tcp_port().unwrap();
        let proxy = PathProxy::start(port).unwrap();
        // The first connection is accepted by the relay, then reset.
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4];
        assert!(!matches!(c.read(&mut buf), Ok(n) if n > 0));
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            TcpStream::connect(("127.0.0.1", proxy.port())).is_err(),
            "the relay accepts for a node that does not listen"
        );
        let node = TcpListener::bind(("127.0.0.1", port)).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        c.write_all(b"back").unwrap();
        // The relay's probes reach the node too (connected and closed at once): skip them.
        let got = node.incoming().take(20).find_map(|s| {
            let mut s = s.ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.read_exact(&mut buf).ok().map(|_| buf)
        });
        assert_eq!(got.as_ref().map(|b| &b[..]), Some(&b"back"[..]));
    }
}
