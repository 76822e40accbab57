//! The standby's side: the replication listener accepts primaries, finds the volume a
//! primary's Hello names, and runs a sans-IO [`StandbyLink`] for it: records applied to the
//! engine in order, barriers answered once they are durable, newer epochs adopted.
//!
//! Full resync (a primary whose log no longer holds what this standby needs): the image is
//! marked durably as being replaced before the first region is written, the copied regions go
//! through the engine's log, and the mark is cleared only once the records through the copy's
//! end are applied and durable (then the barrier is acknowledged). A standby that restarts with
//! the mark set announces it, and the primary starts the resync over.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blockstore::repl::frame::Frame;
use blockstore::repl::standby::{StandbyConfig, StandbyEvent, StandbyLink};
use blockstore::{Engine, Error};
use tokio::task::AbortHandle;

use super::state::{ResyncStatus, StatusCell};
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
    /// The paths hosts see to the volume on this node.
    pub paths: Arc<crate::paths::PathCell>,
    /// Held while records are applied or the applied position is read, so that a replaced
    /// link's last apply (still on a blocking thread) finishes before the next link starts
    /// from the durable position.
    apply: Arc<Mutex<()>>,
    /// The link serving the volume now; a new primary connection replaces it.
    current: Mutex<Option<AbortHandle>>,
    /// Set while a switchover records this node's position in the new primary's log: a
    /// primary that connects meanwhile is turned away (it retries).
    held: std::sync::atomic::AtomicBool,
    /// Rate-limits the log of links that close (a fenced node's listener meets the new
    /// primary's every retry): the first of a run at WARN, then a summary.
    closes: Mutex<super::retry::Retry>,
}

impl StandbyVolume {
    /// A volume receivable over replication.
    pub fn new(
        name: String,
        engine: Arc<Engine>,
        status: Arc<StatusCell>,
        paths: Arc<crate::paths::PathCell>,
    ) -> StandbyVolume {
        StandbyVolume {
            name,
            engine,
            status,
            paths,
            apply: Arc::new(Mutex::new(())),
            current: Mutex::new(None),
            held: Default::default(),
            closes: Default::default(),
        }
    }

    /// Turns primaries away (`true`) until called with `false`: the handover of a switchover
    /// sets where this node stands in the new primary's log before the new primary connects.
    pub fn hold(&self, on: bool) {
        self.held.store(on, std::sync::atomic::Ordering::SeqCst);
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
                        if vol.held.load(std::sync::atomic::Ordering::SeqCst) {
                            return tracing::info!(volume = %vol.name, %from, "a primary connected during a switchover's handover: turned away (it retries)");
                        }
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
    let epoch = vol.engine.role_state().epoch;
    super::path_link::hello_from(&vol.paths, &hello, vol.engine.role_state());
    let incomplete = vol.engine.resync_incomplete();
    let mut link = if incomplete {
        StandbyLink::needing_resync(cfg, epoch)
    } else {
        StandbyLink::new(cfg, epoch, durable)
    };
    link.receive(hello);
    let opened = std::time::Instant::now();
    if vol
        .closes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .failing()
    {
        tracing::debug!(volume = %name, durable, resync_incomplete = incomplete, "a primary connected");
    } else {
        tracing::info!(volume = %name, durable, resync_incomplete = incomplete, "a primary connected");
    }
    vol.status.update(|s| {
        s.connected = true;
        s.durable_lsn = durable;
    });
    let mut announcer = super::path_link::Announcer::default();
    let why = loop {
        if let Err(why) = work(&vol, &mut link, &tx).await {
            break why;
        }
        // After this node's Hello: its group, and again whenever it changed.
        announcer.announce(&vol.paths, vol.engine.role_state().epoch, &tx);
        let f = tokio::select! {
            f = rd.next() => f,
            _ = stop.changed() => break "the node is shutting down".to_string(),
        };
        match f {
            Ok(f) => take(&vol, &mut link, f).await,
            Err(e) => break format!("connection: {e}"),
        }
        // Frames that arrived together (records and the barrier after them) are taken
        // together, so that one blocking call applies and syncs them.
        loop {
            match rd.try_next() {
                Ok(Some(f)) => take(&vol, &mut link, f).await,
                Ok(None) => break,
                Err(e) => return close(&vol, &mut link, &tx, opened, format!("connection: {e}")),
            }
        }
    };
    close(&vol, &mut link, &tx, opened, why);
}

/// Takes one frame from the primary: what the primary says about this standby (`PeerState`) is
/// the driver's to record; everything else goes to the link.
async fn take(vol: &StandbyVolume, link: &mut StandbyLink, f: Frame) {
    match f {
        Frame::PeerState {
            epoch,
            in_sync,
            primary_lsn,
        } => {
            let (e, s) = (&vol.engine, &vol.status);
            super::standby_sync::told(&vol.name, e, s, epoch, in_sync, primary_lsn).await;
            if e.role_state().role == blockstore::Role::Standby {
                let shown = s.get().sync_state == Some(super::state::SyncName::InSync);
                vol.paths.set_standby_sync(shown);
            }
        }
        f @ Frame::PathState { epoch, .. } => {
            // A serving primary shows its standby by how it counts it; a primary meeting an
            // older epoch here keeps its own view (it fences that node).
            let mine = vol.engine.role_state();
            let take_state = mine.role != blockstore::Role::Primary || epoch > mine.epoch;
            super::path_link::learned(&vol.paths, &f, take_state);
        }
        f => {
            super::standby_sync::saw(&vol.status, &f);
            link.receive(f)
        }
    }
}

/// Ends a connection (opened at `opened`): whatever the link queued last (a Fenced answer)
/// still goes out before the socket closes.
fn close(
    vol: &StandbyVolume,
    link: &mut StandbyLink,
    tx: &FrameSender,
    opened: std::time::Instant,
    why: String,
) {
    while let Some(f) = link.poll_frame() {
        tx.send(&f);
    }
    let report = {
        let mut closes = vol.closes.lock().unwrap_or_else(|e| e.into_inner());
        if opened.elapsed() >= super::retry::STABLE_LINK {
            closes.succeeded();
        }
        closes.failed(std::time::Instant::now()).1
    };
    match report {
        super::retry::Report::First => {
            tracing::warn!(volume = %vol.name, reason = %why, "the primary's replication connection closed")
        }
        super::retry::Report::Summary { failures, over } => {
            tracing::warn!(volume = %vol.name, closed = failures, over_s = over.as_secs(), last_reason = %why,
                "the primary's replication connections keep closing")
        }
        super::retry::Report::Quiet => {
            tracing::debug!(volume = %vol.name, reason = %why, "the primary's replication connection closed")
        }
    }
    let partial = vol.engine.resync_incomplete();
    vol.status.update(|s| {
        s.connected = false;
        if let Some(r) = s.resync.as_mut().filter(|_| partial) {
            // The next connection starts it over.
            r.phase = "interrupted".into();
        }
    });
}

/// Does the link's work and sends its frames; an error ends the connection. The records that
/// arrived together are one blocking call: append, then sync (group commit of apply and
/// fsync), whether or not a barrier came with them; a barrier's Ack is queued as soon as the
/// sync returns, and a barrier for records durable already is answered at once (by the link),
/// so a FUA write's barrier, which usually trails its records, does not wait for a second
/// blocking call.
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
                StandbyEvent::Grow(_)
                | StandbyEvent::Apply(_)
                | StandbyEvent::Sync
                | StandbyEvent::ResyncBegin { .. }
                | StandbyEvent::ResyncExtent { .. }
                | StandbyEvent::ResyncEnd { .. }
                | StandbyEvent::ResyncComplete
                    if vol.engine.role_state().role != blockstore::Role::Standby =>
                {
                    // A primary (fenced by this link or not) or a stale old primary applies
                    // nothing, nor takes a full resync: its image is its own until it is
                    // demoted knowingly (the demotion then resets its position, and a rebuild
                    // done before would be undone). Nor does it acknowledge a barrier: an
                    // empty catch-up would otherwise count it in sync with an image that is
                    // not the primary's.
                    return Err(format!(
                        "this node is {} here, not a standby: it applies no records and takes no resync",
                        vol.engine.role_state().role.name()
                    ));
                }
                StandbyEvent::Grow(blocks) => {
                    let old = vol.engine.capacity_blocks();
                    blocking(move || e.follow_capacity(blocks))
                        .await
                        .map_err(|e| {
                            format!("growing to the primary's size of {blocks} blocks: {e}")
                        })?;
                    tracing::warn!(volume = %vol.name, old_blocks = old, new_blocks = blocks,
                        "the primary's volume is larger: grown to its size before taking its log");
                }
                StandbyEvent::Apply(mut recs) => {
                    while let Some(StandbyEvent::Apply(more)) = events.front_mut() {
                        recs.append(more);
                        events.pop_front();
                    }
                    // What is applied is synced at once, barrier or not: a barrier for it
                    // (usually in flight already) is then answered without waiting for a sync.
                    if matches!(events.front(), Some(StandbyEvent::Sync)) {
                        events.pop_front();
                    }
                    let lock = vol.apply.clone();
                    let d = blocking(move || {
                        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                        let recs: Vec<_> = recs.into_iter().map(wire::from_wire).collect();
                        e.apply_replicated(&recs)?;
                        drop(guard);
                        e.sync_applied()
                    })
                    .await
                    .map_err(|e| format!("applying records: {e}"))?;
                    synced_through(vol, link, d);
                }
                StandbyEvent::Sync => {
                    let d = blocking(move || e.sync_applied())
                        .await
                        .map_err(|e| format!("syncing: {e}"))?;
                    synced_through(vol, link, d);
                }
                StandbyEvent::ResyncBegin { start_lsn } => {
                    blocking(move || e.begin_resync())
                        .await
                        .map_err(|e| format!("starting a full resync: {e}"))?;
                    tracing::warn!(volume = %vol.name, start_lsn,
                        "the primary starts a full resync: this standby's image is being replaced (not promotable until it completes)");
                    vol.status.update(|s| {
                        s.resync = Some(ResyncStatus {
                            phase: "copying".into(),
                            start_lsn,
                            total_bytes: 0,
                            done_bytes: 0,
                            rate_bytes_per_s: 0,
                            eta_seconds: None,
                            rate_limit_bytes_per_s: None,
                        })
                    });
                }
                StandbyEvent::ResyncExtent { lba, blocks, data } => {
                    let lock = vol.apply.clone();
                    let n = data.as_ref().map_or(0, |d| d.len() as u64);
                    blocking(move || {
                        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
                        e.apply_resync_extent(lba, u64::from(blocks), data.as_deref())
                    })
                    .await
                    .map_err(|e| format!("writing a resync region: {e}"))?;
                    vol.status.update(|s| {
                        if let Some(r) = s.resync.as_mut() {
                            r.done_bytes += n;
                        }
                    });
                }
                StandbyEvent::ResyncEnd { start_lsn, end_lsn } => {
                    blocking(move || e.resync_copied(start_lsn))
                        .await
                        .map_err(|e| format!("ending a resync copy: {e}"))?;
                    tracing::info!(volume = %vol.name, start_lsn, end_lsn,
                        "full resync: regions copied; applying the primary's log from the copy's start");
                    vol.status.update(|s| {
                        if let Some(r) = s.resync.as_mut() {
                            r.phase = "catching_up".into();
                        }
                    });
                }
                StandbyEvent::ResyncComplete => {
                    let lock = vol.apply.clone();
                    let d = blocking(move || {
                        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
                        e.finish_resync()
                    })
                    .await
                    .map_err(|e| format!("completing a full resync: {e}"))?;
                    tracing::info!(volume = %vol.name, lsn = d, "full resync complete: the image is whole again");
                    vol.status.update(|s| {
                        s.resync = None;
                        s.resyncs_completed += 1;
                        s.durable_lsn = d;
                    });
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
