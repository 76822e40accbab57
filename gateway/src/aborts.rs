//! Aborting the tasks of preempted hosts across protocols. A PERSISTENT RESERVE OUT PREEMPT
//! AND ABORT (SCSI) or a Reservation Acquire with Preempt and Abort (NVMe) removes other
//! registrants, who may reach the volume over either protocol; each front end registers
//! itself here as a sink that finds the victims' connections and has them abort their
//! commands on the volume. The preempting command completes only once they have (or after
//! [`ABORT_WAIT`]).

use std::sync::{Mutex, Weak};
use std::time::Duration;

use block_core::Registrant;
use tokio::sync::oneshot;

/// How long a preempting command waits for the victims' connections to confirm.
pub const ABORT_WAIT: Duration = Duration::from_secs(5);

/// A front end that can abort the commands of registrants on a volume.
pub trait AbortSink: Send + Sync {
    /// Asks every connection of one of `victims` that reaches volume `volume` to abort its
    /// commands on it; returns one receiver per connection asked, answered once it has.
    fn abort(&self, volume: &str, victims: &[Registrant]) -> Vec<oneshot::Receiver<()>>;
}

/// The sinks of one volume (one per front end serving it).
#[derive(Default)]
pub struct AbortSinks {
    sinks: Mutex<Vec<Weak<dyn AbortSink>>>,
}

impl std::fmt::Debug for AbortSinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AbortSinks")
    }
}

impl AbortSinks {
    /// Adds a front end (held weakly: a stopped front end drops out).
    pub fn add(&self, sink: Weak<dyn AbortSink>) {
        self.sinks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sink);
    }

    /// Aborts the commands of `victims` on volume `volume` over every front end, and waits
    /// (at most [`ABORT_WAIT`]) until each connection asked has done so.
    pub async fn abort(&self, volume: &str, victims: &[Registrant]) {
        if victims.is_empty() {
            return;
        }
        let sinks: Vec<_> = self
            .sinks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let waits: Vec<_> = sinks
            .iter()
            .flat_map(|s| s.abort(volume, victims))
            .collect();
        let n = waits.len();
        let all = futures_util::future::join_all(waits);
        if tokio::time::timeout(ABORT_WAIT, all).await.is_err() {
            tracing::warn!(
                volume,
                connections = n,
                "preempt and abort: not every connection confirmed in time"
            );
        }
    }
}
