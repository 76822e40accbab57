//! What every guest test file shares: the time limits, running one QEMU guest at a time, and
//! failing a test on the guest script's exit status.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::qemu::GuestOutcome;

/// Time limit of one guest run, boot included (a run takes 10 to 40 s on an idle machine).
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(240);

/// How long the host waits for a step of a guest in a rendezvous.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(120);

static GUEST_LOCK: Mutex<()> = Mutex::new(());

/// Serialises the guest tests of one test binary: one QEMU guest at a time. On a 2-core machine
/// two TCG guests at once finish a file only a fifth sooner while every test runs 1.5 to 2 times
/// slower, which eats into the margins of timing-sensitive steps (NOP-Out liveness, reconnects,
/// keep-alive).
pub fn one_guest_at_a_time() -> MutexGuard<'static, ()> {
    GUEST_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fails the test unless the guest script exited with status 0 (its console is in the log).
pub fn assert_guest(out: &GuestOutcome, what: &str) {
    println!("{what}: guest run took {:?}", out.elapsed);
    out.assert_success();
}

/// Makes a guest waiting in `rv_wait` give up when the host side of its test panics, so the
/// scope joining the guest's thread does not wait for the guest's own time limit.
pub struct AbortOnPanic<'a>(pub &'a crate::rendezvous::Rendezvous);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abort();
        }
    }
}

/// Waits until the guest sent `msg`; panics when the guest ended first or [`STEP_TIMEOUT`]
/// passed.
pub fn await_guest(
    rv: &crate::rendezvous::Rendezvous,
    guest: &std::thread::ScopedJoinHandle<'_, GuestOutcome>,
    msg: &str,
) {
    let deadline = std::time::Instant::now() + STEP_TIMEOUT;
    while !rv.wait_for(msg, Duration::from_millis(200)) {
        assert!(!guest.is_finished(), "the guest ended before saying {msg}");
        assert!(
            std::time::Instant::now() < deadline,
            "the guest never said {msg}"
        );
    }
}
