//! Loopback TCP ports for tests: picking a free one and waiting until a server accepts on it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::error::{io_err, Result};

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it for a listener that is
/// then closed). Parallel tests each get their own port; a guest reaches it at `10.0.2.2:<port>`.
pub fn free_tcp_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("binding 127.0.0.1:0"))?;
    Ok(l.local_addr()
        .map_err(io_err("reading the local address"))?
        .port())
}

/// `n` distinct TCP ports on 127.0.0.1 that were free a moment ago: all held at once while they
/// are picked, so no two are the same (one [`free_tcp_port`] after another may repeat a port).
pub fn free_tcp_ports(n: usize) -> Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(io_err("binding 127.0.0.1:0")))
        .collect::<Result<Vec<_>>>()?;
    held.iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(io_err("reading the local address"))
        })
        .collect()
}

/// Whether something accepts TCP connections on `addr` right now.
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Polls `addr` until it accepts a connection or `timeout` passes; returns whether it did.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if accepts(addr) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_can_be_bound_and_waited_for() {
        let port = free_tcp_port().unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        assert!(!wait_for_port(addr, Duration::from_millis(100)));
        let _l = TcpListener::bind(addr).unwrap();
        assert!(wait_for_port(addr, Duration::from_secs(2)));
    }
}
