//! The primary's view of one standby, as a sans-IO state machine.
//!
//! A [`PrimaryPeer`] lives as long as the standby is configured, across connections. It decides
//! what to send (the handshake, the log records in order and pipelined, barriers) and when a
//! flush may count the standby as durable; the driver owns the engine, the socket and the clock,
//! and reports back: records read from the log ([`PrimaryPeer::ship`]), frames received
//! ([`PrimaryPeer::receive`]), time ([`PrimaryPeer::handle_timeout`]).
//!
//! The durability contract (synchronous by default): while the standby is in sync, a flush is
//! acknowledged only once the standby acknowledged a barrier covering it ([`PrimaryEvent::
//! Durable`]). One barrier serves every flush waiting when it is sent (group commit across the
//! network). If the standby does not answer within the replication timeout, the peer asks the
//! driver to record durably that it is out of sync ([`PrimaryEvent::Degrade`]) and only after
//! [`PrimaryPeer::degraded`] releases the waiting flushes without it. A standby out of sync
//! counts for nothing until it has caught up again ([`PrimaryEvent::InSync`]). A standby holding
//! a newer epoch fences this primary ([`PrimaryEvent::Fence`]).
//!
//! Full resync (rebuild): when the records a standby needs were recycled, or the standby says
//! its last resync did not complete, the peer asks the driver to start one
//! ([`PrimaryEvent::StartResync`]): the driver notes the log's last LSN as the start, holds the
//! log from there and lists the volume's runs ([`PrimaryPeer::resync_started`]); then, at the
//! pace it chooses (flow control, rate limit), it reads the chunks the peer asks for
//! ([`PrimaryPeer::next_resync_step`], [`PrimaryPeer::resync_extent`]) and finally reports the
//! log's last LSN when the copy ended ([`PrimaryPeer::resync_copied`]). The log is then shipped
//! from the start; the standby counts again only once it acknowledged a barrier covering the
//! copy's end and every flush acknowledged without it (the same catch-up rule as after a
//! timeout). No barrier goes out while the copy runs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::frame::{Frame, Hello, Record, Records};
use crate::resync::Run;

mod resync;

use resync::{Resync, Shape};
pub use resync::{ResyncPhase, ResyncProgress, ResyncStep, RESYNC_CHUNK_BYTES};

/// Who this primary is and how it replicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryConfig {
    /// The volume's identity.
    pub volume_uuid: [u8; 16],
    /// This node's id.
    pub node_id: [u8; 16],
    /// Logical block size.
    pub block_size: u32,
    /// Capacity in blocks.
    pub capacity_blocks: u64,
    /// How long a flush waits for the standby before it is declared out of sync (below the
    /// hosts' command timeouts: SCSI 30 s, NVMe io_timeout 30 s).
    pub timeout: Duration,
}

/// Whether the standby counts for flushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncState {
    /// Every flush waits for it.
    InSync,
    /// It missed acknowledged writes; flushes go on without it until it caught up.
    OutOfSync,
    /// It did not answer in time; the driver is recording that it is out of sync and flushes
    /// keep waiting until that is durable.
    Degrading,
}

/// Work for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryEvent {
    /// Read the log from the first record after `after` and hand it to [`PrimaryPeer::ship`]
    /// (or call [`PrimaryPeer::resync_needed`] when those records were recycled).
    NeedRecords {
        /// The standby holds (or was sent) everything through this LSN.
        after: u64,
    },
    /// As far as this standby is concerned, flushes of records through this LSN may complete.
    /// Plain writes through it may complete too (what is durable was received).
    Durable(u64),
    /// As far as this standby is concerned, plain (non-FUA) writes of records through this
    /// LSN may complete: the standby received them (appended them to its log), so a flush
    /// on either node after a failover covers them.
    Received(u64),
    /// Record durably that the standby is out of sync from `since_lsn` (in this epoch), then
    /// call [`PrimaryPeer::degraded`].
    Degrade {
        /// The standby's last acknowledged durable LSN.
        since_lsn: u64,
    },
    /// The standby caught up and counts for flushes again (record that durably too).
    InSync,
    /// The standby holds a newer epoch: this node must stop serving (fence itself).
    Fence(u64),
    /// The standby needs a full resync: note the log's last LSN as the start, keep the log
    /// from there (retention), list the volume's runs and call [`PrimaryPeer::resync_started`].
    StartResync,
}

/// One connection's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Conn {
    /// The standby's Hello arrived.
    ready: bool,
    /// The last record LSN sent.
    shipped: u64,
    /// Everything through this LSN was sent or is padding the standby never sees.
    covered: u64,
    /// A read of the log is outstanding.
    reading: bool,
    /// The last read reached the head of the log.
    at_head: bool,
    /// The log grew while a read was outstanding: read again after it, wherever it ended.
    grew: bool,
    /// The barriers in flight, oldest first: (barrier LSN, LSN it covers). The standby
    /// answers them in order; an Ack durable through a barrier's LSN completes it and every
    /// barrier before it.
    barriers: VecDeque<(u64, u64)>,
}

/// Barriers in flight at most on one connection: enough that a flush arriving while
/// the standby syncs for the previous one is sent at once (its records are already there).
pub const MAX_BARRIERS: usize = 8;

/// The primary's view of one standby.
#[derive(Debug)]
pub struct PrimaryPeer {
    cfg: PrimaryConfig,
    epoch: u64,
    sync: SyncState,
    /// The standby's last acknowledged durable LSN (in the primary's numbering).
    durable: u64,
    /// The LSNs flushes wait for, increasing, each with the time its wait began: the newest
    /// is what a barrier must cover, the oldest dates the timeout (a standby that keeps
    /// answering is never timed out by a stream of newer flushes).
    waits: VecDeque<(u64, Instant)>,
    /// Flushes through this LSN were released.
    released: u64,
    /// The LSNs plain writes wait for (the standby to receive them), as `waits`.
    rwaits: VecDeque<(u64, Instant)>,
    /// Plain writes through this LSN were released.
    received_released: u64,
    conn: Option<Conn>,
    out: VecDeque<Frame>,
    events: VecDeque<PrimaryEvent>,
    fenced: bool,
    resync: Option<Resync>,
    /// Bytes of data per resync chunk ([`RESYNC_CHUNK_BYTES`] unless a test changed it).
    resync_chunk: u64,
    /// Barriers in flight at most ([`MAX_BARRIERS`] unless changed).
    max_barriers: usize,
}

impl PrimaryPeer {
    /// The view of a standby whose persisted state is `sync` (a new pairing starts out of sync:
    /// the standby has to catch up first) at the primary's `epoch`.
    pub fn new(cfg: PrimaryConfig, epoch: u64, sync: SyncState) -> Self {
        PrimaryPeer {
            cfg,
            epoch,
            sync: if sync == SyncState::Degrading {
                SyncState::OutOfSync
            } else {
                sync
            },
            durable: 0,
            waits: VecDeque::new(),
            released: 0,
            rwaits: VecDeque::new(),
            received_released: 0,
            conn: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
            fenced: false,
            resync: None,
            resync_chunk: RESYNC_CHUNK_BYTES,
            max_barriers: MAX_BARRIERS,
        }
    }

    /// Changes how many barriers may be in flight at once (at least one; at most
    /// [`MAX_BARRIERS`]): one means a barrier waits for the previous one's answer.
    pub fn set_max_barriers(&mut self, n: usize) {
        self.max_barriers = n.clamp(1, MAX_BARRIERS);
    }

    /// Changes the data per resync chunk (at least one block; at most [`RESYNC_CHUNK_BYTES`]):
    /// the simulation uses tiny chunks so that writes land between them.
    pub fn set_resync_chunk(&mut self, bytes: u64) {
        self.resync_chunk = bytes.min(RESYNC_CHUNK_BYTES);
    }

    /// Whether the standby counts for flushes.
    pub fn sync_state(&self) -> SyncState {
        self.sync
    }

    /// The standby's last acknowledged durable LSN.
    pub fn durable_lsn(&self) -> u64 {
        self.durable
    }

    /// Whether a connection is up and past its handshake.
    pub fn is_connected(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.ready)
    }

    /// The next frame to send on the current connection.
    pub fn poll_frame(&mut self) -> Option<Frame> {
        self.out.pop_front()
    }

    /// The next piece of work for the driver.
    pub fn poll_event(&mut self) -> Option<PrimaryEvent> {
        self.events.pop_front()
    }

    /// A connection to the standby is up: the Hello goes out first.
    pub fn connected(&mut self) {
        self.out.clear();
        self.conn = Some(Conn {
            ready: false,
            shipped: 0,
            covered: 0,
            reading: false,
            at_head: false,
            grew: false,
            barriers: VecDeque::new(),
        });
        self.out.push_back(Frame::Hello(Hello {
            volume_uuid: self.cfg.volume_uuid,
            node_id: self.cfg.node_id,
            epoch: self.epoch,
            role: crate::role::Role::Primary.to_u8(),
            durable_lsn: 0,
            block_size: self.cfg.block_size,
            capacity_blocks: self.cfg.capacity_blocks,
            resync_incomplete: false,
        }));
    }

    /// The connection is gone (closed, broken, refused). Waiting flushes keep waiting until the
    /// timeout declares the standby out of sync, or a new connection catches up. A resync in
    /// progress is abandoned: the standby announces it incomplete and the next connection
    /// starts it over.
    pub fn disconnected(&mut self) {
        self.conn = None;
        self.out.clear();
        self.resync = None;
    }

    /// Whether a resync is being set up or copying (no log shipping, no barriers then).
    fn copying(&self) -> bool {
        self.resync.as_ref().is_some_and(Resync::copying)
    }

    fn shape(&self) -> Shape {
        Shape {
            epoch: self.epoch,
            block_size: u64::from(self.cfg.block_size),
            capacity: self.cfg.capacity_blocks,
            chunk_bytes: self.resync_chunk,
        }
    }

    /// The volume grew to `blocks` (the driver calls it before [`PrimaryPeer::connected`] and
    /// [`PrimaryPeer::resync_started`]): the Hello announces it, so a standby grows first, and
    /// a full resync copies up to the new end. Never shrinks.
    pub fn set_capacity(&mut self, blocks: u64) {
        self.cfg.capacity_blocks = self.cfg.capacity_blocks.max(blocks);
    }

    /// Progress of the running full resync, if one runs.
    pub fn resync_progress(&self) -> Option<ResyncProgress> {
        self.resync.as_ref().map(Resync::progress)
    }

    /// The LSN after which the log must keep records for this standby (the driver moves the
    /// engine's retention floor there), or `None` to leave the floor where it is (a resync
    /// being set up: the driver places it itself).
    pub fn retention_lsn(&self) -> Option<u64> {
        match self.resync.as_ref().map(Resync::progress) {
            None => Some(self.durable),
            Some(p) if p.phase == ResyncPhase::Starting => None,
            Some(p) if p.phase == ResyncPhase::Copying => Some(p.start_lsn),
            Some(_) => self.conn.as_ref().map(|c| c.covered),
        }
    }

    /// Takes one frame from the standby.
    pub fn receive(&mut self, frame: Frame, now: Instant) {
        if self.fenced {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match frame {
            Frame::Hello(h) if !conn.ready => {
                if h.volume_uuid != self.cfg.volume_uuid || h.block_size != self.cfg.block_size {
                    self.disconnected();
                    return;
                }
                if h.epoch > self.epoch {
                    self.fence(h.epoch);
                    return;
                }
                conn.ready = true;
                if h.resync_incomplete {
                    // Its image is a partial copy: nothing it holds counts.
                    self.durable = 0;
                    self.resync_needed();
                    return;
                }
                conn.shipped = h.durable_lsn;
                conn.covered = h.durable_lsn;
                conn.reading = true;
                self.durable = h.durable_lsn;
                self.events.push_back(PrimaryEvent::NeedRecords {
                    after: h.durable_lsn,
                });
            }
            Frame::Ack {
                epoch,
                durable_lsn,
                received_lsn,
            } if conn.ready => {
                if epoch > self.epoch {
                    self.fence(epoch);
                    return;
                }
                if epoch < self.epoch {
                    return;
                }
                self.durable = self.durable.max(durable_lsn);
                // Only what was sent on this connection counts as received (a standby that
                // reconnected announces its durable position, and is sent the rest again);
                // holding all of it, it holds the padding after it too.
                let got = received_lsn.max(durable_lsn);
                let received = if got >= conn.shipped {
                    conn.covered.max(conn.shipped)
                } else {
                    got
                };
                let mut covered = None;
                while let Some(&(lsn, covers)) = conn.barriers.front() {
                    if durable_lsn < lsn {
                        break;
                    }
                    conn.barriers.pop_front();
                    covered = Some(covers);
                }
                if let Some(covers) = covered {
                    self.barrier_acked(covers);
                }
                if self.sync == SyncState::InSync {
                    self.release_received(received);
                }
                self.maybe_barrier(now);
            }
            Frame::Fenced { epoch } => {
                if epoch > self.epoch {
                    self.fence(epoch);
                } else {
                    self.disconnected();
                }
            }
            // What hosts see of the standby's paths is the driver's business.
            Frame::PathState { .. } => {}
            _ => self.disconnected(),
        }
    }

    fn fence(&mut self, epoch: u64) {
        self.fenced = true;
        self.disconnected();
        self.events.push_back(PrimaryEvent::Fence(epoch));
    }

    /// A barrier covering everything through `covers` was acknowledged durable.
    fn barrier_acked(&mut self, covers: u64) {
        if let Some(p) = self.resync.as_ref().map(Resync::progress) {
            if p.phase != ResyncPhase::CatchingUp || covers < p.end_lsn {
                return;
            }
            // The standby applied the log through the copy's end: its image is whole.
            self.resync = None;
        }
        match self.sync {
            SyncState::InSync => self.release(covers),
            // Caught up: the standby holds every record of every flush acknowledged without it,
            // so from now on it counts (the driver records that durably).
            SyncState::OutOfSync if covers >= self.released => {
                self.sync = SyncState::InSync;
                self.events.push_back(PrimaryEvent::InSync);
                self.release(covers);
            }
            _ => {}
        }
    }

    fn release(&mut self, through: u64) {
        if through > self.released {
            self.released = through;
            self.events.push_back(PrimaryEvent::Durable(through));
        }
        while self.waits.front().is_some_and(|&(w, _)| w <= through) {
            self.waits.pop_front();
        }
        // Durable is received: the driver's gate releases plain writes with flushes.
        self.received_released = self.received_released.max(through);
        while self.rwaits.front().is_some_and(|&(w, _)| w <= through) {
            self.rwaits.pop_front();
        }
    }

    /// The standby received records through `through`: plain writes waiting for them go on
    /// (an event only when one waits: a later one asking is answered from the position).
    fn release_received(&mut self, through: u64) {
        self.received_released = self.received_released.max(through);
        let mut any = false;
        while self.rwaits.front().is_some_and(|&(w, _)| w <= through) {
            self.rwaits.pop_front();
            any = true;
        }
        if any {
            self.events.push_back(PrimaryEvent::Received(through));
        }
    }

    /// A plain (non-FUA) write waits for records through `lsn` to reach the standby. It
    /// completes as far as this standby goes when [`PrimaryEvent::Received`] (or
    /// [`PrimaryEvent::Durable`]) reaches `lsn`: at once when the standby is out of sync,
    /// otherwise once the standby acknowledged receiving them (it acknowledges every batch it
    /// applied, without a sync), or once it was durably declared out of sync after the
    /// timeout. No barrier is sent for it.
    pub fn need_received(&mut self, lsn: u64, now: Instant) {
        if self.fenced {
            return;
        }
        if self.sync == SyncState::OutOfSync {
            self.received_released = self.received_released.max(lsn);
            self.events.push_back(PrimaryEvent::Received(lsn));
            return;
        }
        if lsn <= self.received_released {
            self.events
                .push_back(PrimaryEvent::Received(self.received_released));
            return;
        }
        if self.rwaits.back().is_none_or(|&(w, _)| w < lsn) {
            self.rwaits.push_back((lsn, now));
        }
        if self.conn.as_ref().is_some_and(|c| c.covered < lsn) {
            self.log_grew();
        }
    }

    /// Records read from the log for this standby: `records` follow the last ones shipped, and
    /// everything through `covered` is now sent or padding. `at_head` says the read reached
    /// the head of the log.
    pub fn ship(&mut self, records: Vec<Record>, covered: u64, at_head: bool, now: Instant) {
        if self.copying() {
            // A read from before the resync began: the log goes out after the copy.
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        conn.reading = false;
        // A read that reached the head may have ended before records appended during it.
        let grew = std::mem::take(&mut conn.grew);
        conn.at_head = at_head && !grew;
        if let Some(last) = records.last().map(|r| r.lsn) {
            self.out.push_back(Frame::Records(Records {
                epoch: self.epoch,
                prev_lsn: conn.shipped,
                records,
            }));
            conn.shipped = last;
        }
        conn.covered = conn.covered.max(covered);
        if !conn.at_head {
            conn.reading = true;
            self.events.push_back(PrimaryEvent::NeedRecords {
                after: conn.covered,
            });
        }
        self.maybe_barrier(now);
    }

    /// The log grew (a write was appended): ship it when no read is outstanding, or right
    /// after the outstanding one (so one read serves every append made meanwhile).
    pub fn log_grew(&mut self) {
        if self.copying() {
            return;
        }
        let Some(conn) = self.conn.as_mut().filter(|c| c.ready) else {
            return;
        };
        conn.at_head = false;
        if conn.reading {
            conn.grew = true;
            return;
        }
        conn.reading = true;
        self.events.push_back(PrimaryEvent::NeedRecords {
            after: conn.covered,
        });
    }

    /// The records the standby needs were recycled, or its last resync did not complete: it
    /// needs a full resync ([`PrimaryEvent::StartResync`]). It is out of sync from now on
    /// (recorded durably first when it was in sync) until it has caught up after the copy.
    pub fn resync_needed(&mut self) {
        if self.copying() {
            return;
        }
        if self.sync == SyncState::InSync {
            self.sync = SyncState::Degrading;
            self.events.push_back(PrimaryEvent::Degrade {
                since_lsn: self.durable,
            });
        }
        let Some(conn) = self.conn.as_mut().filter(|c| c.ready) else {
            return;
        };
        conn.reading = false;
        conn.at_head = false;
        conn.grew = false;
        conn.barriers.clear();
        self.resync = Some(Resync::new());
        self.events.push_back(PrimaryEvent::StartResync);
    }

    /// The driver started the resync the peer asked for: the log is kept after `start_lsn`
    /// (its last LSN when the copy began) and `plan` lists the volume's runs
    /// ([`crate::Engine::resync_plan`]). The standby is told, then the runs follow.
    pub fn resync_started(&mut self, start_lsn: u64, plan: Vec<Run>) {
        let s = self.shape();
        if let Some(f) = self
            .resync
            .as_mut()
            .and_then(|r| r.started(s, start_lsn, plan))
        {
            self.out.push_back(f);
        }
    }

    /// The next thing the driver does for the running copy. Deallocated runs go out as
    /// frames here (nothing to read); an allocated run is asked for a chunk at a time.
    pub fn next_resync_step(&mut self) -> ResyncStep {
        let s = self.shape();
        match self.resync.as_mut() {
            Some(r) => r.next_step(s, &mut self.out),
            None => ResyncStep::Idle,
        }
    }

    /// The data of the chunk [`ResyncStep::Read`] asked for (read after the copy's start, so
    /// possibly newer: the log shipped afterwards overwrites it in order). A chunk of zeros
    /// goes out as a deallocation.
    pub fn resync_extent(&mut self, lba: u64, blocks: u32, data: Bytes) {
        let s = self.shape();
        if let Some(f) = self
            .resync
            .as_mut()
            .and_then(|r| r.extent(s, lba, blocks, data))
        {
            self.out.push_back(f);
        }
    }

    /// Every region is sent; `end_lsn` is the log's last LSN now. The standby is told, and
    /// the log is shipped from the copy's start.
    pub fn resync_copied(&mut self, end_lsn: u64) {
        let s = self.shape();
        let Some((done, start)) = self.resync.as_mut().and_then(|r| r.copied(s, end_lsn)) else {
            return;
        };
        self.out.push_back(done);
        if let Some(conn) = self.conn.as_mut() {
            conn.shipped = start;
            conn.covered = start;
            conn.reading = true;
            conn.at_head = false;
            conn.grew = false;
            self.events
                .push_back(PrimaryEvent::NeedRecords { after: start });
        }
    }

    /// A flush waits for records through `lsn`. It completes as far as this standby goes when
    /// [`PrimaryEvent::Durable`] reaches `lsn` (at once when the standby is out of sync).
    pub fn need_durable(&mut self, lsn: u64, now: Instant) {
        if self.fenced {
            return;
        }
        if self.sync == SyncState::OutOfSync {
            // Acknowledged without the standby: it must hold this before it counts again.
            self.released = self.released.max(lsn);
            self.events.push_back(PrimaryEvent::Durable(lsn));
            return;
        }
        if lsn <= self.released {
            self.events.push_back(PrimaryEvent::Durable(self.released));
            return;
        }
        if self.waits.back().is_none_or(|&(w, _)| w < lsn) {
            self.waits.push_back((lsn, now));
        }
        if self.conn.as_ref().is_some_and(|c| c.covered < lsn) {
            // Its records are not all out yet: read the log (again, after a read running now).
            self.log_grew();
        }
        self.maybe_barrier(now);
    }

    /// Sends a barrier when flushes wait, the records they need are out and no barrier in
    /// flight covers them (barriers are pipelined: one may leave while the standby still syncs
    /// for the one before, up to [`MAX_BARRIERS`]), or when an out-of-sync standby has been
    /// sent the whole log and no barrier is in flight (to learn that it caught up).
    fn maybe_barrier(&mut self, _now: Instant) {
        let sync = self.sync;
        let wanted = self.waits.back().map(|&(w, _)| w);
        let copying = self.copying();
        let max = self.max_barriers;
        let Some(conn) = self.conn.as_mut().filter(|c| c.ready) else {
            return;
        };
        if copying || conn.barriers.len() >= max {
            return;
        }
        let at_head = conn.at_head && !conn.reading;
        // What the newest barrier in flight covers: a new one must cover more.
        let last = conn.barriers.back().map(|&(_, covers)| covers);
        let send = match (sync, wanted) {
            (SyncState::OutOfSync, _) => at_head && last.is_none(),
            (_, Some(w)) => {
                last.is_none_or(|c| c < w && conn.covered > c) && (conn.covered >= w || at_head)
            }
            (_, None) => false,
        };
        if send {
            conn.barriers.push_back((conn.shipped, conn.covered));
            self.out.push_back(Frame::Barrier {
                epoch: self.epoch,
                lsn: conn.shipped,
            });
        }
    }

    /// When [`PrimaryPeer::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.oldest_wait()
            .filter(|_| self.sync == SyncState::InSync)
            .map(|since| since + self.cfg.timeout)
    }

    /// When the oldest flush or plain write still waiting for the standby began to wait.
    fn oldest_wait(&self) -> Option<Instant> {
        let f = self.waits.front().map(|&(_, t)| t);
        let w = self.rwaits.front().map(|&(_, t)| t);
        match (f, w) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Declares the standby out of sync when a flush has waited longer than the timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.sync != SyncState::InSync {
            return;
        }
        if let Some(since) = self.oldest_wait() {
            if now >= since + self.cfg.timeout {
                self.sync = SyncState::Degrading;
                self.events.push_back(PrimaryEvent::Degrade {
                    since_lsn: self.durable,
                });
            }
        }
    }

    /// The driver recorded durably that the standby is out of sync: waiting flushes go on.
    pub fn degraded(&mut self) {
        if self.sync == SyncState::Degrading {
            self.sync = SyncState::OutOfSync;
            if let Some(&(w, _)) = self.waits.back() {
                self.events.push_back(PrimaryEvent::Durable(w));
            }
            self.waits.clear();
            if let Some(&(w, _)) = self.rwaits.back() {
                self.received_released = self.received_released.max(w);
                self.events.push_back(PrimaryEvent::Received(w));
            }
            self.rwaits.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repl::frame::RecordKind;

    const UUID: [u8; 16] = [7; 16];

    pub(super) fn cfg() -> PrimaryConfig {
        PrimaryConfig {
            volume_uuid: UUID,
            node_id: [1; 16],
            block_size: 512,
            capacity_blocks: 100,
            timeout: Duration::from_secs(5),
        }
    }

    pub(super) fn standby_hello(epoch: u64, durable: u64) -> Frame {
        Frame::Hello(Hello {
            volume_uuid: UUID,
            node_id: [2; 16],
            epoch,
            role: crate::role::Role::Standby.to_u8(),
            durable_lsn: durable,
            block_size: 512,
            capacity_blocks: 100,
            resync_incomplete: false,
        })
    }

    pub(super) fn rec(lsn: u64) -> Record {
        Record {
            lsn,
            kind: RecordKind::Zero,
            lba: 0,
            blocks: 1,
            data: bytes::Bytes::new(),
        }
    }

    pub(super) fn frames(p: &mut PrimaryPeer) -> Vec<Frame> {
        std::iter::from_fn(|| p.poll_frame()).collect()
    }

    pub(super) fn events(p: &mut PrimaryPeer) -> Vec<PrimaryEvent> {
        std::iter::from_fn(|| p.poll_event()).collect()
    }

    /// A peer connected to a standby holding everything through `durable`, shipped to `head`.
    fn connected(sync: SyncState, durable: u64) -> PrimaryPeer {
        let mut p = PrimaryPeer::new(cfg(), 3, sync);
        p.connected();
        assert!(matches!(frames(&mut p)[..], [Frame::Hello(_)]));
        p.receive(standby_hello(3, durable), Instant::now());
        assert_eq!(
            events(&mut p),
            vec![PrimaryEvent::NeedRecords { after: durable }]
        );
        p
    }

    #[test]
    fn the_hello_announces_the_grown_size_and_it_never_shrinks() {
        let mut p = PrimaryPeer::new(cfg(), 3, SyncState::InSync);
        p.set_capacity(cfg().capacity_blocks + 50);
        p.set_capacity(1);
        p.connected();
        assert!(matches!(
            &frames(&mut p)[..],
            [Frame::Hello(h)] if h.capacity_blocks == cfg().capacity_blocks + 50
        ));
    }

    #[test]
    fn one_barrier_serves_every_waiting_flush_and_completes_them_once_acked() {
        let t0 = Instant::now();
        let mut p = connected(SyncState::InSync, 10);
        p.ship(vec![rec(11), rec(12)], 12, true, t0);
        assert!(matches!(&frames(&mut p)[..], [Frame::Records(r)] if r.prev_lsn == 10));
        p.need_durable(12, t0);
        p.need_durable(11, t0);
        assert_eq!(
            frames(&mut p),
            vec![Frame::Barrier { epoch: 3, lsn: 12 }],
            "one barrier for both flushes"
        );
        assert_eq!(events(&mut p), vec![], "the records are out: no read");
        p.receive(
            Frame::Ack {
                epoch: 3,
                received_lsn: 12,
                durable_lsn: 12,
            },
            t0,
        );
        assert_eq!(events(&mut p), vec![PrimaryEvent::Durable(12)]);
        // A flush through the padding needs a barrier that covers it: the log is read first.
        p.need_durable(13, t0);
        assert_eq!(
            events(&mut p),
            vec![PrimaryEvent::NeedRecords { after: 12 }]
        );
        assert_eq!(frames(&mut p), vec![], "no barrier before the read");
        p.ship(vec![], 13, true, t0); // LSN 13 was padding
        assert_eq!(frames(&mut p), vec![Frame::Barrier { epoch: 3, lsn: 12 }]);
        p.receive(
            Frame::Ack {
                epoch: 3,
                received_lsn: 12,
                durable_lsn: 12,
            },
            t0,
        );
        assert_eq!(events(&mut p), vec![PrimaryEvent::Durable(13)]);
        p.need_durable(13, t0);
        assert_eq!(
            events(&mut p),
            vec![PrimaryEvent::Durable(13)],
            "already covered"
        );
    }

    #[test]
    fn barriers_are_pipelined_and_complete_in_order() {
        let t0 = Instant::now();
        let mut p = connected(SyncState::InSync, 10);
        p.ship(vec![rec(11), rec(12)], 12, true, t0);
        p.need_durable(12, t0);
        assert_eq!(
            frames(&mut p).last(),
            Some(&Frame::Barrier { epoch: 3, lsn: 12 })
        );
        // A later flush while the first barrier is in flight: read, then a second barrier.
        p.log_grew();
        p.need_durable(14, t0);
        assert_eq!(
            events(&mut p),
            vec![PrimaryEvent::NeedRecords { after: 12 }],
            "one read"
        );
        assert_eq!(frames(&mut p), vec![], "its records are not out yet");
        p.ship(vec![rec(13)], 13, false, t0);
        // Not at the head and 14 not covered: no barrier yet, the read goes on.
        assert!(!frames(&mut p)
            .iter()
            .any(|f| matches!(f, Frame::Barrier { .. })));
        assert_eq!(
            events(&mut p),
            vec![PrimaryEvent::NeedRecords { after: 13 }]
        );
        p.ship(vec![rec(14)], 14, true, t0);
        assert_eq!(
            frames(&mut p).last(),
            Some(&Frame::Barrier { epoch: 3, lsn: 14 }),
            "sent while the first is unanswered"
        );
        // An answer to the first barrier completes only what it covers.
        p.receive(
            Frame::Ack {
                epoch: 3,
                received_lsn: 14,
                durable_lsn: 12,
            },
            t0,
        );
        assert_eq!(events(&mut p), vec![PrimaryEvent::Durable(12)]);
        assert_eq!(
            frames(&mut p),
            vec![],
            "no barrier again for what is in flight"
        );
        p.receive(
            Frame::Ack {
                epoch: 3,
                received_lsn: 14,
                durable_lsn: 14,
            },
            t0,
        );
        assert_eq!(events(&mut p), vec![PrimaryEvent::Durable(14)]);
        // With one barrier at most, the second waits for the first answer.
        let mut p = connected(SyncState::InSync, 10);
        p.set_max_barriers(1);
        p.ship(vec![rec(11)], 11, true, t0);
        p.need_durable(11, t0);
        frames(&mut p);
        p.log_grew();
        events(&mut p);
        p.ship(vec![rec(12)], 12, true, t0);
        p.need_durable(12, t0);
        assert!(!frames(&mut p)
            .iter()
            .any(|f| matches!(f, Frame::Barrier { .. })));
        p.receive(
            Frame::Ack {
                epoch: 3,
                received_lsn: 12,
                durable_lsn: 11,
            },
            t0,
        );
        assert_eq!(events(&mut p), vec![PrimaryEvent::Durable(11)]);
        assert_eq!(frames(&mut p), vec![Frame::Barrier { epoch: 3, lsn: 12 }]);
    }

    #[test]
    fn the_timeout_runs_from_the_oldest_flush_still_waiting() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(3);
        let mut p = connected(SyncState::InSync, 10);
        p.ship(vec![rec(11)], 11, true, t0);
        p.need_durable(11, t0);
        p.log_grew();
        p.ship(vec![rec(12)], 12, true, later);
        p.need_durable(12, later);
        assert_eq!(p.poll_timeout(), Some(t0 + cfg().timeout));
        p.receive(
            Frame::Ack {
                epoch: 3,
                received_lsn: 12,
                durable_lsn: 11,
            },
            later,
        );
        // The flush through 11 completed; the one through 12 began later.
        assert_eq!(p.poll_timeout(), Some(later + cfg().timeout));
        p.handle_timeout(t0 + cfg().timeout);
        assert_eq!(p.sync_state(), SyncState::InSync);
    }

    #[test]
    fn a_silent_standby_is_declared_out_of_sync_durably_before_flushes_go_on() {
        let t0 = Instant::now();
        let mut p = connected(SyncState::InSync, 0);
        p.ship(vec![rec(1)], 1, true, t0);
        p.need_durable(1, t0);
        frames(&mut p);
        events(&mut p);
        p.disconnected();
        assert_eq!(p.poll_timeout(), Some(t0 + cfg().timeout));
        p.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(
            events(&mut p),
            vec![],
            "within the timeout the flush keeps waiting"
        );
        p.handle_timeout(t0 + cfg().timeout);
        assert_eq!(events(&mut p), vec![PrimaryEvent::Degrade { since_lsn: 0 }]);
        assert_eq!(p.sync_state(), SyncState::Degrading);
        assert_eq!(
            events(&mut p),
            vec![],
            "not released before the record is durable"
        );
        p.degraded();
        assert_eq!(events(&mut p), vec![PrimaryEvent::Durable(1)]);
        // Out of sync, later flushes do not wait for it.
        p.need_durable(5, t0);
        assert_eq!(events(&mut p), vec![PrimaryEvent::Durable(5)]);
    }

    #[test]
    fn a_plain_write_completes_once_the_standby_received_it_without_a_barrier() {
        let t0 = Instant::now();
        let mut p = connected(SyncState::InSync, 10);
        p.ship(vec![rec(11), rec(12)], 12, true, t0);
        frames(&mut p);
        p.need_received(12, t0);
        assert_eq!(events(&mut p), vec![], "waits for the standby");
        assert!(
            !frames(&mut p)
                .iter()
                .any(|f| matches!(f, Frame::Barrier { .. })),
            "no barrier (no sync) for a plain write"
        );
        // The standby applied 11 only: not enough.
        p.receive(
            Frame::Ack {
                epoch: 3,
                received_lsn: 11,
                durable_lsn: 10,
            },
            t0,
        );
        assert_eq!(events(&mut p), vec![]);
        // An Ack reporting more than was sent on this connection counts only what was sent.
        p.receive(
            Frame::Ack {
                epoch: 3,
                received_lsn: 40,
                durable_lsn: 10,
            },
            t0,
        );
        assert_eq!(events(&mut p), vec![PrimaryEvent::Received(12)]);
        assert_eq!(p.durable_lsn(), 10, "received is not durable");
        p.need_received(12, t0);
        assert_eq!(events(&mut p), vec![PrimaryEvent::Received(12)], "at once");
        // A standby that stops answering: the write waits out the timeout, then the standby
        // is declared out of sync durably before the write completes.
        p.ship(vec![rec(13)], 13, true, t0);
        p.need_received(13, t0);
        assert_eq!(p.poll_timeout(), Some(t0 + cfg().timeout));
        p.handle_timeout(t0 + cfg().timeout);
        assert_eq!(
            events(&mut p),
            vec![PrimaryEvent::Degrade { since_lsn: 10 }]
        );
        p.degraded();
        assert_eq!(events(&mut p), vec![PrimaryEvent::Received(13)]);
        p.need_received(20, t0);
        assert_eq!(
            events(&mut p),
            vec![PrimaryEvent::Received(20)],
            "out of sync: no wait"
        );
    }

    #[test]
    fn an_out_of_sync_standby_counts_again_once_caught_up() {
        let t0 = Instant::now();
        let mut p = connected(SyncState::OutOfSync, 4);
        p.need_durable(6, t0);
        assert_eq!(
            events(&mut p),
            vec![PrimaryEvent::Durable(6)],
            "out of sync: no wait"
        );
        p.ship(vec![rec(5), rec(6)], 6, false, t0);
        assert_eq!(events(&mut p), vec![PrimaryEvent::NeedRecords { after: 6 }]);
        assert!(
            !frames(&mut p)
                .iter()
                .any(|f| matches!(f, Frame::Barrier { .. })),
            "no probe before the whole log was sent"
        );
        p.ship(vec![rec(7)], 7, true, t0);
        assert_eq!(
            frames(&mut p).last(),
            Some(&Frame::Barrier { epoch: 3, lsn: 7 }),
            "at the head: a barrier asks whether the standby caught up"
        );
        p.receive(
            Frame::Ack {
                epoch: 3,
                received_lsn: 7,
                durable_lsn: 7,
            },
            t0,
        );
        assert_eq!(
            events(&mut p),
            vec![PrimaryEvent::InSync, PrimaryEvent::Durable(7)]
        );
        assert_eq!(p.sync_state(), SyncState::InSync);
        // From now on flushes wait for it.
        p.need_durable(8, t0);
        assert_eq!(events(&mut p), vec![PrimaryEvent::NeedRecords { after: 7 }]);
    }

    #[test]
    fn a_standby_with_a_newer_epoch_fences_the_primary() {
        let mut p = PrimaryPeer::new(cfg(), 3, SyncState::InSync);
        p.connected();
        frames(&mut p);
        p.receive(standby_hello(4, 0), Instant::now());
        assert_eq!(events(&mut p), vec![PrimaryEvent::Fence(4)]);
        assert!(!p.is_connected());
        p.need_durable(1, Instant::now());
        assert_eq!(
            events(&mut p),
            vec![],
            "a fenced primary acknowledges nothing"
        );
    }
}
