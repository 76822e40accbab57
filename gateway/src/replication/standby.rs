//! The standby's side: the replication listener accepts primaries, finds the volume a
//! primary's Hello names, and runs a sans-IO [`StandbyLink`] for it: records applied to the
//! engine in order, barriers answered once they are durable, newer epochs adopted.
//!
//! Full resync (a primary whose log no longer holds what this standby needs) is a later step:
//! the resync events close the connection with a log line saying so.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blockstore::repl::frame::Frame;
use blockstore::repl::standby::{StandbyConfig, StandbyEvent, StandbyLink};
use blockstore::{Engine, Error};
use tokio::task::AbortHandle;

use super::state::StatusCell;
use super::wire::{self, FrameReader, FrameSender};

/// How long a new connection may take to send its Hello.
const HELLO_WITHIN: Duration = Duration::from_secs(10);

/// A volume this node can receive replication for.
pub struct StandbyVolume {
    /// Volume name (for logs).
    pub name: String,
    /// Its engine.
    pub engine: Arc<Engine>,
    /// What status shows.
    pub status: Arc<StatusCell>,
    /// Held while records are applied or the applied position is read, so that a replaced
    /// link's last apply (still on a blocking thread) finishes before the next link starts
    /// from the durable position.
    apply: Arc<Mutex<()>>,
    /// The link serving the volume now; a new primary connection replaces it.
    current: Mutex<Option<AbortHandle>>,
}

impl StandbyVolume {
    /// A volume receivable over replication.
    pub fn new(name: String, engine: Arc<Engine>, status: Arc<StatusCell>) -> StandbyVolume {
        StandbyVolume {
            name,
            engine,
            status,
            apply: Arc::new(Mutex::new(())),
            current: Mutex::new(None),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> blockstore::Result<T> + Send + 'static,
) -> blockstore::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
}

/// Accepts primaries on `listener` until `stop`.
pub async fn accept_loop(
    listener: tokio::net::TcpListener,
    vols: Arc<BTreeMap<[u8; 16], Arc<StandbyVolume>>>,
    node_id: [u8; 16],
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut links = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, from)) => {
                    let vols = vols.clone();
                    let stop = stop.clone();
                    links.spawn(async move {
                        let (mut rd, tx) = wire::split(stream);
                        let hello = match tokio::time::timeout(HELLO_WITHIN, rd.next()).await {
                            Ok(Ok(Frame::Hello(h))) => h,
                            Ok(Ok(_)) => return tracing::warn!(%from, "replication connection did not start with a Hello"),
                            Ok(Err(e)) => return tracing::warn!(%from, error = %e, "replication connection failed before its Hello"),
                            Err(_) => return tracing::warn!(%from, "no Hello on a replication connection"),
                        };
                        let Some(vol) = vols.get(&hello.volume_uuid).cloned() else {
                            return tracing::warn!(%from, uuid = %uuid::Uuid::from_bytes(hello.volume_uuid),
                                "a primary offers a volume this node does not hold as a replicated volume");
                        };
                        let link = tokio::spawn(serve_link(vol.clone(), node_id, Frame::Hello(hello), rd, tx, stop));
                        let old = vol
                            .current
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .replace(link.abort_handle());
                        if let Some(old) = old {
                            old.abort();
                        }
                        let _ = link.await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "replication accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => break,
            Some(_) = links.join_next(), if !links.is_empty() => {}
        }
    }
    links.shutdown().await;
}

/// Serves one primary connection for `vol`, starting with the primary's `hello`.
async fn serve_link(
    vol: Arc<StandbyVolume>,
    node_id: [u8; 16],
    hello: Frame,
    mut rd: FrameReader,
    tx: FrameSender,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let name = vol.name.clone();
    let (e, lock) = (vol.engine.clone(), vol.apply.clone());
    let durable = match blocking(move || {
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        e.sync_applied()
    })
    .await
    {
        Ok(d) => d,
        Err(e) => {
            return tracing::error!(volume = %name, error = %e, "cannot read the applied position")
        }
    };
    let cfg = StandbyConfig {
        volume_uuid: vol.engine.uuid(),
        node_id,
        block_size: vol.engine.block_size(),
        capacity_blocks: vol.engine.capacity_blocks(),
    };
    let mut link = StandbyLink::new(cfg, vol.engine.role_state().epoch, durable);
    link.receive(hello);
    tracing::info!(volume = %name, durable, "a primary connected");
    vol.status.update(|s| {
        s.connected = true;
        s.durable_lsn = durable;
    });
    let why = loop {
        if let Err(why) = work(&vol, &mut link, &tx).await {
            break why;
        }
        let f = tokio::select! {
            f = rd.next() => f,
            _ = stop.changed() => break "the node is shutting down".to_string(),
        };
        match f {
            Ok(f) => link.receive(f),
            Err(e) => break format!("connection: {e}"),
        }
        // Frames that arrived together (records and the barrier after them) are taken
        // together, so that one blocking call applies and syncs them.
        loop {
            match rd.try_next() {
                Ok(Some(f)) => link.receive(f),
                Ok(None) => break,
                Err(e) => return close(&vol, &mut link, &tx, format!("connection: {e}")),
            }
        }
    };
    close(&vol, &mut link, &tx, why);
}

/// Ends a connection: whatever the link queued last (a Fenced answer) still goes out before
/// the socket closes.
fn close(vol: &StandbyVolume, link: &mut StandbyLink, tx: &FrameSender, why: String) {
    while let Some(f) = link.poll_frame() {
        tx.send(&f);
    }
    tracing::warn!(volume = %vol.name, reason = %why, "the primary's replication connection closed");
    vol.status.update(|s| s.connected = false);
}

/// Does the link's work and sends its frames; an error ends the connection. Records to apply
/// and a barrier right after them are one blocking call: append, then sync (group commit of
/// apply and fsync), and the barrier's Ack is queued as soon as the sync returns.
async fn work(vol: &StandbyVolume, link: &mut StandbyLink, tx: &FrameSender) -> Result<(), String> {
    loop {
        let mut progress = false;
        let mut events: VecDeque<StandbyEvent> = std::iter::from_fn(|| link.poll_event()).collect();
        while let Some(ev) = events.pop_front() {
            progress = true;
            let e = vol.engine.clone();
            match ev {
                StandbyEvent::AdoptEpoch(epoch) => {
                    blocking(move || e.observe_epoch(epoch))
                        .await
                        .map_err(|e| format!("adopting epoch {epoch}: {e}"))?;
                    tracing::info!(volume = %vol.name, epoch, "adopted the primary's epoch");
                }
                StandbyEvent::Apply(mut recs) => {
                    while let Some(StandbyEvent::Apply(more)) = events.front_mut() {
                        recs.append(more);
                        events.pop_front();
                    }
                    let sync = matches!(events.front(), Some(StandbyEvent::Sync));
                    if sync {
                        events.pop_front();
                    }
                    let lock = vol.apply.clone();
                    let synced = blocking(move || {
                        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                        let recs: Vec<_> = recs.into_iter().map(wire::from_wire).collect();
                        e.apply_replicated(&recs)?;
                        drop(guard);
                        if sync {
                            e.sync_applied().map(Some)
                        } else {
                            Ok(None)
                        }
                    })
                    .await
                    .map_err(|e| format!("applying records: {e}"))?;
                    if let Some(d) = synced {
                        synced_through(vol, link, d);
                    }
                }
                StandbyEvent::Sync => {
                    let d = blocking(move || e.sync_applied())
                        .await
                        .map_err(|e| format!("syncing: {e}"))?;
                    synced_through(vol, link, d);
                }
                StandbyEvent::ResyncBegin { .. }
                | StandbyEvent::ResyncExtent { .. }
                | StandbyEvent::ResyncEnd { .. } => {
                    return Err("the primary starts a full resync, which this version cannot do yet (a later step): closing".into());
                }
            }
        }
        while let Some(f) = link.poll_frame() {
            progress = true;
            if !tx.send(&f) {
                return Err("the primary does not read".into());
            }
        }
        if let Some(why) = link.close_reason() {
            return Err(why.to_string());
        }
        if !progress {
            return Ok(());
        }
    }
}

/// Everything applied through `durable` is durable: the barrier's Ack is queued at once.
fn synced_through(vol: &StandbyVolume, link: &mut StandbyLink, durable: u64) {
    link.synced(durable);
    vol.status.update(|s| s.durable_lsn = durable);
}
