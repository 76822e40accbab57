//! The primary's replication task for one volume: dials the standby (reconnecting with
//! backoff), runs the sans-IO [`PrimaryPeer`] between the socket, the engine's log and the
//! flushes waiting in the [`Gate`].
//!
//! How log growth reaches the peer: the engine signals every append ([`Engine::appended`]) and
//! the task calls [`PrimaryPeer::log_grew`], so records ship pipelined as soon as they are in
//! the log, before the flush that will cover them syncs it, without the write path knowing
//! about replication. A flush's `need_durable` (announced before its local log sync) sends the
//! barrier; the task remembers where in the log the next record to ship starts, so a read for
//! the standby never walks the log from its tail.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use blockstore::repl::primary::{PrimaryConfig, PrimaryEvent, PrimaryPeer, SyncState};
use blockstore::replica::LogPos;
use blockstore::{Engine, Error, Role};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::gate::Gate;
use super::state::{PeerRecord, StatusCell, SyncName, PEER_METADATA};
use super::wire::{self, FrameReader, FrameSender, ReadError};

/// Bytes of record data per read of the log (and per `Records` frame, well under the limit).
const READ_BYTES: usize = 1 << 20;
/// How often the retention floor follows the standby.
const RETENTION_EVERY: Duration = Duration::from_millis(200);
/// How many positions of shipped batch ends are remembered for the retention floor.
const SHIPPED_ENDS: usize = 4096;
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long a standby whose records were recycled is left alone (it needs a full resync,
/// which is not implemented yet) before the next try.
const RESYNC_RETRY: Duration = Duration::from_secs(10);

/// Everything the task needs about its volume.
pub struct PrimaryTask {
    /// Volume name (for logs).
    pub name: String,
    /// The volume's engine.
    pub engine: Arc<Engine>,
    /// The standby's replication address.
    pub peer_addr: String,
    /// Identity and timeout for the peer state machine.
    pub cfg: PrimaryConfig,
    /// Where flushes wait.
    pub gate: Arc<Gate>,
    /// LSNs flushes wait for (sent by the gate).
    pub need: UnboundedReceiver<u64>,
    /// What status shows.
    pub status: Arc<StatusCell>,
    /// Set when the next dial must wait longer than the backoff (a standby needing a resync).
    hold_off: Option<Duration>,
    /// Where the record after each batch shipped recently starts, oldest first: the next read
    /// continues from the last one, and the retention floor is found among them.
    shipped_ends: VecDeque<LogPos>,
    /// A connection's first read sets the retention floor at once (the periodic update comes
    /// later; until then a checkpoint could free records the standby has not got).
    floor_pending: bool,
}

/// What woke the task.
enum Wake {
    Stop,
    Need(u64),
    Frame(Result<blockstore::repl::frame::Frame, ReadError>),
    Timeout,
    Dial,
    Grew,
    Retain,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> blockstore::Result<T> + Send + 'static,
) -> blockstore::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
}

async fn read(
    conn: &mut Option<(FrameReader, FrameSender)>,
) -> Result<blockstore::repl::frame::Frame, ReadError> {
    match conn {
        Some((r, _)) => r.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// How long a connection may stay without a completed handshake.
const HANDSHAKE: Duration = Duration::from_secs(5);

impl PrimaryTask {
    /// A task replicating `engine` (volume `name`) to the standby at `peer_addr`.
    pub fn new(
        name: String,
        engine: Arc<Engine>,
        peer_addr: String,
        cfg: PrimaryConfig,
        gate: Arc<Gate>,
        need: UnboundedReceiver<u64>,
        status: Arc<StatusCell>,
    ) -> PrimaryTask {
        PrimaryTask {
            name,
            engine,
            peer_addr,
            cfg,
            gate,
            need,
            status,
            hold_off: None,
            shipped_ends: VecDeque::new(),
            floor_pending: true,
        }
    }

    /// Runs until `stop` (then waiting flushes fail) or until a newer epoch fenced the node.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let engine = self.engine.clone();
        let stored = blocking(move || engine.load_metadata(PEER_METADATA))
            .await
            .ok()
            .flatten()
            .and_then(|b| PeerRecord::parse(&b));
        // A new pairing starts out of sync: the standby has to catch up first.
        let sync = stored.map_or(SyncState::OutOfSync, |r| r.sync_state());
        let epoch = self.engine.role_state().epoch;
        let mut peer = PrimaryPeer::new(self.cfg, epoch, sync);
        tracing::info!(volume = %self.name, peer = %self.peer_addr, state = ?sync, epoch, "replicating to the standby");
        let mut conn: Option<(FrameReader, FrameSender)> = None;
        let mut backoff = BACKOFF_MIN;
        let mut next_dial = Some(Instant::now());
        let mut ready_seen = false;
        let mut dialed_at = Instant::now();
        let mut retain = tokio::time::interval(RETENTION_EVERY);
        retain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let appended = self.engine.clone();
        loop {
            if !self.drive(&mut peer, &mut conn).await {
                return;
            }
            if conn.is_some() {
                if peer.is_connected() {
                    ready_seen = true;
                } else if ready_seen || dialed_at.elapsed() > HANDSHAKE {
                    // The peer state machine dropped the connection (a bad handshake or
                    // frame), or the standby never answered the handshake.
                    tracing::warn!(volume = %self.name, peer = %self.peer_addr, "replication connection dropped");
                    conn = None;
                    peer.disconnected();
                }
            }
            if let Some(d) = self.hold_off.take() {
                next_dial = Some(Instant::now() + d);
            }
            if conn.is_none() && next_dial.is_none() {
                next_dial = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            self.status.update(|s| {
                s.connected = peer.is_connected();
                s.sync_state = Some(SyncName::from(peer.sync_state()));
                s.durable_lsn = peer.durable_lsn();
            });
            let timeout = peer.poll_timeout().map(Instant::from_std);
            let connected = conn.is_some();
            let wake = tokio::select! {
                _ = stop.changed() => Wake::Stop,
                n = self.need.recv() => n.map_or(Wake::Stop, Wake::Need),
                f = read(&mut conn) => Wake::Frame(f),
                _ = sleep_until(timeout) => Wake::Timeout,
                _ = sleep_until(next_dial), if !connected => Wake::Dial,
                _ = appended.appended(), if connected => Wake::Grew,
                _ = retain.tick(), if connected => Wake::Retain,
            };
            let now = std::time::Instant::now();
            match wake {
                Wake::Stop => {
                    self.gate.fail("the node is shutting down".into());
                    return;
                }
                Wake::Need(lsn) => {
                    peer.need_durable(lsn, now);
                    self.take_needs(&mut peer);
                }
                Wake::Frame(Ok(f)) => peer.receive(f, now),
                Wake::Frame(Err(e)) => {
                    tracing::warn!(volume = %self.name, peer = %self.peer_addr, error = %e, "replication connection lost");
                    conn = None;
                    peer.disconnected();
                }
                Wake::Timeout => peer.handle_timeout(now),
                Wake::Dial => {
                    next_dial = None;
                    if self.engine.role_state().role != Role::Primary {
                        // Demoted: nothing to ship; look again later.
                        next_dial = Some(Instant::now() + BACKOFF_MAX);
                        continue;
                    }
                    let addr = self.peer_addr.clone();
                    match tokio::time::timeout(
                        Duration::from_secs(1),
                        tokio::net::TcpStream::connect(addr),
                    )
                    .await
                    {
                        Ok(Ok(s)) => {
                            tracing::info!(volume = %self.name, peer = %self.peer_addr, "connected to the standby");
                            conn = Some(wire::split(s));
                            ready_seen = false;
                            dialed_at = Instant::now();
                            backoff = BACKOFF_MIN;
                            self.floor_pending = true;
                            peer.connected();
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(volume = %self.name, peer = %self.peer_addr, error = %e, "standby not reachable");
                        }
                        Err(_) => {
                            tracing::debug!(volume = %self.name, peer = %self.peer_addr, "connecting to the standby timed out");
                        }
                    }
                }
                Wake::Grew => {
                    // A FUA write's flush asks right after its append: take it now, so the
                    // barrier leaves with the records it covers.
                    self.take_needs(&mut peer);
                    peer.log_grew();
                }
                Wake::Retain if peer.is_connected() => {
                    let durable = peer.durable_lsn();
                    self.forget_shipped_ends(durable);
                    // Keep what the standby still needs (bounded by the engine).
                    match self.shipped_end(durable) {
                        Some(pos) => self.engine.set_retention(Some(pos)),
                        None => {
                            let e = self.engine.clone();
                            let _ = blocking(move || {
                                let pos = e.log_pos_after(durable)?;
                                e.set_retention(Some(pos));
                                Ok(())
                            })
                            .await;
                        }
                    }
                }
                Wake::Retain => {}
            }
        }
    }

    /// Hands the peer every flush waiting in the channel (without waiting for more).
    fn take_needs(&mut self, peer: &mut PrimaryPeer) {
        let now = std::time::Instant::now();
        while let Ok(l) = self.need.try_recv() {
            peer.need_durable(l, now);
        }
    }

    /// Where the first record after `lsn` starts, when a batch shipped recently ended there.
    fn shipped_end(&self, lsn: u64) -> Option<LogPos> {
        let next = lsn.checked_add(1)?;
        self.shipped_ends
            .iter()
            .rev()
            .find(|p| p.lsn == next)
            .copied()
    }

    /// Forgets the ends before the first record after `durable` (the standby holds them: the
    /// floor never goes back).
    fn forget_shipped_ends(&mut self, durable: u64) {
        while self.shipped_ends.len() > 1 && self.shipped_ends[0].lsn <= durable {
            self.shipped_ends.pop_front();
        }
    }

    /// Remembers where the record after a batch just read starts.
    fn remember_shipped_end(&mut self, pos: LogPos) {
        if self.shipped_ends.back() == Some(&pos) {
            return;
        }
        if self.shipped_ends.back().is_some_and(|b| b.lsn > pos.lsn) {
            // A reconnect went back in the log: forget the newer ends.
            self.shipped_ends.clear();
        }
        if self.shipped_ends.len() == SHIPPED_ENDS {
            self.shipped_ends.pop_front();
        }
        self.shipped_ends.push_back(pos);
    }

    /// Sends the peer's frames and does its work until it has none. Returns false once the node
    /// was fenced (the task ends).
    async fn drive(
        &mut self,
        peer: &mut PrimaryPeer,
        conn: &mut Option<(FrameReader, FrameSender)>,
    ) -> bool {
        loop {
            let mut progress = false;
            while let Some(f) = peer.poll_frame() {
                progress = true;
                if let Some((_, tx)) = conn.as_ref() {
                    if !tx.send(&f) {
                        tracing::warn!(volume = %self.name, peer = %self.peer_addr, "the standby does not keep up; reconnecting");
                        *conn = None;
                        peer.disconnected();
                    }
                }
            }
            while let Some(ev) = peer.poll_event() {
                progress = true;
                if !self.handle(peer, conn, ev).await {
                    return false;
                }
            }
            if !progress {
                return true;
            }
        }
    }

    async fn handle(
        &mut self,
        peer: &mut PrimaryPeer,
        conn: &mut Option<(FrameReader, FrameSender)>,
        ev: PrimaryEvent,
    ) -> bool {
        let epoch = self.engine.role_state().epoch;
        match ev {
            PrimaryEvent::NeedRecords { after } => {
                let e = self.engine.clone();
                let known = self.shipped_end(after);
                let floor = std::mem::take(&mut self.floor_pending);
                let r = blocking(move || {
                    let pos = match known {
                        Some(pos) => pos,
                        None => e.log_pos_after(after)?,
                    };
                    if floor {
                        e.set_retention(Some(pos));
                    }
                    let (recs, next) = e.read_log(pos, READ_BYTES)?;
                    let at_head = next.lsn > e.last_lsn();
                    Ok((recs, next, at_head))
                })
                .await;
                match r {
                    Ok((recs, next, at_head)) => {
                        self.remember_shipped_end(next);
                        // Flushes that asked during the read get their barrier right after
                        // these records, in the same socket write.
                        self.take_needs(peer);
                        let recs = recs.into_iter().map(wire::to_wire).collect();
                        peer.ship(recs, next.lsn - 1, at_head, std::time::Instant::now());
                    }
                    Err(Error::LogRecycled { wanted, oldest }) => {
                        tracing::error!(volume = %self.name, peer = %self.peer_addr, wanted, oldest,
                            "the standby needs records the log no longer holds: it needs a full resync, which this version cannot do yet; it stays out of sync");
                        peer.resync_needed();
                        // Drop the connection until later; flushes go on once it is recorded
                        // out of sync.
                        *conn = None;
                        peer.disconnected();
                        self.hold_off = Some(RESYNC_RETRY);
                    }
                    Err(e) => {
                        tracing::error!(volume = %self.name, error = %e, "reading the log for the standby failed");
                        *conn = None;
                        peer.disconnected();
                    }
                }
            }
            PrimaryEvent::Durable(lsn) => self.gate.release(lsn),
            PrimaryEvent::Degrade { since_lsn } => {
                let rec = PeerRecord {
                    state: SyncName::OutOfSync,
                    since_lsn,
                    epoch,
                };
                let e = self.engine.clone();
                match blocking(move || e.save_metadata(PEER_METADATA, &rec.to_bytes())).await {
                    Ok(()) => {
                        tracing::warn!(volume = %self.name, peer = %self.peer_addr, since_lsn, epoch,
                            "the standby did not answer within the replication timeout: recorded out of sync; flushes go on without it");
                        peer.degraded();
                    }
                    Err(e) => {
                        tracing::error!(volume = %self.name, error = %e, "cannot record that the standby is out of sync: failing flushes");
                        self.gate
                            .fail(format!("cannot record the standby out of sync: {e}"));
                    }
                }
            }
            PrimaryEvent::InSync => {
                let rec = PeerRecord {
                    state: SyncName::InSync,
                    since_lsn: peer.durable_lsn(),
                    epoch,
                };
                let e = self.engine.clone();
                match blocking(move || e.save_metadata(PEER_METADATA, &rec.to_bytes())).await {
                    Ok(()) => {
                        tracing::info!(volume = %self.name, peer = %self.peer_addr, lsn = peer.durable_lsn(), "the standby is in sync")
                    }
                    Err(e) => {
                        tracing::error!(volume = %self.name, error = %e, "cannot record that the standby is in sync")
                    }
                }
            }
            PrimaryEvent::Fence(newer) => {
                tracing::error!(volume = %self.name, peer = %self.peer_addr, epoch, newer,
                    "the peer holds a newer epoch: this node is fenced and stops serving the volume");
                self.gate.fence(newer);
                let e = self.engine.clone();
                if let Err(err) = blocking(move || e.observe_epoch(newer)).await {
                    tracing::error!(volume = %self.name, error = %err, "persisting the fence failed");
                }
                *conn = None;
                self.status.update(|s| s.connected = false);
                return false;
            }
        }
        true
    }
}
