//! The live iSCSI connections of this node, as far as other connections need them: the I_T
//! nexus each session is (for session reinstatement), the reservation identity it acts as
//! and the volumes it reaches (for PREEMPT AND ABORT from any protocol), and a channel to its
//! task.
//!
//! Reinstatement (RFC 7143 6.3.5): a login with the ISID, initiator name and target of a
//! live session asks [`Question::Reinstate`](proto_iscsi::session::Question); the new
//! connection registers as a waiter of the old session and tells it to close; the old one
//! aborts its tasks, closes its connection and, once gone ([`Live::finish`]), wakes its
//! waiters, whose logins then go on. Waiting and removal happen under one lock, so a waiter
//! can never miss the old session's end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use block_core::Registrant;
use tokio::sync::{mpsc, oneshot};

/// A message to one iSCSI connection task from elsewhere in the node.
#[derive(Debug)]
pub(super) enum Control {
    /// A new login of this session's I_T nexus: abort every task and close.
    Reinstate,
    /// A session this connection's login waited for is gone.
    Reinstated,
    /// Abort the tasks on these LUNs (a preempt-and-abort removed this session's
    /// registration), then confirm.
    Abort {
        /// The LUNs of the session's target that export the volume.
        luns: Vec<u16>,
        /// Answered once the tasks are aborted.
        done: oneshot::Sender<()>,
    },
}

/// An I_T nexus as reinstatement compares it: ISID, initiator name and target name (names
/// compared without regard to case, as iSCSI names are).
pub(super) type NexusKey = ([u8; 6], String, String);

/// The key of a session.
pub(super) fn nexus_key(isid: [u8; 6], initiator: &str, target: &str) -> NexusKey {
    (
        isid,
        initiator.to_ascii_lowercase(),
        target.to_ascii_lowercase(),
    )
}

/// One live connection.
#[derive(Debug)]
struct Entry {
    tx: mpsc::UnboundedSender<Control>,
    /// Set once the session is in full feature phase.
    session: Option<Session>,
    /// Connections whose logins wait for this session to end.
    waiters: Vec<mpsc::UnboundedSender<Control>>,
}

/// What a logged-in normal session is.
#[derive(Debug, Clone)]
pub(super) struct Session {
    pub(super) key: NexusKey,
    /// Its reservation identity.
    pub(super) registrant: Registrant,
    /// The target it logged in to.
    pub(super) target: String,
}

/// The live connections.
#[derive(Debug, Default)]
pub struct Live {
    conns: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
}

impl Live {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new connection; returns its id.
    pub(super) fn register(&self, tx: mpsc::UnboundedSender<Control>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            id,
            Entry {
                tx,
                session: None,
                waiters: Vec::new(),
            },
        );
        id
    }

    /// Records that connection `id` is now a logged-in session.
    pub(super) fn logged_in(&self, id: u64, session: Session) {
        if let Some(e) = self.lock().get_mut(&id) {
            e.session = Some(session);
        }
    }

    /// Asks every other live session of nexus `key` to close, registering connection `id`
    /// as waiting for each; returns how many it waits for.
    pub(super) fn reinstate(&self, id: u64, key: &NexusKey) -> usize {
        let mut conns = self.lock();
        let Some(me) = conns.get(&id).map(|e| e.tx.clone()) else {
            return 0;
        };
        let mut n = 0;
        for (other, e) in conns.iter_mut() {
            if *other == id || e.session.as_ref().is_none_or(|s| &s.key != key) {
                continue;
            }
            if e.tx.send(Control::Reinstate).is_ok() {
                e.waiters.push(me.clone());
                n += 1;
            }
        }
        n
    }

    /// Forgets connection `id` and wakes the logins waiting for it to end.
    pub(super) fn finish(&self, id: u64) {
        let entry = self.lock().remove(&id);
        for w in entry.into_iter().flat_map(|e| e.waiters) {
            let _ = w.send(Control::Reinstated);
        }
    }

    /// Asks the sessions acting as one of `victims` to abort their tasks on the LUNs that
    /// `luns_of(target)` names; returns one receiver per session asked.
    pub(super) fn abort(
        &self,
        victims: &[Registrant],
        luns_of: impl Fn(&str) -> Vec<u16>,
    ) -> Vec<oneshot::Receiver<()>> {
        let conns = self.lock();
        let mut waits = Vec::new();
        for e in conns.values() {
            let Some(s) = &e.session else { continue };
            if !victims.contains(&s.registrant) {
                continue;
            }
            let luns = luns_of(&s.target);
            if luns.is_empty() {
                continue;
            }
            let (done, rx) = oneshot::channel();
            if e.tx.send(Control::Abort { luns, done }).is_ok() {
                waits.push(rx);
            }
        }
        waits
    }
}
