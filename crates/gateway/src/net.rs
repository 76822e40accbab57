//! Socket set-up shared by the front ends (socket2): listeners and accepted connections.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Binds a listening socket with SO_REUSEADDR, so a restarted daemon can take its port back
/// while old connections linger in TIME_WAIT.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    TcpListener::from_std(s.into())
}

/// Prepares an accepted connection: no Nagle delay (both protocols are request/response and
/// latency bound), and TCP keepalive so a vanished host is noticed even when the protocol's own
/// liveness checks (NOP-In, Keep Alive) are not running.
pub fn tune(stream: &TcpStream) {
    let s = socket2::SockRef::from(stream);
    let _ = s.set_nodelay(true);
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    let _ = s.set_tcp_keepalive(&ka);
}
