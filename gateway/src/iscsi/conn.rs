//! One iSCSI connection: socket I/O around the sans-IO session state machine, and concurrent
//! execution of its SCSI commands on the logical units.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use proto_iscsi::pdu::TmfFunction;
use proto_iscsi::scsi::{absent_lun, Completion, Nexus};
use proto_iscsi::session::{CloseReason, Command, Connection, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::context::Ctx;
use super::shared::{IscsiShared, SessionInfo, Target};
use crate::counters::IoCounters;

/// The portal a connection arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Portal {
    /// iSCSI target portal group tag.
    pub tpgt: u16,
    /// SCSI relative target port identifier.
    pub relative_port: u16,
}

/// Commands one connection may have executing at once before it stops reading the socket.
const MAX_IN_FLIGHT: usize = 256;

struct Logged {
    nexus: Arc<Nexus>,
    target: Option<String>,
    counters: Arc<IoCounters>,
}

/// Serves one connection until logout, error, peer close or shutdown.
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<IscsiShared>,
    portal: Portal,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut cfg = shared.conn_cfg.clone();
    cfg.portal_group_tag = portal.tpgt;
    let mut conn = Connection::new(cfg);
    let mut ctx = Ctx {
        shared: shared.clone(),
    };
    // Commands run as futures polled by this task: no task spawn and no cross-thread wake-up
    // per command (reads served from the page cache complete on their first poll).
    let mut running: FuturesUnordered<CommandFuture> = FuturesUnordered::new();
    let mut logged: Option<Logged> = None;
    let mut buf = vec![0u8; 256 * 1024];
    let mut timer = tokio::time::interval(Duration::from_secs(1));
    let mut draining = *shutdown.borrow();
    let mut close_reason: Option<CloseReason> = None;
    let mut completed = 0u64;
    loop {
        tokio::select! {
            r = stream.read(&mut buf), if !draining && close_reason.is_none() && running.len() < MAX_IN_FLIGHT => {
                match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => conn.receive(&buf[..n], Instant::now(), &mut ctx),
                }
            }
            Some((itt, c, used)) = running.next(), if !running.is_empty() => {
                completed += 1;
                conn.complete(itt, &c, used);
                // Collect every other command that is already done before writing.
                while let Some(Some((itt, c, used))) = futures_util::FutureExt::now_or_never(running.next()) {
                    completed += 1;
                    conn.complete(itt, &c, used);
                }
            }
            _ = timer.tick() => conn.on_timer(Instant::now()),
            r = shutdown.changed(), if !draining => {
                let _ = r;
                draining = true;
            }
        }
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::LoggedIn(s) => {
                    let p = &s.params;
                    let isid = hex::encode(s.isid);
                    let nexus = Nexus {
                        id: shared.next_nexus(),
                        initiator_port: format!("{},i,0x{isid}", p.initiator_name),
                        target_port_group: crate::lu::NODE_PORT_GROUP,
                        relative_port: portal.relative_port,
                    };
                    tracing::info!(initiator = %p.initiator_name, target = ?p.target_name, %peer, "iSCSI login");
                    let counters = Arc::new(IoCounters::default());
                    if let Some(t) = &p.target_name {
                        if let Ok(mut sessions) = shared.sessions.lock() {
                            sessions.insert(
                                nexus.id,
                                SessionInfo {
                                    initiator: p.initiator_name.clone(),
                                    target: t.clone(),
                                    peer: peer.to_string(),
                                    since_unix: crate::time::unix_now(),
                                    counters: Arc::clone(&counters),
                                },
                            );
                        }
                    }
                    logged = Some(Logged {
                        nexus: Arc::new(nexus),
                        target: p.target_name.clone(),
                        counters,
                    });
                }
                Event::Command(cmd) => {
                    let Some(l) = &logged else { continue };
                    let target = l.target.as_ref().and_then(|t| shared.targets.get(t));
                    let counters = Arc::clone(&l.counters);
                    running.push(command_future(cmd, target, Arc::clone(&l.nexus), counters));
                }
                Event::Aborted(_) => {}
                Event::Reset { function, lun } => {
                    if let Some(t) = logged
                        .as_ref()
                        .and_then(|l| l.target.as_ref())
                        .and_then(|t| shared.targets.get(t))
                    {
                        let lus: Vec<_> = match function {
                            TmfFunction::TargetWarmReset | TmfFunction::TargetColdReset => {
                                t.luns.values().cloned().collect()
                            }
                            _ => lun
                                .index()
                                .and_then(|i| t.luns.get(&i))
                                .cloned()
                                .into_iter()
                                .collect(),
                        };
                        for lu in lus {
                            lu.lock().reset();
                        }
                    }
                }
                Event::Close(reason) => close_reason = Some(reason),
            }
        }
        if conn.has_output() {
            let out = conn.take_output();
            if stream.write_all(&out).await.is_err() {
                break;
            }
        }
        if (close_reason.is_some() || draining) && running.is_empty() {
            break;
        }
    }
    if let Some(reason) = &close_reason {
        tracing::info!(%peer, ?reason, "iSCSI connection closed");
    }
    if let Some(l) = logged {
        if let Ok(mut sessions) = shared.sessions.lock() {
            sessions.remove(&l.nexus.id);
        }
        if let Some(t) = l.target.as_ref().and_then(|t| shared.targets.get(t)) {
            for lu in t.luns.values() {
                lu.lock().nexus_lost(l.nexus.id);
            }
        }
    }
    let _ = completed;
    let _ = stream.shutdown().await;
}

type CommandFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = (u32, Completion, u32)> + Send>>;

/// Counts a completed command for the session: READ(6/10/12/16) by the data returned,
/// anything that sent data by the bytes it consumed, the rest as other commands.
fn count(counters: &IoCounters, cdb: &[u8], c: &Completion, used: u32) {
    match cdb.first() {
        Some(0x08 | 0x28 | 0xA8 | 0x88) => counters.read(c.data.len() as u64),
        _ if used > 0 => counters.write(u64::from(used)),
        _ => counters.other(),
    }
}

fn command_future(
    cmd: Command,
    target: Option<&Target>,
    nexus: Arc<Nexus>,
    counters: Arc<IoCounters>,
) -> CommandFuture {
    let lu = target.and_then(|t| cmd.lun.index().and_then(|i| t.luns.get(&i)).cloned());
    // The LUN inventory is only needed to answer for a LUN that does not exist.
    let lun_ids: Vec<u16> = match (&lu, target) {
        (None, Some(t)) => t.luns.keys().copied().collect(),
        _ => Vec::new(),
    };
    Box::pin(async move {
        let (c, used) = match lu {
            Some(lu) => {
                let expected_out = if cmd.write { cmd.expected_len } else { 0 };
                lu.execute(&nexus, &cmd.cdb, cmd.data_out, expected_out)
                    .await
            }
            None => (absent_lun(&cmd.cdb, &lun_ids), 0),
        };
        count(&counters, &cmd.cdb, &c, used);
        (cmd.itt, c, used)
    })
}
