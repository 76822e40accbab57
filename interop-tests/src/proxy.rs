//! A TCP relay between a guest and one node's listener that a test can cut: the path-loss
//! case of the failover tests (the primary's listener unreachable, the process untouched).
//!
//! Cutting a path with a firewall rule needs netfilter in the host kernel and root-owned,
//! machine-wide state; the relay gives the same view to the host (its packets answered by no
//! one, its connections open but silent) with nothing outside the test process. Once cut,
//! bytes from either side are read and dropped, and new connections are accepted and held
//! silent, as a `DROP` rule on the port would leave them.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

fn accept_loop(listener: TcpListener, to: SocketAddr, cut: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    let mut pumps = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                let _ = client.set_nodelay(true);
                if cut.load(Ordering::SeqCst) {
                    // Held silent until the relay stops.
                    pumps.push(std::thread::spawn({
                        let stop = stop.clone();
                        move || {
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
                    }));
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&to, Duration::from_secs(5)) else {
                    // The node does not listen: the client sees its connection closed, as it
                    // would see a refused one.
                    continue;
                };
                let _ = server.set_nodelay(true);
                for (from, into) in [(&client, &server), (&server, &client)] {
                    let (Ok(from), Ok(into)) = (from.try_clone(), into.try_clone()) else {
                        continue;
                    };
                    let (cut, stop) = (cut.clone(), stop.clone());
                    pumps.push(std::thread::spawn(move || pump(from, into, &cut, &stop)));
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

/// Copies `from` into `into` until either side closes or the relay stops; drops the bytes
/// once the path is cut.
fn pump(mut from: TcpStream, mut into: TcpStream, cut: &AtomicBool, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(Ordering::SeqCst) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if cut.load(Ordering::SeqCst) {
                    continue;
                }
                if into.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => break,
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
}
