//! The standby's side of one replication connection, as a sans-IO state machine.
//!
//! Frames from the primary go in ([`StandbyLink::receive`]); frames to send and work for the
//! driver come out ([`StandbyLink::poll_frame`], [`StandbyLink::poll_event`]). The driver owns
//! the engine: it applies the records an [`StandbyEvent::Apply`] carries, makes them durable on
//! [`StandbyEvent::Sync`] and reports back with [`StandbyLink::synced`], which answers the
//! primary's barrier. The link refuses records of another epoch and records that do not follow
//! the last one it took (a gap means a lost frame: the connection must start over from the
//! standby's durable position).
//!
//! Full resync: only a primary (the Hello says so) of the standby's epoch or a newer one can
//! start one; an older epoch is fenced as for records. Between `ResyncStart` and `ResyncDone`
//! only regions come (no records, no barriers); the driver marks the image durably as being
//! replaced first ([`StandbyEvent::ResyncBegin`]). After `ResyncDone` the records from the
//! copy's start follow, and the first barrier once they reach the copy's end asks the driver to
//! clear that mark ([`StandbyEvent::ResyncComplete`]) before it is acknowledged, so the primary
//! never counts this standby in sync while its image is partial. A standby that starts with the
//! mark still set (it crashed or lost the connection mid-resync) says so in its Hello
//! ([`StandbyLink::needing_resync`]).

use std::collections::VecDeque;

use super::frame::{Frame, Hello, Record};

/// Who this standby is and what it holds, for the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyConfig {
    /// The volume's identity: both nodes must hold the same volume.
    pub volume_uuid: [u8; 16],
    /// This node's id.
    pub node_id: [u8; 16],
    /// Logical block size (must match the primary's).
    pub block_size: u32,
    /// Capacity in blocks.
    pub capacity_blocks: u64,
}

/// Work for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StandbyEvent {
    /// The primary holds a newer epoch: persist it (the standby adopts it) before going on.
    AdoptEpoch(u64),
    /// The primary's volume is larger than this one (it grew while this standby was away, or
    /// the grow record is no longer in its log): grow the local volume to this many blocks
    /// before anything else ([`crate::Engine::follow_capacity`]), so a full resync or the
    /// records that follow fit.
    Grow(u64),
    /// Append these records to the local log, in order.
    Apply(Vec<Record>),
    /// Make everything applied durable, then call [`StandbyLink::synced`].
    Sync,
    /// A full resync begins: the image is about to be replaced.
    ResyncBegin {
        /// The primary's LSN the copied image corresponds to.
        start_lsn: u64,
    },
    /// One range of the primary's image: write `data`, or deallocate when `None`.
    ResyncExtent {
        /// First block.
        lba: u64,
        /// Number of blocks.
        blocks: u32,
        /// The blocks' data; `None` for a deallocated range.
        data: Option<bytes::Bytes>,
    },
    /// The copy is complete: the applied position is now `start_lsn`; records follow.
    ResyncEnd {
        /// The primary's LSN of the copied image.
        start_lsn: u64,
        /// The image is consistent once the records through this LSN are applied.
        end_lsn: u64,
    },
    /// The records through the copy's end are applied: make them durable and clear the
    /// resync mark (before the [`StandbyEvent::Sync`] that follows is acknowledged).
    ResyncComplete,
}

/// Why the link closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StandbyClose {
    /// The primary serves another volume.
    #[error("the primary serves another volume or geometry")]
    WrongVolume,
    /// The primary's epoch is older than ours: it is fenced (we told it so).
    #[error("the primary's epoch {theirs} is older than ours ({ours})")]
    StaleEpoch {
        /// Our epoch.
        ours: u64,
        /// The primary's.
        theirs: u64,
    },
    /// A frame the protocol does not allow here.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// Records did not follow the last one taken.
    #[error("records after {expected} expected, got a batch after {got}")]
    Gap {
        /// The last LSN taken.
        expected: u64,
        /// The batch's previous LSN.
        got: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitHello,
    Streaming,
    Resyncing { start_lsn: u64 },
    Closed,
}

/// Where this standby's image stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Image {
    /// Consistent as of the position it announced or applied since.
    Whole,
    /// A resync did not complete (announced in the Hello) or is copying now.
    Partial,
    /// Copied; consistent once records through this LSN are applied.
    CatchingUp(u64),
}

/// The standby's side of one connection.
#[derive(Debug)]
pub struct StandbyLink {
    cfg: StandbyConfig,
    state: State,
    epoch: u64,
    /// The last primary LSN taken (applied or handed to the driver to apply).
    received: u64,
    /// The last primary LSN known durable here.
    durable: u64,
    /// The last primary LSN the driver applied (appended to the log here, maybe not synced):
    /// what the Acks report as received.
    applied: u64,
    /// The highest barrier LSN waiting for its answer: answered (an `Ack`) after the next sync,
    /// and once more after a later one when it is beyond what that sync covered (a barrier
    /// that came, with its records, while the driver was syncing for an earlier one: the
    /// primary pipelines barriers).
    barrier_pending: Option<u64>,
    image: Image,
    out: VecDeque<Frame>,
    events: VecDeque<StandbyEvent>,
    closed: Option<StandbyClose>,
}

impl StandbyLink {
    /// A link for a standby at `epoch` holding the primary's records through `durable_lsn`.
    /// Its Hello is queued at once.
    pub fn new(cfg: StandbyConfig, epoch: u64, durable_lsn: u64) -> Self {
        Self::build(cfg, epoch, durable_lsn, Image::Whole)
    }

    /// A link for a standby at `epoch` whose last full resync did not complete: its Hello says
    /// so, and the primary starts the resync over.
    pub fn needing_resync(cfg: StandbyConfig, epoch: u64) -> Self {
        Self::build(cfg, epoch, 0, Image::Partial)
    }

    fn build(cfg: StandbyConfig, epoch: u64, durable_lsn: u64, image: Image) -> Self {
        let mut l = StandbyLink {
            cfg,
            state: State::AwaitHello,
            epoch,
            received: durable_lsn,
            applied: durable_lsn,
            durable: durable_lsn,
            barrier_pending: None,
            image,
            out: VecDeque::new(),
            events: VecDeque::new(),
            closed: None,
        };
        l.out.push_back(Frame::Hello(l.hello()));
        l
    }

    /// Whether this standby's image is whole (no resync announced, running or catching up).
    pub fn image_whole(&self) -> bool {
        self.image == Image::Whole
    }

    fn hello(&self) -> Hello {
        Hello {
            volume_uuid: self.cfg.volume_uuid,
            node_id: self.cfg.node_id,
            epoch: self.epoch,
            role: crate::role::Role::Standby.to_u8(),
            durable_lsn: self.durable,
            block_size: self.cfg.block_size,
            capacity_blocks: self.cfg.capacity_blocks,
            resync_incomplete: self.image != Image::Whole,
        }
    }

    /// The next frame to send.
    pub fn poll_frame(&mut self) -> Option<Frame> {
        self.out.pop_front()
    }

    /// The next piece of work for the driver.
    pub fn poll_event(&mut self) -> Option<StandbyEvent> {
        self.events.pop_front()
    }

    /// Why the link closed, once it has: the driver drops the connection.
    pub fn close_reason(&self) -> Option<&StandbyClose> {
        self.closed.as_ref()
    }

    /// The last primary LSN taken.
    pub fn received_lsn(&self) -> u64 {
        self.received
    }

    fn close(&mut self, why: StandbyClose) {
        if self.closed.is_none() {
            self.closed = Some(why);
            self.state = State::Closed;
        }
    }

    /// Checks a frame's epoch: an older one fences the primary (we say so and close), a newer
    /// one than the handshake's is a protocol error (a new epoch means a new connection).
    fn same_epoch(&mut self, epoch: u64) -> bool {
        if epoch < self.epoch {
            self.out.push_back(Frame::Fenced { epoch: self.epoch });
            self.close(StandbyClose::StaleEpoch {
                ours: self.epoch,
                theirs: epoch,
            });
            return false;
        }
        if epoch > self.epoch {
            self.close(StandbyClose::Protocol("epoch changed within a connection"));
            return false;
        }
        true
    }

    /// Takes one frame from the primary.
    pub fn receive(&mut self, frame: Frame) {
        if self.state == State::Closed {
            return;
        }
        match (self.state, frame) {
            (State::AwaitHello, Frame::Hello(h)) => self.on_hello(&h),
            (State::AwaitHello, _) => self.close(StandbyClose::Protocol("frame before Hello")),
            (_, Frame::Hello(_)) => self.close(StandbyClose::Protocol("second Hello")),
            (State::Streaming, Frame::Records(r)) => {
                if !self.same_epoch(r.epoch) {
                    return;
                }
                if r.prev_lsn != self.received {
                    self.close(StandbyClose::Gap {
                        expected: self.received,
                        got: r.prev_lsn,
                    });
                    return;
                }
                let mut last = r.prev_lsn;
                for rec in &r.records {
                    if rec.lsn <= last {
                        self.close(StandbyClose::Protocol("record LSNs must increase"));
                        return;
                    }
                    last = rec.lsn;
                }
                // A grow record takes effect where it is applied: a resync later in this
                // connection may copy regions up to the new end.
                for rec in &r.records {
                    if rec.kind == super::frame::RecordKind::Grow {
                        self.cfg.capacity_blocks = self.cfg.capacity_blocks.max(rec.lba);
                    }
                }
                self.received = last;
                if !r.records.is_empty() {
                    self.events.push_back(StandbyEvent::Apply(r.records));
                }
            }
            (State::Streaming, Frame::Barrier { epoch, lsn }) => {
                if !self.same_epoch(epoch) {
                    return;
                }
                if lsn > self.received {
                    self.close(StandbyClose::Protocol("barrier beyond the records sent"));
                    return;
                }
                if self.image == Image::Partial {
                    self.close(StandbyClose::Protocol(
                        "a barrier before the full resync this standby needs",
                    ));
                    return;
                }
                let whole = self.image == Image::Whole;
                if let Image::CatchingUp(end) = self.image {
                    if self.received >= end {
                        self.image = Image::Whole;
                        self.events.push_back(StandbyEvent::ResyncComplete);
                    }
                }
                if whole && lsn <= self.durable && self.barrier_pending.is_none() {
                    // Durable already (the driver syncs what it applies as it goes): the
                    // answer needs no sync.
                    self.ack();
                    return;
                }
                match self.barrier_pending {
                    Some(p) => self.barrier_pending = Some(p.max(lsn)),
                    None => {
                        self.barrier_pending = Some(lsn);
                        self.events.push_back(StandbyEvent::Sync);
                    }
                }
            }
            (State::Resyncing { .. }, Frame::Barrier { .. }) => {
                self.close(StandbyClose::Protocol("a barrier during a resync copy"));
            }
            (State::Streaming, Frame::ResyncStart { epoch, start_lsn }) => {
                if !self.same_epoch(epoch) {
                    return;
                }
                self.state = State::Resyncing { start_lsn };
                self.image = Image::Partial;
                // Nothing held here counts until the resync completes.
                self.durable = 0;
                self.events
                    .push_back(StandbyEvent::ResyncBegin { start_lsn });
            }
            (
                State::Resyncing { .. },
                Frame::ResyncExtent {
                    epoch,
                    lba,
                    blocks,
                    data,
                },
            ) => {
                if !self.same_epoch(epoch) {
                    return;
                }
                if lba
                    .checked_add(u64::from(blocks))
                    .is_none_or(|end| end > self.cfg.capacity_blocks)
                {
                    self.close(StandbyClose::Protocol("resync extent beyond the volume"));
                    return;
                }
                self.events
                    .push_back(StandbyEvent::ResyncExtent { lba, blocks, data });
            }
            (State::Resyncing { start_lsn }, Frame::ResyncDone { epoch, end_lsn }) => {
                if !self.same_epoch(epoch) {
                    return;
                }
                if end_lsn < start_lsn {
                    self.close(StandbyClose::Protocol("resync ends before it starts"));
                    return;
                }
                self.received = start_lsn;
                self.state = State::Streaming;
                self.image = Image::CatchingUp(end_lsn);
                self.events
                    .push_back(StandbyEvent::ResyncEnd { start_lsn, end_lsn });
            }
            (_, Frame::Fenced { epoch }) => {
                // The primary holds a newer epoch than we announced: adopt it and start over.
                if epoch > self.epoch {
                    self.events.push_back(StandbyEvent::AdoptEpoch(epoch));
                }
                self.close(StandbyClose::Protocol("fenced by the primary"));
            }
            // What hosts see of the primary's paths is the driver's business.
            (_, Frame::PathState { .. }) => {}
            (_, _) => self.close(StandbyClose::Protocol("unexpected frame")),
        }
    }

    fn on_hello(&mut self, h: &Hello) {
        if crate::role::Role::from_u8(h.role) != Some(crate::role::Role::Primary) {
            // Only the primary of the epoch ships records or serves a rebuild.
            self.close(StandbyClose::Protocol("the peer is not a primary"));
            return;
        }
        if h.volume_uuid != self.cfg.volume_uuid || h.block_size != self.cfg.block_size {
            self.close(StandbyClose::WrongVolume);
            return;
        }
        if h.epoch < self.epoch {
            self.out.push_back(Frame::Fenced { epoch: self.epoch });
            self.close(StandbyClose::StaleEpoch {
                ours: self.epoch,
                theirs: h.epoch,
            });
            return;
        }
        if h.epoch > self.epoch {
            self.epoch = h.epoch;
            self.events.push_back(StandbyEvent::AdoptEpoch(h.epoch));
        }
        if h.capacity_blocks > self.cfg.capacity_blocks {
            // Never smaller than the primary: grown before any record or region is taken.
            self.cfg.capacity_blocks = h.capacity_blocks;
            self.events.push_back(StandbyEvent::Grow(h.capacity_blocks));
        }
        self.state = State::Streaming;
    }

    /// The driver applied (appended to its log, not necessarily synced) the records taken so
    /// far: the primary is told at once, so that it completes the plain writes among them
    /// (one round trip per write, no sync). A driver that syncs after every batch it applies
    /// calls [`StandbyLink::synced`] instead, which acknowledges both positions.
    pub fn applied(&mut self, through: u64) {
        if through <= self.applied {
            return;
        }
        self.applied = through;
        if self.state == State::Streaming && self.image == Image::Whole {
            self.ack();
        }
    }

    fn ack(&mut self) {
        self.out.push_back(Frame::Ack {
            epoch: self.epoch,
            received_lsn: self.applied.max(self.durable),
            durable_lsn: self.durable,
        });
    }

    /// The driver made everything applied durable through `durable_lsn`: answer the barriers
    /// waiting. One beyond it (its records were taken after this sync began) asks for another
    /// sync and is answered after that one.
    /// With no barrier waiting, the sync is acknowledged all the same (the driver syncs after
    /// every batch it applies, and the primary completes plain writes once the standby has
    /// them: one Ack per batch).
    pub fn synced(&mut self, durable_lsn: u64) {
        self.durable = self.durable.max(durable_lsn);
        self.applied = self.applied.max(self.durable);
        if self.state == State::Closed {
            return;
        }
        let Some(p) = self.barrier_pending else {
            if self.state == State::Streaming && self.image == Image::Whole {
                self.ack();
            }
            return;
        };
        self.ack();
        if p <= self.durable {
            self.barrier_pending = None;
        } else {
            self.events.push_back(StandbyEvent::Sync);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repl::frame::{RecordKind, Records};

    const UUID: [u8; 16] = [7; 16];

    fn cfg() -> StandbyConfig {
        StandbyConfig {
            volume_uuid: UUID,
            node_id: [2; 16],
            block_size: 512,
            capacity_blocks: 100,
        }
    }

    fn hello(epoch: u64) -> Frame {
        Frame::Hello(Hello {
            volume_uuid: UUID,
            node_id: [1; 16],
            epoch,
            role: crate::role::Role::Primary.to_u8(),
            durable_lsn: 0,
            block_size: 512,
            capacity_blocks: 100,
            resync_incomplete: false,
        })
    }

    fn rec(lsn: u64) -> Record {
        Record {
            lsn,
            kind: RecordKind::Trim,
            lba: 1,
            blocks: 1,
            data: bytes::Bytes::new(),
        }
    }

    fn records(epoch: u64, prev: u64, lsns: &[u64]) -> Frame {
        Frame::Records(Records {
            epoch,
            prev_lsn: prev,
            records: lsns.iter().map(|&l| rec(l)).collect(),
        })
    }

    #[test]
    fn a_larger_primary_grows_the_standby_first_and_grow_records_widen_resync_checks() {
        // The Hello of a primary that grew while this standby was away: grow before anything.
        let mut l = StandbyLink::new(cfg(), 3, 10);
        l.poll_frame();
        let Frame::Hello(mut h) = hello(3) else {
            unreachable!()
        };
        h.capacity_blocks = 150;
        l.receive(Frame::Hello(h));
        assert_eq!(l.poll_event(), Some(StandbyEvent::Grow(150)));
        assert!(l.close_reason().is_none());
        // A grow record in the stream: a resync later on this connection may reach its end.
        let mut l = StandbyLink::new(cfg(), 3, 10);
        l.poll_frame();
        l.receive(hello(3));
        assert_eq!(
            l.poll_event(),
            None,
            "no grow for a primary of the same size"
        );
        let grow = Record {
            lsn: 11,
            kind: RecordKind::Grow,
            lba: 200,
            blocks: 0,
            data: bytes::Bytes::new(),
        };
        l.receive(Frame::Records(Records {
            epoch: 3,
            prev_lsn: 10,
            records: vec![grow.clone()],
        }));
        assert_eq!(l.poll_event(), Some(StandbyEvent::Apply(vec![grow])));
        l.receive(Frame::ResyncStart {
            epoch: 3,
            start_lsn: 11,
        });
        l.receive(Frame::ResyncExtent {
            epoch: 3,
            lba: 190,
            blocks: 10,
            data: None,
        });
        assert!(l.close_reason().is_none(), "{:?}", l.close_reason());
        l.receive(Frame::ResyncExtent {
            epoch: 3,
            lba: 195,
            blocks: 10,
            data: None,
        });
        assert_eq!(
            l.close_reason(),
            Some(&StandbyClose::Protocol("resync extent beyond the volume"))
        );
    }

    #[test]
    fn records_are_applied_in_order_and_a_barrier_is_acked_once_durable() {
        let mut l = StandbyLink::new(cfg(), 3, 10);
        assert!(matches!(l.poll_frame(), Some(Frame::Hello(h)) if h.durable_lsn == 10));
        l.receive(hello(3));
        l.receive(records(3, 10, &[11, 13]));
        l.receive(records(3, 13, &[14]));
        assert_eq!(
            l.poll_event(),
            Some(StandbyEvent::Apply(vec![rec(11), rec(13)]))
        );
        assert_eq!(l.poll_event(), Some(StandbyEvent::Apply(vec![rec(14)])));
        l.receive(Frame::Barrier { epoch: 3, lsn: 14 });
        l.receive(Frame::Barrier { epoch: 3, lsn: 13 });
        assert_eq!(
            l.poll_event(),
            Some(StandbyEvent::Sync),
            "one sync for both"
        );
        assert_eq!(l.poll_event(), None);
        assert_eq!(l.poll_frame(), None, "no ack before the data is durable");
        l.synced(14);
        assert_eq!(
            l.poll_frame(),
            Some(Frame::Ack {
                epoch: 3,
                received_lsn: 14,
                durable_lsn: 14
            })
        );
        assert!(l.close_reason().is_none());
    }

    #[test]
    fn a_barrier_for_what_is_durable_already_is_acked_without_a_sync() {
        let mut l = StandbyLink::new(cfg(), 3, 10);
        l.poll_frame();
        l.receive(hello(3));
        l.receive(records(3, 10, &[11, 12]));
        assert_eq!(
            l.poll_event(),
            Some(StandbyEvent::Apply(vec![rec(11), rec(12)]))
        );
        // The driver synced what it applied before the barrier came: acknowledged unasked
        // (the primary completes plain writes on it), and once more for the barrier.
        l.synced(12);
        let ack = Some(Frame::Ack {
            epoch: 3,
            received_lsn: 12,
            durable_lsn: 12,
        });
        assert_eq!(l.poll_frame(), ack);
        l.receive(Frame::Barrier { epoch: 3, lsn: 12 });
        assert_eq!(l.poll_event(), None, "no sync needed");
        assert_eq!(
            l.poll_frame(),
            Some(Frame::Ack {
                epoch: 3,
                received_lsn: 12,
                durable_lsn: 12
            })
        );
        // Beyond what is durable, a barrier waits for a sync.
        l.receive(records(3, 12, &[13]));
        l.receive(Frame::Barrier { epoch: 3, lsn: 13 });
        assert_eq!(l.poll_event(), Some(StandbyEvent::Apply(vec![rec(13)])));
        assert_eq!(l.poll_event(), Some(StandbyEvent::Sync));
        assert_eq!(l.poll_frame(), None);
    }

    #[test]
    fn each_applied_batch_is_acknowledged_as_received_without_a_sync() {
        let mut l = StandbyLink::new(cfg(), 3, 10);
        l.poll_frame();
        l.receive(hello(3));
        l.receive(records(3, 10, &[11, 12]));
        l.receive(records(3, 12, &[13]));
        assert_eq!(
            l.poll_event(),
            Some(StandbyEvent::Apply(vec![rec(11), rec(12)]))
        );
        assert_eq!(
            l.poll_frame(),
            None,
            "nothing applied yet: nothing received"
        );
        l.applied(12);
        assert_eq!(
            l.poll_frame(),
            Some(Frame::Ack {
                epoch: 3,
                received_lsn: 12,
                durable_lsn: 10
            }),
            "what is taken but not applied (13) is not reported"
        );
        assert_eq!(l.poll_event(), Some(StandbyEvent::Apply(vec![rec(13)])));
        assert_eq!(l.poll_event(), None, "no sync asked for");
        l.applied(13);
        assert_eq!(
            l.poll_frame(),
            Some(Frame::Ack {
                epoch: 3,
                received_lsn: 13,
                durable_lsn: 10
            })
        );
    }

    #[test]
    fn a_pipelined_barrier_beyond_the_sync_in_progress_is_answered_after_the_next_one() {
        let mut l = StandbyLink::new(cfg(), 3, 10);
        l.poll_frame();
        l.receive(hello(3));
        // Records, a barrier, more records and a second barrier, taken together.
        l.receive(records(3, 10, &[11]));
        l.receive(Frame::Barrier { epoch: 3, lsn: 11 });
        l.receive(records(3, 11, &[12]));
        l.receive(Frame::Barrier { epoch: 3, lsn: 12 });
        assert_eq!(l.poll_event(), Some(StandbyEvent::Apply(vec![rec(11)])));
        assert_eq!(l.poll_event(), Some(StandbyEvent::Sync));
        assert_eq!(l.poll_event(), Some(StandbyEvent::Apply(vec![rec(12)])));
        assert_eq!(l.poll_event(), None);
        // The driver synced after applying 11 only.
        l.synced(11);
        assert!(matches!(
            l.poll_frame(),
            Some(Frame::Ack {
                durable_lsn: 11,
                ..
            })
        ));
        assert_eq!(
            l.poll_event(),
            Some(StandbyEvent::Sync),
            "the second barrier needs another sync"
        );
        l.synced(12);
        assert!(matches!(
            l.poll_frame(),
            Some(Frame::Ack {
                durable_lsn: 12,
                ..
            })
        ));
        assert_eq!(l.poll_event(), None);
    }

    #[test]
    fn a_gap_or_an_older_epoch_closes_the_link() {
        let mut l = StandbyLink::new(cfg(), 3, 10);
        l.receive(hello(3));
        l.receive(records(3, 9, &[12]));
        assert_eq!(
            l.close_reason(),
            Some(&StandbyClose::Gap {
                expected: 10,
                got: 9
            })
        );
        assert_eq!(l.poll_event(), None, "nothing of the bad batch is applied");

        let mut l = StandbyLink::new(cfg(), 5, 0);
        l.poll_frame();
        l.receive(hello(4));
        assert_eq!(l.poll_frame(), Some(Frame::Fenced { epoch: 5 }));
        assert!(matches!(
            l.close_reason(),
            Some(StandbyClose::StaleEpoch { ours: 5, theirs: 4 })
        ));
    }

    #[test]
    fn a_newer_primary_epoch_is_adopted_before_anything_is_applied() {
        let mut l = StandbyLink::new(cfg(), 3, 0);
        l.receive(hello(6));
        l.receive(records(6, 0, &[1]));
        assert_eq!(l.poll_event(), Some(StandbyEvent::AdoptEpoch(6)));
        assert_eq!(l.poll_event(), Some(StandbyEvent::Apply(vec![rec(1)])));
        l.receive(records(5, 1, &[2]));
        assert!(matches!(
            l.close_reason(),
            Some(StandbyClose::StaleEpoch { ours: 6, theirs: 5 })
        ));
    }

    #[test]
    fn a_full_resync_replaces_the_position() {
        let mut l = StandbyLink::new(cfg(), 2, 0);
        l.receive(hello(2));
        l.receive(Frame::ResyncStart {
            epoch: 2,
            start_lsn: 40,
        });
        l.receive(Frame::ResyncExtent {
            epoch: 2,
            lba: 0,
            blocks: 4,
            data: None,
        });
        l.receive(Frame::ResyncDone {
            epoch: 2,
            end_lsn: 41,
        });
        l.receive(records(2, 40, &[41]));
        let events: Vec<_> = std::iter::from_fn(|| l.poll_event()).collect();
        assert_eq!(events.len(), 4, "{events:?}");
        assert_eq!(
            events[2],
            StandbyEvent::ResyncEnd {
                start_lsn: 40,
                end_lsn: 41
            }
        );
        assert_eq!(l.received_lsn(), 41);
        assert!(
            !l.image_whole(),
            "not whole before the barrier past the end"
        );
        l.receive(Frame::Barrier { epoch: 2, lsn: 41 });
        assert_eq!(l.poll_event(), Some(StandbyEvent::ResyncComplete));
        assert_eq!(l.poll_event(), Some(StandbyEvent::Sync));
        assert!(l.image_whole());
        l.receive(Frame::ResyncExtent {
            epoch: 2,
            lba: 99,
            blocks: 2,
            data: None,
        });
        assert!(l.close_reason().is_some(), "extents only during a resync");
    }

    #[test]
    fn a_resync_needs_the_primary_of_the_current_epoch() {
        // An older epoch's resync is refused (and fenced).
        let mut l = StandbyLink::new(cfg(), 5, 0);
        l.poll_frame();
        l.receive(hello(5));
        l.receive(Frame::ResyncStart {
            epoch: 4,
            start_lsn: 1,
        });
        assert_eq!(l.poll_frame(), Some(Frame::Fenced { epoch: 5 }));
        assert!(matches!(
            l.close_reason(),
            Some(StandbyClose::StaleEpoch { ours: 5, theirs: 4 })
        ));
        assert_eq!(l.poll_event(), None, "nothing of the image is replaced");
        // A peer that is not a primary serves no rebuild.
        let mut l = StandbyLink::new(cfg(), 5, 0);
        let Frame::Hello(mut h) = hello(5) else {
            unreachable!()
        };
        h.role = crate::role::Role::Standby.to_u8();
        l.receive(Frame::Hello(h));
        assert!(l.close_reason().is_some());
        // A standby with a partial image says so, and takes no barrier before a resync.
        let mut l = StandbyLink::needing_resync(cfg(), 5);
        assert!(
            matches!(l.poll_frame(), Some(Frame::Hello(h)) if h.resync_incomplete && h.durable_lsn == 0)
        );
        l.receive(hello(5));
        l.receive(Frame::Barrier { epoch: 5, lsn: 0 });
        assert!(l.close_reason().is_some());
    }
}
