//! The lease timer: tells the volume when its lease runs out.
//!
//! A primary under a lease serves only until the lease ends; at that moment its access state
//! changes (to transitioning) without any call into the volume, so something must wake up then
//! and publish the new state to watchers (the front ends, which tell hosts). That is this
//! thread's one job. It reads the deadline and delivers the tick through the narrow
//! [`LeaseClock`] trait; the rules deciding what the deadline means stay with the role state
//! ([`crate::role`]), so a later role state machine ticked with time can take the tick here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::worker::Worker;

/// What the lease timer needs from the volume it times.
pub(crate) trait LeaseClock: Send + Sync + 'static {
    /// When the current lease ends, if there is one.
    fn lease_until(&self) -> Option<Instant>;
    /// Called at (just after) the end of a lease and whenever the timer is woken: recompute
    /// the access state from the clock and publish it if it changed.
    fn tick(&self);
}

/// The handle the engine keeps to its lease timer thread (if it runs one).
#[derive(Debug, Default)]
pub(crate) struct LeaseTimer(Worker);

/// How long the thread sleeps when no lease is running out (it is woken on every change).
const IDLE_WAIT: Duration = Duration::from_secs(3600);

impl LeaseTimer {
    /// Starts the thread for `target`. It holds only a weak reference while it sleeps, so
    /// dropping the last handle to the target still closes it.
    pub(crate) fn start<T: LeaseClock>(&self, target: &Arc<T>) {
        let weak = Arc::downgrade(target);
        let first = wait_for(target.lease_until(), Instant::now());
        self.0.start("tandem-lease", first, move |_| {
            let target = weak.upgrade()?;
            target.tick();
            Some(wait_for(target.lease_until(), Instant::now()))
        });
    }

    /// Tells the thread the lease changed, so it sleeps until the new deadline.
    pub(crate) fn lease_changed(&self) {
        self.0.wake();
    }

    /// Stops the thread (if any) and waits for it, unless called from the thread itself.
    pub(crate) fn stop(&self) {
        self.0.stop();
    }
}

/// How long to sleep before the lease ending at `until` (if any) has run out at `now`: until
/// one millisecond past the deadline, so the tick sees it expired.
fn wait_for(until: Option<Instant>, now: Instant) -> Duration {
    match until {
        Some(until) if until > now => until - now + Duration::from_millis(1),
        _ => IDLE_WAIT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::lock;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[test]
    fn sleeps_until_just_past_the_deadline() {
        let now = Instant::now();
        let later = now + Duration::from_millis(50);
        assert_eq!(wait_for(Some(later), now), Duration::from_millis(51));
        assert_eq!(wait_for(Some(now), now), IDLE_WAIT);
        assert_eq!(wait_for(None, now), IDLE_WAIT);
    }

    struct Clock {
        until: Mutex<Option<Instant>>,
        ticks: AtomicUsize,
        expired_ticks: AtomicUsize,
    }

    impl LeaseClock for Clock {
        fn lease_until(&self) -> Option<Instant> {
            *lock(&self.until)
        }
        fn tick(&self) {
            self.ticks.fetch_add(1, Ordering::SeqCst);
            if lock(&self.until).is_some_and(|u| Instant::now() >= u) {
                self.expired_ticks.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    #[test]
    fn ticks_once_the_lease_has_run_out() {
        let clock = Arc::new(Clock {
            until: Mutex::new(None),
            ticks: AtomicUsize::new(0),
            expired_ticks: AtomicUsize::new(0),
        });
        let timer = LeaseTimer::default();
        timer.start(&clock);
        *lock(&clock.until) = Some(Instant::now() + Duration::from_millis(30));
        timer.lease_changed();
        let deadline = Instant::now() + Duration::from_secs(5);
        while clock.expired_ticks.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        timer.stop();
        assert!(clock.expired_ticks.load(Ordering::SeqCst) >= 1);
    }
}
