//! The background flusher thread: decides when to checkpoint, not how.
//!
//! The checkpoint itself ([`Flush::flush_once`], implemented by the engine) makes everything
//! appended so far durable in the log, copies it into the extent and frees the log space. This
//! thread runs it at least every flush interval while the log holds records, as soon as it is
//! asked (a writer waiting for log space), and whenever the log is more than an eighth full. It
//! sees the engine only through the narrow [`Flush`] trait, so it does not depend on the
//! engine's internals, and the engine owns a [`Flusher`] to start, wake and stop it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::error::Result;

/// What the flusher thread needs from the volume it flushes.
pub(crate) trait Flush: Send + Sync + 'static {
    /// Runs one checkpoint. Returns whether there was anything to do.
    fn flush_once(&self) -> Result<bool>;
    /// Whether the log holds records not yet checkpointed.
    fn log_pending(&self) -> bool;
    /// Whether the log is full enough to be worth a checkpoint right away.
    fn log_pressure(&self) -> bool;
}

/// Requests to the thread.
#[derive(Debug, Default)]
struct Ctl {
    requested: bool,
    shutdown: bool,
}

/// State shared by the [`Flusher`] handle and its thread.
#[derive(Debug, Default)]
struct Shared {
    ctl: Mutex<Ctl>,
    cv: Condvar,
}

/// The handle the engine keeps to its flusher thread (if it runs one).
#[derive(Debug, Default)]
pub(crate) struct Flusher {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Locks a mutex, ignoring poisoning (each critical section here completes its updates).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Flusher {
    /// Starts the thread, flushing `target` at least every `interval` while the log holds
    /// records. It holds only a weak reference between runs, so dropping the last handle to
    /// the target still closes it.
    pub(crate) fn start<T: Flush>(&self, target: &Arc<T>, interval: Duration) {
        let weak = Arc::downgrade(target);
        let shared = Arc::clone(&self.shared);
        let handle = std::thread::Builder::new()
            .name("tandem-flusher".into())
            .spawn(move || run(weak, &shared, interval))
            .ok();
        *lock(&self.thread) = handle;
    }

    /// Asks the thread to run now.
    pub(crate) fn request(&self) {
        lock(&self.shared.ctl).requested = true;
        self.shared.cv.notify_all();
    }

    /// Stops the thread (if any) and waits for it, unless called from the thread itself.
    pub(crate) fn stop(&self) {
        lock(&self.shared.ctl).shutdown = true;
        self.shared.cv.notify_all();
        let handle = lock(&self.thread).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

fn run<T: Flush>(weak: Weak<T>, shared: &Shared, interval: Duration) {
    let mut last_run = Instant::now();
    loop {
        let Some(target) = weak.upgrade() else {
            return;
        };
        let mut ctl = lock(&shared.ctl);
        if !ctl.requested && !ctl.shutdown {
            ctl = shared
                .cv
                .wait_timeout(ctl, interval)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if ctl.shutdown {
            return;
        }
        let requested = std::mem::take(&mut ctl.requested);
        drop(ctl);
        let due = last_run.elapsed() >= interval && target.log_pending();
        if requested || due || target.log_pressure() {
            last_run = Instant::now();
            if let Err(e) = target.flush_once() {
                tracing::error!(error = %e, "flusher stopped");
                return;
            }
        }
    }
}
