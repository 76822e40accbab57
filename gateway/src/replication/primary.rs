//! The primary's replication task for one volume: dials the standby (reconnecting with
//! backoff), runs the sans-IO [`PrimaryPeer`] between the socket, the engine's log and the
//! flushes waiting in the [`Gate`].
//!
//! How log growth reaches the peer: while connected, every append wakes the task
//! ([`Engine::appended`]; a tick every [`GROWTH_TICK`] is the safety net), which checks the
//! engine's last LSN and calls [`PrimaryPeer::log_grew`] when it moved, so writes ship at once,
//! pipelined, before the flush that covers them syncs the log, without the write path knowing
//! about replication. A flush asks for the barrier (`ReplicaGate::request`) before its local
//! log sync, so the two run in parallel.
//!
//! Full resync (rebuild): when the standby's records were recycled (or it announces an
//! incomplete resync), the task notes the log's last LSN, holds the log from there (the
//! retention floor), lists the volume's allocated runs and streams them chunk by chunk, paced
//! by `[replication] resync_rate_mib_s` and by the socket's queue ([`rebuild`]), while host I/O
//! goes on; then it ships the log from the noted LSN until the standby caught up.

mod rebuild;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use blockstore::repl::primary::{
    PrimaryConfig, PrimaryEvent, PrimaryPeer, ResyncPhase, ResyncStep, SyncState,
};
use blockstore::replica::{LogPos, ShippedRecord};
use blockstore::{Engine, Error, Role};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::gate::{Gate, Need};
use super::in_sync::{self, Degrade, InSyncSlot, Step};
use super::path_link;
use super::retry::{Report, Retry, RETRY_MAX, STABLE_LINK};
use super::state::{PeerRecord, StatusCell, SyncName, PEER_METADATA};
use super::wire::{self, FrameReader, FrameSender, ReadError};

/// How often a connected primary checks whether the log grew when no append woke it (a safety
/// net: every append wakes the shipping task at once).
pub const GROWTH_TICK: Duration = Duration::from_millis(50);
/// Bytes of record data per read of the log (and per `Records` frame, well under the limit).
const READ_BYTES: usize = 1 << 20;
/// How often the retention floor follows the standby (finding it walks log headers).
const RETENTION_EVERY: Duration = Duration::from_millis(200);
/// How many positions of shipped batch ends are remembered (for the next read and the
/// retention floor).
const SHIPPED_ENDS: usize = 4096;

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
    pub need: UnboundedReceiver<Need>,
    /// What status shows.
    pub status: Arc<StatusCell>,
    /// The stored record says the standby's image has no position in this log (this node was
    /// promoted without a handover): it needs a full resync whatever position it offers.
    force_resync: bool,
    /// Paces and measures a full resync.
    pacer: rebuild::Pacer,
    /// A full resync began since the standby was last in sync.
    rebuilding: bool,
    /// The paths hosts see (this node announces its group; the standby's is learned).
    paths: Option<path_link::PrimaryPaths>,
    /// Where the record after each batch read recently starts, oldest first: the next read
    /// continues from the last one and the retention floor is found among them, so shipping
    /// never walks the log from its tail ([`Engine::log_pos_after`]) while it keeps up.
    shipped_ends: VecDeque<LogPos>,
    /// Where a silent standby is dropped from the cluster's in-sync set (etcd).
    in_sync: Arc<InSyncSlot>,
    /// A standby being declared out of sync: the steps before flushes go on without it.
    degrade: Option<Degrade>,
    /// Failed attempts to drop the standby from the in-sync set in a row (for the logs).
    drop_failures: u32,
    /// When to dial the standby again, and what to log about failed links.
    retry: Retry,
    /// Why the last link or dial failed (logged by the retry policy's reports).
    failure: Option<String>,
}

/// What woke the task.
enum Wake {
    Stop,
    Need(Need),
    Frame(Result<blockstore::repl::frame::Frame, ReadError>),
    Timeout,
    Dial,
    Tick,
    Copy,
    RetryDrop,
}

/// Hands the peer what a flush or a plain write waits for.
fn need(peer: &mut PrimaryPeer, n: Need, now: std::time::Instant) {
    match n {
        Need::Durable(lsn) => peer.need_durable(lsn, now),
        Need::Received(lsn) => peer.need_received(lsn, now),
    }
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

/// The least TCP user timeout of a replication connection (the replication timeout when
/// longer): a standby's disk stall must not look like a partition.
const USER_TIMEOUT_MIN: Duration = Duration::from_secs(3);

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
        need: UnboundedReceiver<Need>,
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
            force_resync: false,
            pacer: rebuild::Pacer::new(None),
            rebuilding: false,
            paths: None,
            shipped_ends: VecDeque::new(),
            in_sync: Arc::new(InSyncSlot::new(false)),
            degrade: None,
            drop_failures: 0,
            retry: Retry::default(),
            failure: None,
        }
    }

    /// Drops a silent standby from the cluster's in-sync set (through `slot`) before flushes
    /// go on without it, when a cluster store is configured.
    pub fn with_in_sync(mut self, slot: Arc<InSyncSlot>) -> PrimaryTask {
        self.in_sync = slot;
        self
    }

    /// Keeps `cell` (the volume's paths) up to date with the standby and announces this
    /// node's group to it.
    pub fn with_paths(mut self, cell: Arc<crate::paths::PathCell>) -> PrimaryTask {
        self.paths = Some(path_link::PrimaryPaths::new(cell));
        self
    }

    /// Limits the data a full resync copies to `bytes_per_s` (`None`: unlimited, the default).
    pub fn with_resync_rate(mut self, bytes_per_s: Option<u64>) -> PrimaryTask {
        self.pacer = rebuild::Pacer::new(bytes_per_s);
        self
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
        self.force_resync = stored.is_some_and(|r| r.resync);
        let epoch = self.engine.role_state().epoch;
        let mut peer = PrimaryPeer::new(self.cfg, epoch, sync);
        tracing::info!(volume = %self.name, peer = %self.peer_addr, state = ?sync, epoch, "replicating to the standby");
        let mut conn: Option<(FrameReader, FrameSender)> = None;
        let mut next_dial = Some(Instant::now());
        let mut ready_seen = false;
        let mut dialed_at = Instant::now();
        let mut seen_lsn = 0u64;
        // Until the standby's position is known, the log keeps everything after the position
        // the stored record names (a handover's starting point) or, when the log no longer
        // holds that, everything from here on; the first tick after the standby connected
        // moves the floor to its position.
        let (e, since) = (
            self.engine.clone(),
            stored.map_or(u64::MAX, |r| r.since_lsn),
        );
        let _ = blocking(move || {
            let last = e.last_lsn();
            let pos = match e.log_pos_after(since.min(last)) {
                Ok(p) => p,
                Err(_) => e.log_pos_after(last)?,
            };
            e.set_retention(Some(pos));
            Ok(())
        })
        .await;
        let mut retained_at = Instant::now()
            .checked_sub(RETENTION_EVERY)
            .unwrap_or_else(Instant::now);
        // Every append wakes the task (`Engine::appended`), so records ship as soon as they are
        // in the log; the tick is a safety net and paces the retention floor's updates.
        let appended = self.engine.clone();
        let mut tick = tokio::time::interval(GROWTH_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !self.drive(&mut peer, &mut conn).await {
                return;
            }
            if conn.is_some() {
                if peer.is_connected() {
                    if !ready_seen {
                        let in_sync = peer.sync_state() != SyncState::OutOfSync;
                        self.tell(&conn, in_sync);
                    }
                    ready_seen = true;
                } else if ready_seen || dialed_at.elapsed() > HANDSHAKE {
                    // The peer state machine dropped the connection (a bad handshake or
                    // frame), or the standby never answered the handshake.
                    self.link_failed(
                        "the standby did not complete the handshake, or the link broke off".into(),
                    );
                    conn = None;
                    peer.disconnected();
                }
            }
            if conn.is_some() && ready_seen && dialed_at.elapsed() >= STABLE_LINK {
                self.link_held();
            }
            if conn.is_none() && next_dial.is_none() {
                next_dial = Some(Instant::now() + self.retry_delay());
            }
            if let Some(p) = self.paths.as_mut() {
                let tx = conn.as_ref().map(|(_, tx)| tx).filter(|_| ready_seen);
                p.step(peer.sync_state().into(), self.engine.role_state().epoch, tx);
            }
            let resync = peer.resync_progress().map(|p| self.pacer.status(&p));
            self.status.update(|s| {
                s.connected = peer.is_connected();
                s.sync_state = Some(SyncName::from(peer.sync_state()));
                s.durable_lsn = peer.durable_lsn();
                s.resync = resync;
            });
            let timeout = peer.poll_timeout().map(Instant::from_std);
            let retry_drop = self
                .degrade
                .as_ref()
                .and_then(|d| d.wake_at())
                .map(Instant::from_std);
            let connected = conn.is_some();
            // The copy reads its next chunk when the rate limit allows and the standby has
            // taken most of what was sent.
            let copy_at = match (&conn, peer.resync_progress()) {
                (Some((_, tx)), Some(p)) if p.phase == ResyncPhase::Copying => {
                    Some(if tx.queued() > rebuild::QUEUE_HIGH {
                        Instant::now() + rebuild::QUEUE_POLL
                    } else {
                        self.pacer.next_at()
                    })
                }
                _ => None,
            };
            let wake = tokio::select! {
                _ = stop.changed() => Wake::Stop,
                n = self.need.recv() => n.map_or(Wake::Stop, Wake::Need),
                f = read(&mut conn) => Wake::Frame(f),
                _ = sleep_until(timeout) => Wake::Timeout,
                _ = sleep_until(next_dial), if !connected => Wake::Dial,
                _ = appended.appended(), if connected => Wake::Tick,
                _ = tick.tick(), if connected => Wake::Tick,
                _ = sleep_until(copy_at), if copy_at.is_some() => Wake::Copy,
                _ = sleep_until(retry_drop), if retry_drop.is_some() => Wake::RetryDrop,
            };
            let now = std::time::Instant::now();
            match wake {
                Wake::Stop => {
                    if let (Some(p), Some((_, tx))) = (self.paths.as_mut(), &conn) {
                        // The standby learns this node's last state before the link closes.
                        p.step(
                            peer.sync_state().into(),
                            self.engine.role_state().epoch,
                            Some(tx),
                        );
                    }
                    self.gate.fail("the node is shutting down".into());
                    return;
                }
                Wake::Need(n) => {
                    need(&mut peer, n, now);
                    self.take_needs(&mut peer);
                }
                Wake::Frame(Ok(mut f)) => {
                    if let Some(p) = &self.paths {
                        p.learned(&f);
                    }
                    if let blockstore::repl::frame::Frame::Hello(h) = &mut f {
                        let id = hex::encode(h.node_id);
                        self.status.update(|s| s.peer_node_id = Some(id));
                        let last = self.engine.last_lsn();
                        if h.durable_lsn > last && !h.resync_incomplete {
                            // The standby holds records past the end of this node's log: this
                            // node shipped them, then lost them in a crash before its own
                            // sync (never acknowledged), and has since reused their LSNs or
                            // will. Nothing the standby holds can be trusted to match this
                            // log, so it is treated as a partial image: a full resync.
                            tracing::warn!(volume = %self.name, peer = %self.peer_addr, standby_lsn = h.durable_lsn, last_lsn = last,
                                "the standby holds records past the end of this node's log (lost here in a crash before they were synced): its image diverged, so it gets a full resync");
                            h.resync_incomplete = true;
                        }
                    }
                    peer.receive(f, now);
                    if let (Some(p), Some((_, tx)), true) =
                        (self.paths.as_mut(), &conn, peer.is_connected())
                    {
                        // The standby learns this node's group before any record (a stale old
                        // primary behind the listener closes the link at the first one).
                        p.step(
                            peer.sync_state().into(),
                            self.engine.role_state().epoch,
                            Some(tx),
                        );
                    }
                }
                Wake::Frame(Err(e)) => {
                    self.link_failed(format!("replication connection lost: {e}"));
                    conn = None;
                    peer.disconnected();
                }
                Wake::Timeout => peer.handle_timeout(now),
                Wake::Copy => self.copy_step(&mut peer, &mut conn).await,
                Wake::RetryDrop => {
                    if let Some(d) = self.degrade.as_mut() {
                        d.retry_due(now);
                    }
                    self.advance_degrade(&mut peer, &mut conn).await;
                }
                Wake::Dial => {
                    next_dial = None;
                    if self.engine.role_state().role != Role::Primary {
                        // Demoted: nothing to ship; look again later.
                        next_dial = Some(Instant::now() + RETRY_MAX);
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
                            if self.retry.failing() {
                                tracing::debug!(volume = %self.name, peer = %self.peer_addr, "connected to the standby");
                            } else {
                                tracing::info!(volume = %self.name, peer = %self.peer_addr, "connected to the standby");
                            }
                            // Data unacknowledged by the standby's TCP for longer than this
                            // breaks the connection (a partition), so the next dial starts
                            // over from what the standby holds.
                            let _ = socket2::SockRef::from(&s)
                                .set_tcp_user_timeout(Some(self.cfg.timeout.max(USER_TIMEOUT_MIN)));
                            conn = Some(wire::split(s));
                            ready_seen = false;
                            dialed_at = Instant::now();
                            // The Hello announces the volume's size now (it may have grown
                            // since the task started): a smaller standby grows first.
                            peer.set_capacity(self.engine.capacity_blocks());
                            peer.connected();
                            if let Some(p) = self.paths.as_mut() {
                                p.new_connection();
                            }
                        }
                        Ok(Err(e)) => {
                            self.link_failed(format!("the standby is not reachable: {e}"));
                        }
                        Err(_) => {
                            self.link_failed("connecting to the standby timed out".into());
                        }
                    }
                }
                Wake::Tick => {
                    let last = self.engine.last_lsn();
                    if last > seen_lsn {
                        seen_lsn = last;
                        peer.log_grew();
                    }
                    let keep = peer.retention_lsn();
                    if let Some(keep) = keep
                        .filter(|_| peer.is_connected() && retained_at.elapsed() >= RETENTION_EVERY)
                    {
                        retained_at = Instant::now();
                        self.forget_shipped_ends(keep);
                        // Keep what the standby still needs (bounded by the engine).
                        match self.shipped_end(keep) {
                            Some(pos) => self.engine.set_retention(Some(pos)),
                            None => {
                                let e = self.engine.clone();
                                let _ = blocking(move || {
                                    let pos = e.log_pos_after(keep)?;
                                    e.set_retention(Some(pos));
                                    Ok(())
                                })
                                .await;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Notes why the link (or the attempt to make one) failed; the retry policy decides
    /// whether and when that is logged ([`Self::retry_delay`]).
    fn link_failed(&mut self, why: String) {
        tracing::debug!(volume = %self.name, peer = %self.peer_addr, reason = %why, "replication link failed");
        self.failure = Some(why);
    }

    /// A link held ([`STABLE_LINK`]): the back-off starts over.
    fn link_held(&mut self) {
        if let Some(failures) = self.retry.succeeded() {
            tracing::info!(volume = %self.name, peer = %self.peer_addr, failures,
                "the replication link holds again");
        }
    }

    /// The delay before the next dial after a failure, logging the failure: the first of a
    /// run at WARN, then a summary at most once a minute.
    fn retry_delay(&mut self) -> Duration {
        let (delay, report) = self.retry.failed(std::time::Instant::now());
        let why = self
            .failure
            .take()
            .unwrap_or_else(|| "the replication link broke off".into());
        match report {
            Report::First => {
                tracing::warn!(volume = %self.name, peer = %self.peer_addr, reason = %why,
                "replication link to the standby failed; retrying with back-off (at most every {RETRY_MAX:?}; a summary follows while it keeps failing)")
            }
            Report::Summary { failures, over } => {
                tracing::warn!(volume = %self.name, peer = %self.peer_addr,
                failures, over_s = over.as_secs(), next_in_ms = delay.as_millis() as u64, last_reason = %why,
                "replication link to the standby still failing")
            }
            Report::Quiet => {
                tracing::debug!(volume = %self.name, peer = %self.peer_addr, reason = %why,
                next_in_ms = delay.as_millis() as u64, "replication link failed again")
            }
        }
        delay
    }

    /// Hands the peer every flush waiting in the channel (without waiting for more).
    fn take_needs(&mut self, peer: &mut PrimaryPeer) {
        let now = std::time::Instant::now();
        while let Ok(n) = self.need.try_recv() {
            need(peer, n, now);
        }
    }

    /// Where the first record after `lsn` starts, when a batch read recently ended there.
    fn shipped_end(&self, lsn: u64) -> Option<LogPos> {
        let next = lsn.checked_add(1)?;
        self.shipped_ends
            .iter()
            .rev()
            .find(|p| p.lsn == next)
            .copied()
    }

    /// Forgets the ends before the first record after `keep` (the floor never goes back).
    fn forget_shipped_ends(&mut self, keep: u64) {
        while self.shipped_ends.len() > 1 && self.shipped_ends[0].lsn <= keep {
            self.shipped_ends.pop_front();
        }
    }

    /// Remembers where the record after a batch just read starts.
    fn remember_shipped_end(&mut self, pos: LogPos) {
        if self.shipped_ends.back() == Some(&pos) {
            return;
        }
        if self.shipped_ends.back().is_some_and(|b| b.lsn > pos.lsn) {
            // A reconnect or a resync went back in the log: forget the newer ends.
            self.shipped_ends.clear();
        }
        if self.shipped_ends.len() == SHIPPED_ENDS {
            self.shipped_ends.pop_front();
        }
        self.shipped_ends.push_back(pos);
    }

    /// Reads the log for the standby from the first record after `after`: on this thread
    /// when the position is known and the records are in the page cache (the usual case: they
    /// were just appended), else on a blocking thread (finding the position walks the log).
    async fn read_for_standby(
        &self,
        after: u64,
    ) -> blockstore::Result<(Vec<ShippedRecord>, LogPos, bool)> {
        let known = self.shipped_end(after);
        if let Some(pos) = known {
            if let Some(r) = self.engine.read_log_nowait(pos, READ_BYTES) {
                let (recs, next) = r?;
                let at_head = next.lsn > self.engine.last_lsn();
                return Ok((recs, next, at_head));
            }
        }
        let e = self.engine.clone();
        blocking(move || {
            let pos = match known {
                Some(pos) => pos,
                None => e.log_pos_after(after)?,
            };
            let (recs, next) = e.read_log(pos, READ_BYTES)?;
            let at_head = next.lsn > e.last_lsn();
            Ok((recs, next, at_head))
        })
        .await
    }

    /// Tells the standby how it counts now (it records that for its own promotion).
    fn tell(&self, conn: &Option<(FrameReader, FrameSender)>, in_sync: bool) {
        if let Some((_, tx)) = conn {
            tx.send(&blockstore::repl::frame::Frame::PeerState {
                epoch: self.engine.role_state().epoch,
                in_sync,
                primary_lsn: self.engine.last_lsn(),
            });
        }
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

    /// One step of a running copy: reads the chunk the peer asks for (on a blocking thread)
    /// and hands it over, or reports the copy complete with the log's last LSN.
    async fn copy_step(
        &mut self,
        peer: &mut PrimaryPeer,
        conn: &mut Option<(FrameReader, FrameSender)>,
    ) {
        match peer.next_resync_step() {
            ResyncStep::Idle => {}
            ResyncStep::Read { lba, blocks } => {
                let e = self.engine.clone();
                match blocking(move || e.read(lba, u64::from(blocks))).await {
                    Ok(data) => {
                        self.pacer.sent(data.len() as u64);
                        peer.resync_extent(lba, blocks, data.into());
                    }
                    Err(e) => {
                        tracing::error!(volume = %self.name, error = %e, lba, "reading the volume for the standby's resync failed");
                        *conn = None;
                        peer.disconnected();
                    }
                }
            }
            ResyncStep::Finish => {
                let end = self.engine.last_lsn();
                tracing::info!(volume = %self.name, peer = %self.peer_addr, end_lsn = end,
                    "full resync: the regions are copied; shipping the log written meanwhile");
                peer.resync_copied(end);
            }
        }
    }

    /// Runs the steps of declaring the standby out of sync ([`Degrade`]) as far as they go
    /// now: the local record, then (with etcd) its removal from the in-sync set, and only then
    /// the release of the waiting flushes.
    async fn advance_degrade(
        &mut self,
        peer: &mut PrimaryPeer,
        conn: &mut Option<(FrameReader, FrameSender)>,
    ) {
        let epoch = self.engine.role_state().epoch;
        while let Some(step) = self.degrade.as_ref().map(|d| d.step()) {
            match step {
                Step::SaveRecord { since_lsn } => {
                    let rec = PeerRecord {
                        state: SyncName::OutOfSync,
                        since_lsn,
                        epoch,
                        resync: self.force_resync,
                    };
                    let e = self.engine.clone();
                    match blocking(move || e.save_metadata(PEER_METADATA, &rec.to_bytes())).await {
                        Ok(()) => {
                            if let Some(d) = self.degrade.as_mut() {
                                d.saved();
                            }
                        }
                        Err(e) => {
                            tracing::error!(volume = %self.name, error = %e, "cannot record that the standby is out of sync: failing flushes");
                            self.gate
                                .fail(format!("cannot record the standby out of sync: {e}"));
                            self.degrade = None;
                        }
                    }
                }
                Step::DropFromSet => {
                    let r = match self.in_sync.store() {
                        Some(store) => {
                            match tokio::time::timeout(
                                in_sync::DROP_ATTEMPT,
                                store.drop_standby(&self.name),
                            )
                            .await
                            {
                                Ok(r) => r,
                                Err(_) => Err("etcd did not answer in time".into()),
                            }
                        }
                        None => Err("the etcd agent is not running yet".into()),
                    };
                    let serving = self.engine.access_state() == blockstore::AccessState::Optimized;
                    let Some(d) = self.degrade.as_mut() else {
                        return;
                    };
                    match r {
                        Ok(()) => {
                            tracing::warn!(volume = %self.name, peer = %self.peer_addr,
                                "cluster: the standby is out of the in-sync set in etcd");
                            d.dropped();
                            self.gate.set_lapsed(false);
                        }
                        Err(e) => {
                            if self.drop_failures.is_multiple_of(25) {
                                tracing::error!(volume = %self.name, error = %e, serving,
                                    "cluster: cannot drop the silent standby from the in-sync set in etcd: no flush is acknowledged without it (the node fences itself when its lease runs out)");
                            }
                            self.drop_failures = self.drop_failures.saturating_add(1);
                            d.drop_failed(std::time::Instant::now(), serving);
                            self.gate.set_lapsed(!serving);
                        }
                    }
                }
                Step::RetryAt { .. } => return,
                Step::Release => {
                    let since_lsn = peer.durable_lsn();
                    tracing::warn!(volume = %self.name, peer = %self.peer_addr, since_lsn, epoch,
                        "the standby did not answer within the replication timeout: recorded out of sync; flushes go on without it");
                    self.degrade = None;
                    peer.degraded();
                    self.tell(conn, false);
                    return;
                }
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
            PrimaryEvent::NeedRecords { after } if self.force_resync => {
                if !self.retry.failing() {
                    tracing::warn!(volume = %self.name, peer = %self.peer_addr, after,
                        "this node was promoted without a handover: the standby's image may hold writes this node never had, so it gets a full resync (it is out of sync until it caught up)");
                }
                peer.resync_needed();
                self.tell(conn, false);
            }
            PrimaryEvent::NeedRecords { after } => {
                let r = self.read_for_standby(after).await;
                match r {
                    Ok((recs, next, at_head)) => {
                        self.remember_shipped_end(next);
                        // Flushes that asked meanwhile get their barrier right after these
                        // records, in the same socket write.
                        self.take_needs(peer);
                        let recs = recs.into_iter().map(wire::to_wire).collect();
                        peer.ship(recs, next.lsn - 1, at_head, std::time::Instant::now());
                    }
                    Err(Error::LogRecycled { wanted, oldest }) => {
                        // Said at every attempt to reach a peer that closes each link:
                        // at WARN only outside a run of failures.
                        if self.retry.failing() {
                            tracing::debug!(volume = %self.name, peer = %self.peer_addr, wanted, oldest,
                                "the standby needs records the log no longer holds: it gets a full resync");
                        } else {
                            tracing::warn!(volume = %self.name, peer = %self.peer_addr, wanted, oldest,
                                "the standby needs records the log no longer holds: it gets a full resync (it is out of sync until it caught up)");
                        }
                        peer.resync_needed();
                        self.tell(conn, false);
                    }
                    Err(e) => {
                        tracing::error!(volume = %self.name, error = %e, "reading the log for the standby failed");
                        *conn = None;
                        peer.disconnected();
                    }
                }
            }
            PrimaryEvent::StartResync => {
                let e = self.engine.clone();
                let r = blocking(move || {
                    // The copy starts at the log's last LSN; the log is held from there.
                    let pos = e.log_pos_after(e.last_lsn())?;
                    e.set_retention(Some(pos));
                    Ok((pos.lsn - 1, e.resync_plan()?))
                })
                .await;
                match r {
                    Ok((start, plan)) => {
                        let bs = u64::from(self.cfg.block_size);
                        let bytes: u64 = plan
                            .iter()
                            .filter(|r| r.mapped)
                            .map(|r| r.blocks * bs)
                            .sum();
                        tracing::info!(volume = %self.name, peer = %self.peer_addr, start_lsn = start, bytes,
                            "full resync of the standby begins: copying the allocated regions, then the log from the start");
                        self.pacer.restart();
                        self.rebuilding = true;
                        // From here the standby's image is rebuilt from this node's: the log
                        // catch-up after the copy is an ordinary one. (A copy cut short is
                        // started again: the standby says so in its Hello.)
                        self.force_resync = false;
                        // The copy reaches the volume's end as of its start.
                        peer.set_capacity(self.engine.capacity_blocks());
                        peer.resync_started(start, plan);
                    }
                    Err(e) => {
                        tracing::error!(volume = %self.name, error = %e, "cannot start a full resync");
                        *conn = None;
                        peer.disconnected();
                    }
                }
            }
            PrimaryEvent::Durable(lsn) => self.gate.release(lsn),
            PrimaryEvent::Received(lsn) => self.gate.release_received(lsn),
            PrimaryEvent::Degrade { since_lsn } => {
                // Status shows it at once: the etcd agent publishes the in-sync set from it.
                self.status
                    .update(|s| s.sync_state = Some(SyncName::Degrading));
                self.degrade = Some(Degrade::new(since_lsn, self.in_sync.configured()));
                self.drop_failures = 0;
                self.advance_degrade(peer, conn).await;
            }
            PrimaryEvent::InSync => {
                let rec = PeerRecord {
                    state: SyncName::InSync,
                    since_lsn: peer.durable_lsn(),
                    epoch,
                    resync: false,
                };
                let e = self.engine.clone();
                let rebuilt = std::mem::take(&mut self.rebuilding);
                match blocking(move || e.save_metadata(PEER_METADATA, &rec.to_bytes())).await {
                    Ok(()) => {
                        if rebuilt {
                            self.status.update(|s| s.resyncs_completed += 1);
                            tracing::info!(volume = %self.name, peer = %self.peer_addr, "full resync complete");
                        }
                        tracing::info!(volume = %self.name, peer = %self.peer_addr, lsn = peer.durable_lsn(), "the standby is in sync");
                        self.tell(conn, true);
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
