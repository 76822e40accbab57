//! The primary's [`ReplicaGate`]: the engine's flushes and FUA writes, on the volume's blocking
//! I/O threads, ask here for the standby (before their local log sync, so the barrier runs in
//! parallel with it) and then wait until the replication task reports the standby durable (or
//! durably out of sync). One wait per flush, one network barrier for all of them (the peer
//! state machine groups them); an LSN already asked for is not announced again.
//!
//! Plain writes wait here too, for a second position: the standby received (appended) their
//! records, which its Ack reports after every batch it applied, one network round trip and no
//! sync. The blocking I/O threads wait on the condvar, the volume's async write path on a
//! `Notify` (no thread held for the round trip, none spawned per write).

use std::sync::{Condvar, Mutex};

use blockstore::replica::{ReceivedWait, ReplicaGate};
use blockstore::{AccessState, Error, Result};
use tokio::sync::mpsc::UnboundedSender;

/// What the replication task is told a write or flush waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A flush (or FUA write) waits for the standby durable through this LSN.
    Durable(u64),
    /// A plain write waits for the standby to have received the records through this LSN.
    Received(u64),
}

#[derive(Debug, Default)]
struct State {
    /// Flushes of records through this LSN may complete.
    released: u64,
    /// The replication task was told that flushes wait for this LSN.
    requested: u64,
    /// Plain writes of records through this LSN may complete (never below `released`).
    received: u64,
    /// The replication task was told that plain writes wait for this LSN.
    received_requested: u64,
    /// A newer epoch fenced this node: nothing completes any more.
    fenced: Option<u64>,
    /// The replication task is gone (shutdown) or could not record a standby's loss.
    failed: Option<String>,
    /// The volume stopped being primary here (a demotion): a flush still waiting fails with
    /// the retryable transitioning state, so hosts retry on the new primary.
    stood_down: bool,
    /// The standby is being dropped from the cluster's in-sync set and this node's lease ran
    /// out before that was confirmed: flushes fail with the retryable transitioning state
    /// (nothing is acknowledged without the standby) until the drop is confirmed.
    lapsed: bool,
}

/// Where flushes wait for the standby.
#[derive(Debug)]
pub struct Gate {
    st: Mutex<State>,
    cv: Condvar,
    /// Wakes the async waits of plain writes (with the condvar, on every change).
    notify: tokio::sync::Notify,
    /// Tells the replication task that a flush or a plain write waits for an LSN.
    need: UnboundedSender<Need>,
}

impl Gate {
    /// A gate whose waits are announced on `need`.
    pub fn new(need: UnboundedSender<Need>) -> Gate {
        Gate {
            st: Mutex::new(State::default()),
            cv: Condvar::new(),
            notify: tokio::sync::Notify::new(),
            need,
        }
    }

    /// Wakes every waiter (blocking and async) to look at the state again.
    fn wake(&self) {
        self.cv.notify_all();
        self.notify.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Flushes (and plain writes) through `lsn` may complete.
    pub fn release(&self, lsn: u64) {
        let mut st = self.lock();
        if lsn > st.released {
            st.released = lsn;
            st.received = st.received.max(lsn);
            self.wake();
        }
    }

    /// Plain writes through `lsn` may complete: the standby received their records (or was
    /// durably declared out of sync).
    pub fn release_received(&self, lsn: u64) {
        let mut st = self.lock();
        if lsn > st.received {
            st.received = lsn;
            self.wake();
        }
    }

    /// A newer epoch fenced this node: every waiting and later flush fails (retryable for the
    /// hosts: the path is unavailable).
    pub fn fence(&self, epoch: u64) {
        self.lock().fenced = Some(epoch);
        self.wake();
    }

    /// The volume is no longer primary on this node: waiting and later flushes fail with a
    /// retryable state (never an error that reaches a filesystem).
    pub fn stand_down(&self) {
        self.lock().stood_down = true;
        self.wake();
    }

    /// While `on`, waiting and later flushes fail with the retryable transitioning state: the
    /// standby could not be dropped from the cluster's in-sync set before this node's lease
    /// ran out, so nothing may be acknowledged without it.
    pub fn set_lapsed(&self, on: bool) {
        let mut st = self.lock();
        if st.lapsed != on {
            st.lapsed = on;
            self.wake();
        }
    }

    /// The replication task stopped: waiting and later flushes fail with `why`.
    pub fn fail(&self, why: String) {
        let mut st = self.lock();
        if st.failed.is_none() {
            st.failed = Some(why);
        }
        self.wake();
    }

    fn refused(st: &State) -> Option<Error> {
        if st.stood_down || st.lapsed {
            return Some(Error::NotServing(AccessState::Transitioning));
        }
        if st.fenced.is_some() {
            return Some(Error::NotServing(AccessState::Unavailable));
        }
        st.failed
            .as_ref()
            .map(|w| Error::Io(std::io::Error::other(format!("replication: {w}"))))
    }

    /// Tells the replication task that a flush waits for `lsn`, unless that is released or
    /// announced already.
    fn announce(&self, st: &mut State, lsn: u64) -> Result<()> {
        if st.released >= lsn || st.requested >= lsn {
            return Ok(());
        }
        if self.need.send(Need::Durable(lsn)).is_err() {
            return Err(Error::Closed);
        }
        st.requested = lsn;
        Ok(())
    }

    /// Where a plain write waiting for `lsn` stands: `Some` once it may complete (or must
    /// fail), `None` while it waits (announced to the replication task).
    fn received_check(&self, lsn: u64) -> Option<Result<()>> {
        let mut st = self.lock();
        if let Some(e) = Self::refused(&st) {
            return Some(Err(e));
        }
        if st.received >= lsn {
            return Some(Ok(()));
        }
        if st.received_requested < lsn {
            if self.need.send(Need::Received(lsn)).is_err() {
                return Some(Err(Error::Closed));
            }
            st.received_requested = lsn;
        }
        None
    }
}

impl ReplicaGate for Gate {
    fn request(&self, lsn: u64) -> Result<()> {
        let mut st = self.lock();
        if let Some(e) = Self::refused(&st) {
            return Err(e);
        }
        self.announce(&mut st, lsn)
    }

    fn wait_durable(&self, lsn: u64) -> Result<()> {
        let mut st = self.lock();
        if let Some(e) = Self::refused(&st) {
            return Err(e);
        }
        if st.released >= lsn {
            return Ok(());
        }
        self.announce(&mut st, lsn)?;
        loop {
            if let Some(e) = Self::refused(&st) {
                return Err(e);
            }
            if st.released >= lsn {
                return Ok(());
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn wait_received(&self, lsn: u64) -> Result<()> {
        if let Some(r) = self.received_check(lsn) {
            return r;
        }
        let mut st = self.lock();
        loop {
            if let Some(e) = Self::refused(&st) {
                return Err(e);
            }
            if st.received >= lsn {
                return Ok(());
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn received_async(&self, lsn: u64) -> ReceivedWait<'_> {
        Box::pin(async move {
            loop {
                // Registered before the look, so a release between the two is not missed.
                let notified = self.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(r) = self.received_check(lsn) {
                    return r;
                }
                notified.await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_flush_waits_for_its_release_and_fails_once_fenced() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let g = Arc::new(Gate::new(tx));
        let g2 = g.clone();
        let t = std::thread::spawn(move || g2.wait_durable(7));
        assert_eq!(
            rx.blocking_recv(),
            Some(Need::Durable(7)),
            "the wait is announced"
        );
        g.release(6);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!t.is_finished(), "6 does not cover 7");
        g.release(7);
        t.join().unwrap().unwrap();
        assert!(g.wait_durable(7).is_ok(), "already released");
        let g3 = g.clone();
        let t = std::thread::spawn(move || g3.wait_durable(9));
        assert_eq!(rx.blocking_recv(), Some(Need::Durable(9)));
        g.fence(4);
        assert!(matches!(
            t.join().unwrap(),
            Err(Error::NotServing(AccessState::Unavailable))
        ));
    }

    #[test]
    fn a_request_is_announced_once_and_the_wait_does_not_repeat_it() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let g = Arc::new(Gate::new(tx));
        g.request(5).unwrap();
        g.request(4).unwrap();
        g.request(5).unwrap();
        assert_eq!(rx.try_recv(), Ok(Need::Durable(5)));
        assert!(rx.try_recv().is_err(), "4 and 5 again are covered by 5");
        let g2 = g.clone();
        let t = std::thread::spawn(move || g2.wait_durable(5));
        g.release(5);
        t.join().unwrap().unwrap();
        assert!(rx.try_recv().is_err(), "the wait relies on the request");
        g.request(3).unwrap();
        assert!(rx.try_recv().is_err(), "released already");
        g.fail("gone".into());
        assert!(g.request(9).is_err(), "a failed gate refuses requests");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_lapsed_gate_refuses_retryably_until_the_drop_is_confirmed() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let g = Arc::new(Gate::new(tx));
        let g2 = g.clone();
        let t = std::thread::spawn(move || g2.wait_durable(3));
        assert_eq!(rx.blocking_recv(), Some(Need::Durable(3)));
        g.set_lapsed(true);
        assert!(matches!(
            t.join().unwrap(),
            Err(Error::NotServing(AccessState::Transitioning))
        ));
        assert!(matches!(
            g.request(4),
            Err(Error::NotServing(AccessState::Transitioning))
        ));
        g.set_lapsed(false);
        let g3 = g.clone();
        let t = std::thread::spawn(move || g3.wait_durable(4));
        assert_eq!(rx.blocking_recv(), Some(Need::Durable(4)));
        g.release(4);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn a_plain_write_waits_for_the_standby_to_receive_it_and_not_for_durability() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let g = Arc::new(Gate::new(tx));
        let g2 = g.clone();
        let t = std::thread::spawn(move || g2.wait_received(7));
        assert_eq!(rx.blocking_recv(), Some(Need::Received(7)), "announced");
        g.release_received(6);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!t.is_finished(), "6 does not cover 7");
        g.release_received(7);
        t.join().unwrap().unwrap();
        // Received is not durable: a flush through 7 still waits.
        let g3 = g.clone();
        let t = std::thread::spawn(move || g3.wait_durable(7));
        assert_eq!(rx.blocking_recv(), Some(Need::Durable(7)));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!t.is_finished(), "received 7 does not release a flush");
        // Durable (also what a degrade releases) covers received.
        g.release(9);
        t.join().unwrap().unwrap();
        assert!(g.wait_received(9).is_ok());
        assert!(
            rx.try_recv().is_err(),
            "released already: nothing announced"
        );
    }

    #[test]
    fn a_plain_write_waiting_async_fails_retryably_when_fenced_stood_down_or_lapsed() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let g = Arc::new(Gate::new(tx));
        rt.block_on(async {
            let g2 = g.clone();
            let w = tokio::spawn(async move { g2.received_async(3).await });
            assert_eq!(rx.recv().await, Some(Need::Received(3)));
            g.release_received(3);
            w.await.unwrap().unwrap();
            let g2 = g.clone();
            let w = tokio::spawn(async move { g2.received_async(4).await });
            assert_eq!(rx.recv().await, Some(Need::Received(4)));
            g.set_lapsed(true);
            assert!(matches!(
                w.await.unwrap(),
                Err(Error::NotServing(AccessState::Transitioning))
            ));
            g.set_lapsed(false);
            let g2 = g.clone();
            let w = tokio::spawn(async move { g2.received_async(4).await });
            tokio::task::yield_now().await;
            g.fence(5);
            assert!(matches!(
                w.await.unwrap(),
                Err(Error::NotServing(AccessState::Unavailable))
            ));
        });
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let g = Arc::new(Gate::new(tx));
        let g2 = g.clone();
        let t = std::thread::spawn(move || g2.wait_received(2));
        std::thread::sleep(std::time::Duration::from_millis(20));
        g.stand_down();
        assert!(matches!(
            t.join().unwrap(),
            Err(Error::NotServing(AccessState::Transitioning))
        ));
    }
}
