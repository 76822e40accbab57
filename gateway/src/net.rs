//! Socket set-up shared by the front ends (socket2): listeners and accepted connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The node's connection limit, shared by every listener of both protocols: one permit per
/// open connection.
pub type ConnectionLimit = Arc<Semaphore>;

/// A connection limit of `max` connections.
pub fn connection_limit(max: usize) -> ConnectionLimit {
    Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS)))
}

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

/// Accepts connections on `listener` until shutdown, tuning each ([`tune`]) and serving it
/// with `serve` as its own task while it holds a permit of `limit`; a connection beyond the
/// limit is closed at once. Then stops listening and waits for every connection to finish
/// (each sees the same shutdown signal and drains its in-flight commands).
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    limit: ConnectionLimit,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    let mut refusing = false;
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                        // Closed at once: holding it, even unread, would cost a descriptor
                        // and kernel buffers. Logged once per episode, not per connection.
                        if !refusing {
                            tracing::warn!(%peer, "connection limit reached: refusing connections");
                        }
                        refusing = true;
                        drop(stream);
                        continue;
                    };
                    refusing = false;
                    tune(&stream);
                    let conn = serve(stream, peer, shutdown.clone());
                    conns.spawn(async move {
                        conn.await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}
