//! Dropping a silent standby from the cluster's in-sync set before a flush is acknowledged
//! without it.
//!
//! Without a cluster store the primary's durable local record (volume metadata
//! [`super::state::PEER_METADATA`]) is the whole story: it says from which LSN the standby
//! missed acknowledged writes. With etcd configured the in-sync set in etcd decides which
//! standby may be promoted automatically, so the primary must also remove the standby there,
//! in a transaction guarded by its own leadership, before the first flush goes on without it.
//! If etcd cannot be reached the standby cannot be dropped, so nothing is acknowledged without
//! it: the flushes wait, and once the primary's lease ran out (it fenced itself) they fail with
//! the retryable transitioning state.
//!
//! [`Degrade`] is the order of those steps as a sans-IO sequence (the driver in
//! [`super::primary`] does the I/O); [`InSyncSlot`] is where the etcd agent installs its
//! store, reachable from the volume's replication task.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A future as the store returns it.
pub type StoreFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// The cluster's record of which nodes hold every acknowledged write of a volume.
pub trait InSyncStore: Send + Sync {
    /// Leaves only this node in `volume`'s in-sync set, guarded by this node's leadership.
    /// `Ok` once the store confirmed it; an error when it could not be reached or this node
    /// does not lead the volume there.
    fn drop_standby<'a>(&'a self, volume: &'a str) -> StoreFuture<'a>;
}

/// Where a volume's replication task finds the cluster store.
#[derive(Default)]
pub struct InSyncSlot {
    /// A cluster store is configured: flushes go on without the standby only once it
    /// confirmed the drop (installed or not yet).
    configured: bool,
    store: OnceLock<Arc<dyn InSyncStore>>,
}

impl InSyncSlot {
    /// A slot for a node with (`configured`) or without a cluster store.
    pub fn new(configured: bool) -> InSyncSlot {
        InSyncSlot {
            configured,
            store: OnceLock::new(),
        }
    }

    /// Installs the store (once; later calls change nothing).
    pub fn install(&self, store: Arc<dyn InSyncStore>) {
        let _ = self.store.set(store);
    }

    /// Whether a drop must be confirmed by the store.
    pub fn configured(&self) -> bool {
        self.configured
    }

    /// The store, once installed.
    pub fn store(&self) -> Option<Arc<dyn InSyncStore>> {
        self.store.get().cloned()
    }
}

impl std::fmt::Debug for InSyncSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InSyncSlot")
            .field("configured", &self.configured)
            .field("installed", &self.store.get().is_some())
            .finish()
    }
}

/// How long one attempt to drop the standby may take.
pub const DROP_ATTEMPT: Duration = Duration::from_millis(1000);
/// How long after a failed attempt the next one starts.
pub const DROP_RETRY: Duration = Duration::from_millis(200);

/// What the driver does next while a standby is being declared out of sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Write the local out-of-sync record (from `since_lsn`).
    SaveRecord {
        /// The standby's last acknowledged durable LSN.
        since_lsn: u64,
    },
    /// Remove the standby from the cluster's in-sync set.
    DropFromSet,
    /// Try the removal again at this time; the waiting flushes go on waiting, or fail with the
    /// retryable state when `refuse` (the primary's lease ran out).
    RetryAt {
        /// When to try again.
        at: Instant,
        /// Waiting flushes must fail (retryable): this node no longer serves.
        refuse: bool,
    },
    /// Both are done: waiting flushes may go on without the standby.
    Release,
}

/// The order of the steps that let flushes go on without the standby: the local record,
/// then (with a cluster store) the store's confirmation, then the release. Sans-IO: the
/// driver reports each outcome and the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degrade {
    since_lsn: u64,
    external: bool,
    saved: bool,
    dropped: bool,
    retry_at: Option<Instant>,
    refuse: bool,
}

impl Degrade {
    /// The standby timed out with `since_lsn` durable; `external`: a cluster store is
    /// configured.
    pub fn new(since_lsn: u64, external: bool) -> Degrade {
        Degrade {
            since_lsn,
            external,
            saved: false,
            dropped: false,
            retry_at: None,
            refuse: false,
        }
    }

    /// The next step.
    pub fn step(&self) -> Step {
        if !self.saved {
            return Step::SaveRecord {
                since_lsn: self.since_lsn,
            };
        }
        if self.external && !self.dropped {
            return match self.retry_at {
                Some(at) => Step::RetryAt {
                    at,
                    refuse: self.refuse,
                },
                None => Step::DropFromSet,
            };
        }
        Step::Release
    }

    /// The local record is durable.
    pub fn saved(&mut self) {
        self.saved = true;
    }

    /// The store confirmed the drop.
    pub fn dropped(&mut self) {
        self.dropped = true;
        self.retry_at = None;
    }

    /// The drop failed at `now`; `serving`: this node's lease still lets it serve.
    pub fn drop_failed(&mut self, now: Instant, serving: bool) {
        self.retry_at = Some(now + DROP_RETRY);
        self.refuse = !serving;
    }

    /// The retry time came: try again.
    pub fn retry_due(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
        }
    }

    /// When the driver must wake for a retry.
    pub fn wake_at(&self) -> Option<Instant> {
        self.retry_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_store_the_local_record_comes_before_the_release() {
        let mut d = Degrade::new(41, false);
        assert_eq!(d.step(), Step::SaveRecord { since_lsn: 41 });
        d.saved();
        assert_eq!(d.step(), Step::Release);
    }

    #[test]
    fn with_a_store_nothing_is_released_before_it_confirmed_the_drop() {
        let t0 = Instant::now();
        let mut d = Degrade::new(7, true);
        assert_eq!(d.step(), Step::SaveRecord { since_lsn: 7 });
        // A confirmation before the local record changes nothing about the order.
        d.saved();
        assert_eq!(d.step(), Step::DropFromSet);
        // etcd unreachable: retry, flushes wait while the lease lasts.
        d.drop_failed(t0, true);
        assert_eq!(
            d.step(),
            Step::RetryAt {
                at: t0 + DROP_RETRY,
                refuse: false
            }
        );
        assert_eq!(d.wake_at(), Some(t0 + DROP_RETRY));
        d.retry_due(t0);
        assert!(matches!(d.step(), Step::RetryAt { .. }), "not due yet");
        d.retry_due(t0 + DROP_RETRY);
        assert_eq!(d.step(), Step::DropFromSet);
        // The lease ran out meanwhile: still never released, the waiting flushes are refused.
        d.drop_failed(t0 + DROP_RETRY, false);
        assert_eq!(
            d.step(),
            Step::RetryAt {
                at: t0 + DROP_RETRY * 2,
                refuse: true
            }
        );
        d.retry_due(t0 + DROP_RETRY * 2);
        assert_eq!(d.step(), Step::DropFromSet);
        d.dropped();
        assert_eq!(d.step(), Step::Release);
        assert_eq!(d.wake_at(), None);
    }
}
