//! A background thread of a volume that sleeps until it is woken or a timeout passes, runs one
//! round, and stops on request: the one mechanism under the flusher and the lease timer.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Requests to the thread.
#[derive(Debug, Default)]
struct Ctl {
    woken: bool,
    shutdown: bool,
}

/// State shared by the [`Worker`] handle and its thread.
#[derive(Debug, Default)]
struct Shared {
    ctl: Mutex<Ctl>,
    cv: Condvar,
}

/// The handle to one background thread (if it runs).
#[derive(Debug, Default)]
pub(crate) struct Worker {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Locks a mutex, ignoring poisoning (each critical section here completes its updates).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Worker {
    /// Starts thread `name`. It waits `first_wait` (or until woken), then calls `round` with
    /// whether it was woken; `round` returns how long to wait before the next round, or `None`
    /// to end the thread.
    pub(crate) fn start(
        &self,
        name: &str,
        first_wait: Duration,
        mut round: impl FnMut(bool) -> Option<Duration> + Send + 'static,
    ) {
        let shared = Arc::clone(&self.shared);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut wait = first_wait;
                loop {
                    let woken = {
                        let mut ctl = lock(&shared.ctl);
                        if !ctl.woken && !ctl.shutdown {
                            ctl = shared
                                .cv
                                .wait_timeout(ctl, wait)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                        if ctl.shutdown {
                            return;
                        }
                        std::mem::take(&mut ctl.woken)
                    };
                    match round(woken) {
                        Some(next) => wait = next,
                        None => return,
                    }
                }
            })
            .ok();
        *lock(&self.thread) = handle;
    }

    /// Wakes the thread for a round now.
    pub(crate) fn wake(&self) {
        lock(&self.shared.ctl).woken = true;
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
