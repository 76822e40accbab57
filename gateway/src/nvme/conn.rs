//! One NVMe/TCP connection (one queue): socket I/O around the sans-IO `Connection`, Connect
//! admission against the shared registry, the keep-alive timer of an admin queue, and
//! concurrent execution of I/O commands on the volumes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use proto_nvmeof::{CloseReason, Connection, Event, IoResult, IoTag};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::exec;
use super::shared::{Control, NvmeShared};
use crate::target::VolumeTarget;

/// Commands one connection may have executing at once before it stops reading the socket
/// (the largest queue a host may ask for).
const MAX_IN_FLIGHT: usize = 1024;

/// Sleeps until `deadline`, or forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

type IoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = (IoTag, IoResult)> + Send>>;

/// Serves one connection until the host closes it, a protocol error, the association ends
/// (keep-alive expiry, admin queue lost) or shutdown; in-flight commands finish first.
pub(super) async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<NvmeShared>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
    let (id, counters) = shared.register_conn(ctl_tx, peer);
    let mut conn = Connection::new(Arc::clone(&shared.target));
    // I/O commands run as futures polled by this task: no task spawn and no cross-thread wake-up
    // per command (reads from the page cache complete on their first poll).
    let mut running: FuturesUnordered<IoFuture> = FuturesUnordered::new();
    let mut volumes: HashMap<u32, Option<Arc<VolumeTarget>>> = HashMap::new();
    // The reservation identity of the host, known once its Connect is admitted.
    let mut who = None;
    let mut buf = vec![0u8; 256 * 1024];
    let mut draining = *shutdown.borrow();
    let mut closing: Option<String> = None;
    loop {
        let deadline = conn.kato_deadline();
        tokio::select! {
            r = stream.read(&mut buf), if !draining && closing.is_none() && running.len() < MAX_IN_FLIGHT => {
                match r {
                    Ok(0) => closing = Some("host closed the connection".into()),
                    Err(e) => closing = Some(format!("read failed: {e}")),
                    Ok(n) => conn.receive(Instant::now(), buf.get(..n).unwrap_or_default()),
                }
            }
            Some((tag, result)) = running.next(), if !running.is_empty() => {
                conn.io_done(tag, result);
                // Collect every other command already done before writing.
                while let Some(Some((tag, result))) = running.next().now_or_never() {
                    conn.io_done(tag, result);
                }
            }
            Some(c) = ctl_rx.recv() => match c {
                Control::Subsystem(s) => conn.update_subsystem(s),
                Control::ReservationNotice { kind, nsid } => conn.reservation_notice(kind, nsid),
                Control::Close => {
                    closing.get_or_insert_with(|| "association ended".into());
                }
            },
            _ = until(deadline), if closing.is_none() => {
                conn.poll_timeout(Instant::now());
            }
            r = shutdown.changed(), if !draining => {
                let _ = r;
                draining = true;
            }
        }
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Connect(req) => {
                    let admission = shared.admit(id, &req);
                    tracing::info!(
                        %peer,
                        subnqn = %req.connect.subnqn,
                        hostnqn = %req.connect.hostnqn,
                        qid = req.connect.qid,
                        ?admission,
                        "NVMe connect"
                    );
                    if !matches!(admission, proto_nvmeof::Admission::Refused { .. }) {
                        let c = &req.connect;
                        who = Some(proto_nvmeof::reservation::registrant(&c.hostnqn, c.host_id));
                    }
                    conn.connect_done(Instant::now(), admission);
                }
                Event::Io { tag, nsid, op } => {
                    let lu = volumes
                        .entry(nsid)
                        .or_insert_with(|| conn.subnqn().and_then(|nqn| shared.volume(nqn, nsid)))
                        .clone();
                    let who = who.clone();
                    let counters = Arc::clone(&counters);
                    running.push(Box::pin(async move {
                        let r = match (lu, who) {
                            (Some(t), Some(who)) => exec::run(&t, &who, op, &counters).await,
                            _ => IoResult::Internal,
                        };
                        (tag, r)
                    }));
                }
                Event::Close(reason) => {
                    let why = match reason {
                        CloseReason::KeepAliveExpired => "keep-alive timeout expired".to_string(),
                        CloseReason::PeerTerminated => "host sent H2CTermReq".to_string(),
                        CloseReason::Protocol(e) => format!("protocol error: {e}"),
                    };
                    closing.get_or_insert(why);
                }
            }
        }
        let out = conn.take_output();
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            closing.get_or_insert_with(|| "write failed".into());
            if running.is_empty() {
                break;
            }
        }
        if (closing.is_some() || draining) && running.is_empty() {
            break;
        }
    }
    tracing::info!(
        %peer,
        cntlid = ?conn.cntlid(),
        qid = ?conn.qid(),
        reason = closing.as_deref().unwrap_or("shutdown"),
        "NVMe connection closed"
    );
    shared.unregister_conn(id);
    let _ = stream.shutdown().await;
}
