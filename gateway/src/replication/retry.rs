//! When the primary dials its standby again after a failed or short-lived link, and what it
//! logs about it: an exponential back-off with a cap, reset once a link held, and a log that
//! names the first failure of a run of failures at WARN and then sums the rest up at most once
//! per [`SUMMARY_EVERY`].
//!
//! Why: a peer that accepts the connection and then closes it (an old primary fenced by a
//! newer epoch, still running behind its replication listener) used to be dialled again every
//! ~57 ms, each attempt logging a WARN (hundreds of lines a minute). A pure piece (the task
//! passes the time in) so the policy is tested without sockets or clocks.

use std::time::{Duration, Instant};

/// The first delay after a failure (and after a link that held went down).
pub const RETRY_MIN: Duration = Duration::from_millis(50);
/// The longest delay between two attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often a run of failures is summed up in the log after its first WARN.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// A link that stayed up this long counts as a success (resets the back-off), even when it
/// then broke: a peer that closes every link at once never gets there.
pub const STABLE_LINK: Duration = Duration::from_secs(2);

/// What to log about a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The first failure after a success (or ever): log it at WARN.
    First,
    /// `failures` more failed since the last report, `over` ago: log one summary line.
    Summary {
        /// Failures since the last report.
        failures: u64,
        /// Time since the last report.
        over: Duration,
    },
    /// Reported recently: log nothing above debug.
    Quiet,
}

/// The back-off and log rate limit of one peer link.
#[derive(Debug, Clone)]
pub struct Retry {
    min: Duration,
    max: Duration,
    every: Duration,
    delay: Duration,
    failures: u64,
    unreported: u64,
    reported_at: Option<Instant>,
}

impl Default for Retry {
    fn default() -> Self {
        Retry::new(RETRY_MIN, RETRY_MAX, SUMMARY_EVERY)
    }
}

impl Retry {
    /// A policy starting at `min`, doubling up to `max`, summing up every `every`.
    pub fn new(min: Duration, max: Duration, every: Duration) -> Retry {
        Retry {
            min,
            max: max.max(min),
            every,
            delay: min,
            failures: 0,
            unreported: 0,
            reported_at: None,
        }
    }

    /// An attempt failed (a dial, a handshake, or a link that did not hold) at `now`: how long
    /// to wait before the next one, and what to log.
    pub fn failed(&mut self, now: Instant) -> (Duration, Report) {
        let delay = self.delay;
        self.delay = self.delay.saturating_mul(2).min(self.max);
        self.failures += 1;
        let report = match self.reported_at {
            None => {
                self.reported_at = Some(now);
                self.unreported = 0;
                Report::First
            }
            Some(at) => {
                self.unreported += 1;
                let over = now.saturating_duration_since(at);
                if over >= self.every {
                    let failures = std::mem::take(&mut self.unreported);
                    self.reported_at = Some(now);
                    Report::Summary { failures, over }
                } else {
                    Report::Quiet
                }
            }
        };
        (delay, report)
    }

    /// A link held: the back-off starts over and the next failure is reported at once.
    /// Returns how many attempts had failed before it (`None` when none had), for a line saying
    /// the link is back.
    pub fn succeeded(&mut self) -> Option<u64> {
        let failures = std::mem::take(&mut self.failures);
        self.delay = self.min;
        self.unreported = 0;
        self.reported_at = None;
        (failures > 0).then_some(failures)
    }

    /// Whether the last attempts failed (no success since).
    pub fn failing(&self) -> bool {
        self.failures > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_from_the_minimum_up_to_the_cap() {
        let mut r = Retry::default();
        let t = Instant::now();
        let delays: Vec<u64> = (0..10)
            .map(|i| r.failed(t + ms(i)).0.as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
        );
    }

    #[test]
    fn a_success_starts_the_delays_over() {
        let mut r = Retry::default();
        let t = Instant::now();
        for i in 0..6 {
            r.failed(t + ms(i));
        }
        assert!(r.failing());
        assert_eq!(r.succeeded(), Some(6));
        assert!(!r.failing());
        assert_eq!(r.failed(t + ms(10)).0, RETRY_MIN);
        assert_eq!(r.failed(t + ms(11)).0, ms(100));
        // A success with no failure before says so.
        let mut fresh = Retry::default();
        assert_eq!(fresh.succeeded(), None);
    }

    #[test]
    fn the_first_failure_is_reported_then_a_summary_per_period() {
        let mut r = Retry::new(ms(50), ms(5000), Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(r.failed(t).1, Report::First);
        // A failure every 5 s (the cap): quiet until 60 s passed since the first report.
        let mut reports = Vec::new();
        for i in 1..=25u64 {
            let rep = r.failed(t + Duration::from_secs(5 * i)).1;
            if rep != Report::Quiet {
                reports.push((i, rep));
            }
        }
        assert_eq!(
            reports,
            [
                (
                    12,
                    Report::Summary {
                        failures: 12,
                        over: Duration::from_secs(60)
                    }
                ),
                (
                    24,
                    Report::Summary {
                        failures: 12,
                        over: Duration::from_secs(60)
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_fast_failing_peer_logs_a_few_lines_a_minute_not_hundreds() {
        // The case that prompted this: a peer that closes every link ~7 ms after it opened.
        let mut r = Retry::default();
        let mut now = Instant::now();
        let end = now + Duration::from_secs(60);
        let (mut attempts, mut lines) = (0u32, 0u32);
        while now < end {
            let (delay, rep) = r.failed(now);
            attempts += 1;
            if rep != Report::Quiet {
                lines += 1;
            }
            now += delay + ms(7);
        }
        assert!(attempts <= 20, "{attempts} attempts in a minute");
        assert!(lines <= 2, "{lines} log lines in a minute");
    }

    #[test]
    fn after_a_success_the_next_failure_is_reported_at_once() {
        let mut r = Retry::default();
        let t = Instant::now();
        assert_eq!(r.failed(t).1, Report::First);
        assert_eq!(r.failed(t + ms(100)).1, Report::Quiet);
        r.succeeded();
        assert_eq!(r.failed(t + ms(200)).1, Report::First);
    }

    #[test]
    fn a_cap_below_the_minimum_is_the_minimum() {
        let mut r = Retry::new(ms(100), ms(10), Duration::from_secs(1));
        let t = Instant::now();
        assert_eq!(r.failed(t).0, ms(100));
        assert_eq!(r.failed(t).0, ms(100));
    }
}
