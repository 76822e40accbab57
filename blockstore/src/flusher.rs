//! The background flusher thread: decides when to checkpoint, not how.
//!
//! The checkpoint itself ([`Flush::flush_once`], implemented by the engine) makes everything
//! appended so far durable in the log, copies it into the extent and frees the log space. This
//! thread runs it at least every flush interval while the log holds records, as soon as it is
//! asked (a writer waiting for log space), and whenever the log is full enough
//! ([`Flush::log_pressure`]: more than an eighth). A volume whose log is only read back at a
//! promotion or a restart (a standby: [`Flush::lazy`]) is checkpointed only when it is asked
//! or under log-space pressure (half the log): its log is durable already, so copying it into
//! the extent early only adds copies and `fdatasync`s that compete with the log's own. It
//! sees the engine only through the narrow [`Flush`] trait, so it does not depend on the
//! engine's internals, and the engine owns a [`Flusher`] to start, wake and stop it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::worker::Worker;

/// What the flusher thread needs from the volume it flushes.
pub(crate) trait Flush: Send + Sync + 'static {
    /// Runs one checkpoint. Returns whether there was anything to do.
    fn flush_once(&self) -> Result<bool>;
    /// Whether the log holds records not yet checkpointed.
    fn log_pending(&self) -> bool;
    /// Whether the log is full enough to be worth a checkpoint right away.
    fn log_pressure(&self) -> bool;
    /// Whether checkpoints wait for log-space pressure (or a request) instead of running every
    /// interval: the log is not read in normal operation (a standby's), so every checkpoint
    /// saved is a copy and an extent `fdatasync` saved.
    fn lazy(&self) -> bool;
    /// Where the volume lives, to name it in the log line of a failure.
    fn location(&self) -> std::path::PathBuf;
}

/// The handle the engine keeps to its flusher thread (if it runs one).
#[derive(Debug, Default)]
pub(crate) struct Flusher(Worker);

impl Flusher {
    /// Starts the thread, flushing `target` at least every `interval` while the log holds
    /// records. It holds only a weak reference between rounds, so dropping the last handle to
    /// the target still closes it.
    pub(crate) fn start<T: Flush>(&self, target: &Arc<T>, interval: Duration) {
        let weak = Arc::downgrade(target);
        let mut last_run = Instant::now();
        self.0.start("tandem-flusher", interval, move |requested| {
            let target = weak.upgrade()?;
            let due = last_run.elapsed() >= interval && !target.lazy() && target.log_pending();
            if requested || due || target.log_pressure() {
                last_run = Instant::now();
                match target.flush_once() {
                    Ok(_) => {}
                    // Retried every interval until the file system has room again.
                    Err(crate::error::Error::NoSpace) => {}
                    Err(e) => {
                        tracing::error!(
                            volume = %target.location().display(),
                            error = %e,
                            "flusher stopped"
                        );
                        return None;
                    }
                }
            }
            Some(interval)
        });
    }

    /// Asks the thread to run now.
    pub(crate) fn request(&self) {
        self.0.wake();
    }

    /// Stops the thread (if any) and waits for it, unless called from the thread itself.
    pub(crate) fn stop(&self) {
        self.0.stop();
    }
}
