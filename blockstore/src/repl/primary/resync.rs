//! The copy part of a full resync (rebuild), as the primary's peer runs it: the volume's runs
//! still to send, the chunk a read is outstanding for, and the progress status shows. A leaf
//! under [`super`] (it knows frames, not the peer): the peer owns one while a resync runs and
//! puts the frames it produces on the connection; the catch-up after it is the peer's ordinary
//! log shipping from the copy's start.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::repl::frame::Frame;
use crate::resync::Run;

/// Largest chunk of data one `ResyncExtent` carries (well under the frame limit).
pub const RESYNC_CHUNK_BYTES: u64 = 1 << 20;

/// Where a full resync is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResyncPhase {
    /// Asked the driver to start it.
    Starting,
    /// Copying the volume's regions.
    Copying,
    /// The copy is sent; shipping the log from the start until the standby caught up.
    CatchingUp,
}

/// Progress of a full resync, for status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResyncProgress {
    /// Where it is.
    pub phase: ResyncPhase,
    /// The log's last LSN when the copy began: the log is shipped after it.
    pub start_lsn: u64,
    /// The log's last LSN when the copy ended (0 before).
    pub end_lsn: u64,
    /// Bytes of allocated data to copy.
    pub total_bytes: u64,
    /// Bytes of it sent so far.
    pub done_bytes: u64,
}

/// What the driver does next for a running resync (`PrimaryPeer::next_resync_step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncStep {
    /// Nothing now (no copy running, or a read is outstanding).
    Idle,
    /// Read these blocks and hand them to `PrimaryPeer::resync_extent`.
    Read {
        /// First block.
        lba: u64,
        /// Number of blocks (at most [`RESYNC_CHUNK_BYTES`] of data).
        blocks: u32,
    },
    /// Every region is sent: call `PrimaryPeer::resync_copied` with the log's last LSN.
    Finish,
}

/// The geometry and identity a resync's frames need.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    /// The primary's epoch.
    pub epoch: u64,
    /// Block size in bytes.
    pub block_size: u64,
    /// Capacity in blocks.
    pub capacity: u64,
    /// Data per chunk, in bytes.
    pub chunk_bytes: u64,
}

/// A running full resync.
#[derive(Debug, Clone)]
pub(super) struct Resync {
    progress: ResyncProgress,
    /// Runs still to send, in order.
    plan: VecDeque<Run>,
    /// A read handed to the driver and not returned yet.
    reading: bool,
}

impl Resync {
    /// A resync the driver was asked to start.
    pub fn new() -> Resync {
        Resync {
            progress: ResyncProgress {
                phase: ResyncPhase::Starting,
                start_lsn: 0,
                end_lsn: 0,
                total_bytes: 0,
                done_bytes: 0,
            },
            plan: VecDeque::new(),
            reading: false,
        }
    }

    /// Its progress.
    pub fn progress(&self) -> ResyncProgress {
        self.progress
    }

    /// Whether it is being set up or copying (no log shipping, no barriers then).
    pub fn copying(&self) -> bool {
        self.progress.phase != ResyncPhase::CatchingUp
    }

    /// The driver started it at `start_lsn` with `plan`: returns the `ResyncStart` to send.
    pub fn started(&mut self, s: Shape, start_lsn: u64, plan: Vec<Run>) -> Option<Frame> {
        if self.progress.phase != ResyncPhase::Starting {
            return None;
        }
        self.progress.phase = ResyncPhase::Copying;
        self.progress.start_lsn = start_lsn;
        self.progress.total_bytes = plan
            .iter()
            .filter(|run| run.mapped)
            .map(|run| run.blocks.saturating_mul(s.block_size))
            .sum();
        self.plan = plan
            .into_iter()
            .filter(|run| run.blocks > 0 && run.lba < s.capacity)
            .collect();
        Some(Frame::ResyncStart {
            epoch: s.epoch,
            start_lsn,
        })
    }

    /// The next step; deallocated runs go to `out` as frames on the way (nothing to read).
    pub fn next_step(&mut self, s: Shape, out: &mut VecDeque<Frame>) -> ResyncStep {
        if self.progress.phase != ResyncPhase::Copying || self.reading {
            return ResyncStep::Idle;
        }
        let chunk = (s.chunk_bytes / s.block_size.max(1)).clamp(1, u64::from(u32::MAX));
        while let Some(run) = self.plan.front_mut() {
            let end = run.lba.saturating_add(run.blocks).min(s.capacity);
            if run.lba >= end {
                self.plan.pop_front();
                continue;
            }
            if run.mapped {
                let n = (end - run.lba).min(chunk);
                let lba = run.lba;
                run.lba += n;
                run.blocks = end - run.lba;
                self.reading = true;
                // n <= chunk <= u32::MAX.
                return ResyncStep::Read {
                    lba,
                    blocks: u32::try_from(n).unwrap_or(u32::MAX),
                };
            }
            let n = (end - run.lba).min(u64::from(u32::MAX));
            out.push_back(Frame::ResyncExtent {
                epoch: s.epoch,
                lba: run.lba,
                blocks: u32::try_from(n).unwrap_or(u32::MAX),
                data: None,
            });
            run.lba += n;
            run.blocks = end - run.lba;
        }
        ResyncStep::Finish
    }

    /// The data of the outstanding read: returns its frame (a chunk of zeros goes out as a
    /// deallocation).
    pub fn extent(&mut self, s: Shape, lba: u64, blocks: u32, data: Bytes) -> Option<Frame> {
        if self.progress.phase != ResyncPhase::Copying || !self.reading {
            return None;
        }
        self.reading = false;
        self.progress.done_bytes = self.progress.done_bytes.saturating_add(data.len() as u64);
        let data = if data.iter().all(|&b| b == 0) {
            None
        } else {
            Some(data)
        };
        Some(Frame::ResyncExtent {
            epoch: s.epoch,
            lba,
            blocks,
            data,
        })
    }

    /// Every region is sent and the log's last LSN is `end_lsn`: returns the `ResyncDone` to
    /// send and the LSN the log is shipped after.
    pub fn copied(&mut self, s: Shape, end_lsn: u64) -> Option<(Frame, u64)> {
        if self.progress.phase != ResyncPhase::Copying || self.reading {
            return None;
        }
        self.progress.phase = ResyncPhase::CatchingUp;
        self.progress.end_lsn = end_lsn.max(self.progress.start_lsn);
        Some((
            Frame::ResyncDone {
                epoch: s.epoch,
                end_lsn: self.progress.end_lsn,
            },
            self.progress.start_lsn,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::tests::{cfg, events, frames, rec, standby_hello};
    use super::super::{PrimaryConfig, PrimaryEvent, PrimaryPeer, SyncState};
    use super::*;

    #[test]
    fn a_full_resync_copies_then_catches_up_before_the_standby_counts() {
        let t0 = Instant::now();
        let big = PrimaryConfig {
            capacity_blocks: 5000,
            ..cfg()
        };
        let mut p = PrimaryPeer::new(big, 3, SyncState::InSync);
        p.connected();
        frames(&mut p);
        p.receive(standby_hello(3, 4), t0);
        events(&mut p);
        // The records after 4 were recycled.
        p.resync_needed();
        assert_eq!(
            events(&mut p),
            vec![
                PrimaryEvent::Degrade { since_lsn: 4 },
                PrimaryEvent::StartResync
            ]
        );
        p.degraded();
        events(&mut p);
        assert_eq!(p.retention_lsn(), None, "the driver places the floor");
        let run = |lba, blocks, mapped| Run {
            lba,
            blocks,
            mapped,
        };
        p.resync_started(20, vec![run(0, 10, false), run(10, 3000, true)]);
        assert_eq!(p.retention_lsn(), Some(20));
        assert_eq!(
            frames(&mut p),
            vec![Frame::ResyncStart {
                epoch: 3,
                start_lsn: 20
            }]
        );
        // Writes go on during the copy: nothing is shipped, no barrier goes out.
        p.log_grew();
        p.need_durable(25, t0);
        assert_eq!(events(&mut p), vec![PrimaryEvent::Durable(25)]);
        let step = p.next_resync_step();
        assert_eq!(
            step,
            ResyncStep::Read {
                lba: 10,
                blocks: 2048
            }
        );
        assert_eq!(p.next_resync_step(), ResyncStep::Idle, "one read at a time");
        assert!(matches!(
            &frames(&mut p)[..],
            [Frame::ResyncExtent {
                lba: 0,
                blocks: 10,
                data: None,
                ..
            }]
        ));
        p.resync_extent(10, 2048, Bytes::from(vec![1u8; 2048 * 512]));
        assert_eq!(
            p.next_resync_step(),
            ResyncStep::Read {
                lba: 2058,
                blocks: 952
            }
        );
        p.resync_extent(2058, 952, Bytes::from(vec![0u8; 952 * 512]));
        let sent = frames(&mut p);
        assert!(
            matches!(&sent[0], Frame::ResyncExtent { data: Some(d), .. } if d.len() == 2048 * 512)
        );
        assert!(
            matches!(&sent[1], Frame::ResyncExtent { data: None, .. }),
            "zeros go out as a deallocation"
        );
        let prog = p.resync_progress().unwrap();
        assert_eq!(
            (prog.done_bytes, prog.total_bytes),
            (3000 * 512, 3000 * 512)
        );
        assert_eq!(p.next_resync_step(), ResyncStep::Finish);
        p.resync_copied(26);
        assert_eq!(
            frames(&mut p),
            vec![Frame::ResyncDone {
                epoch: 3,
                end_lsn: 26
            }]
        );
        assert_eq!(
            events(&mut p),
            vec![PrimaryEvent::NeedRecords { after: 20 }]
        );
        p.ship(vec![rec(21), rec(26)], 26, true, t0);
        assert_eq!(
            frames(&mut p).last(),
            Some(&Frame::Barrier { epoch: 3, lsn: 26 })
        );
        assert_eq!(p.sync_state(), SyncState::OutOfSync);
        p.receive(
            Frame::Ack {
                epoch: 3,
                received_lsn: 26,
                durable_lsn: 26,
            },
            t0,
        );
        assert_eq!(
            events(&mut p),
            vec![PrimaryEvent::InSync, PrimaryEvent::Durable(26)]
        );
        assert_eq!(p.resync_progress(), None);
    }

    #[test]
    fn a_standby_announcing_an_incomplete_resync_gets_a_new_one_and_a_drop_abandons_it() {
        let mut p = PrimaryPeer::new(cfg(), 3, SyncState::OutOfSync);
        p.connected();
        frames(&mut p);
        let Frame::Hello(mut h) = standby_hello(3, 50) else {
            unreachable!()
        };
        h.resync_incomplete = true;
        p.receive(Frame::Hello(h), Instant::now());
        assert_eq!(events(&mut p), vec![PrimaryEvent::StartResync]);
        assert_eq!(
            p.durable_lsn(),
            0,
            "a partial image holds nothing that counts"
        );
        p.resync_started(60, vec![]);
        assert_eq!(p.next_resync_step(), ResyncStep::Finish);
        p.disconnected();
        assert_eq!(p.resync_progress(), None);
        assert_eq!(p.next_resync_step(), ResyncStep::Idle);
    }
}
