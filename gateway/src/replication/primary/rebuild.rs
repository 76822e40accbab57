//! Pacing and progress of a full resync (rebuild) on the primary: when the next chunk may be
//! read (the configured rate limit, and the socket's queue so a slow standby is never
//! flooded), and the rate and ETA status shows.

use std::collections::VecDeque;
use std::time::Duration;

use blockstore::repl::primary::{ResyncPhase, ResyncProgress};
use tokio::time::Instant;

use crate::replication::state::ResyncStatus;

/// Bytes queued on the connection above which the copy waits (the standby reads slower than
/// the disk gives): well under the sender's limit, so copying never drops the connection.
pub const QUEUE_HIGH: usize = 8 << 20;
/// How long the copy waits before looking at a full queue again.
pub const QUEUE_POLL: Duration = Duration::from_millis(5);
/// The window the rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Paces one copy and measures it.
#[derive(Debug)]
pub struct Pacer {
    /// Bytes per second, `None` for unlimited.
    limit: Option<u64>,
    /// When the current copy began, and bytes sent since.
    started: Instant,
    sent: u64,
    /// (when, bytes sent by then), oldest first, spanning the rate window.
    samples: VecDeque<(Instant, u64)>,
}

impl Pacer {
    /// A pacer for copies limited to `limit` bytes per second.
    pub fn new(limit: Option<u64>) -> Pacer {
        Pacer {
            limit,
            started: Instant::now(),
            sent: 0,
            samples: VecDeque::new(),
        }
    }

    /// A new copy begins now.
    pub fn restart(&mut self) {
        self.started = Instant::now();
        self.sent = 0;
        self.samples.clear();
        self.samples.push_back((self.started, 0));
    }

    /// When the next chunk may be read: at once unless the rate limit says later.
    pub fn next_at(&self) -> Instant {
        match self.limit {
            Some(l) if l > 0 => self.started + Duration::from_secs_f64(self.sent as f64 / l as f64),
            _ => Instant::now(),
        }
    }

    /// `bytes` were read and queued for the standby.
    pub fn sent(&mut self, bytes: u64) {
        self.sent += bytes;
        let now = Instant::now();
        self.samples.push_back((now, self.sent));
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over the rate window.
    fn rate(&self) -> u64 {
        let (Some(&(t0, b0)), Some(&(t1, b1))) = (self.samples.front(), self.samples.back()) else {
            return 0;
        };
        let secs = t1.duration_since(t0).as_secs_f64();
        if secs < 0.05 {
            return 0;
        }
        ((b1 - b0) as f64 / secs) as u64
    }

    /// What status shows for `p`.
    pub fn status(&self, p: &ResyncProgress) -> ResyncStatus {
        let rate = self.rate();
        let left = p.total_bytes.saturating_sub(p.done_bytes);
        let eta_seconds = match p.phase {
            ResyncPhase::Copying if rate > 0 => Some(left.div_ceil(rate)),
            ResyncPhase::CatchingUp => Some(0),
            _ => None,
        };
        ResyncStatus {
            phase: match p.phase {
                ResyncPhase::Starting => "starting",
                ResyncPhase::Copying => "copying",
                ResyncPhase::CatchingUp => "catching_up",
            }
            .into(),
            start_lsn: p.start_lsn,
            total_bytes: p.total_bytes,
            done_bytes: p.done_bytes.min(p.total_bytes),
            rate_bytes_per_s: rate,
            eta_seconds,
            rate_limit_bytes_per_s: self.limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_spaces_the_chunks_and_the_rate_follows() {
        let mut p = Pacer::new(Some(1 << 20));
        p.restart();
        let t0 = p.started;
        assert!(p.next_at() <= Instant::now());
        p.sent(1 << 20);
        assert_eq!(p.next_at(), t0 + Duration::from_secs(1), "1 MiB at 1 MiB/s");
        // Two seconds of samples at 1 MiB/s.
        p.samples = [(t0, 0), (t0 + Duration::from_secs(2), 2 << 20)].into();
        let prog = ResyncProgress {
            phase: ResyncPhase::Copying,
            start_lsn: 5,
            end_lsn: 0,
            total_bytes: 4 << 20,
            done_bytes: 2 << 20,
        };
        let s = p.status(&prog);
        assert_eq!(s.rate_bytes_per_s, 1 << 20);
        assert_eq!(s.eta_seconds, Some(2));
        assert_eq!(s.phase, "copying");
        let unlimited = Pacer::new(None);
        assert!(unlimited.next_at() <= Instant::now());
    }
}
