//! The questions a connection asks its driver (who may log in, with which credentials, which
//! TSIH, which targets discovery reports), the answers, and the bridge that lets the pure login
//! state machine consume those answers.
//!
//! The connection never calls back into its environment. When processing a PDU needs a fact it
//! does not have, it puts the PDU aside, emits [`super::Event::Question`] and processes nothing
//! more until [`super::Connection::answer`] supplies the fact; then the PDU is processed again
//! from the start (login steps are replayed on a snapshot, so a step that stopped for a
//! question leaves no trace).

use std::cell::RefCell;

use sha2::{Digest as _, Sha256};

use crate::login::{DiscoveredTarget, LoginContext, Refusal, TargetAuth};
use crate::pdu::Pdu;

/// A fact the connection needs from its driver before it can go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    /// The first Login Request names an existing session (non-zero TSIH): does the session
    /// exist? Answer with [`Answer::SessionExists`]. (Only the status of the refusal depends on
    /// it: sessions have one connection.)
    SessionExists {
        /// The initiator's ISID.
        isid: [u8; 6],
        /// The TSIH it named.
        tsih: u16,
    },
    /// May `initiator` log in to `target` (a discovery session when `None`), and how must it
    /// authenticate (CHAP credentials)? Answer with [`Answer::Admit`].
    Admit {
        /// InitiatorName.
        initiator: String,
        /// TargetName of a normal session.
        target: Option<String>,
    },
    /// A new normal session (TSIH 0) is about to enter full feature phase. A live session of
    /// the same I_T nexus (same ISID, initiator and target) must be closed first: its
    /// connection dropped and its tasks aborted (RFC 7143 6.3.5, session reinstatement).
    /// Answer with [`Answer::Reinstated`] once no such session is left; the login waits.
    Reinstate {
        /// The initiator's ISID.
        isid: [u8; 6],
        /// InitiatorName.
        initiator: String,
        /// TargetName.
        target: String,
    },
    /// The login is complete: the new session needs a TSIH (non-zero, unique among live
    /// sessions). Answer with [`Answer::Tsih`].
    AllocateTsih,
    /// A SendTargets text request: which targets (with their portals) may be reported to this
    /// initiator (only those it may log in to)? Answer with [`Answer::SendTargets`].
    SendTargets {
        /// The discovery session's InitiatorName.
        initiator: String,
    },
}

/// The driver's answer to a [`Question`], given with [`super::Connection::answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Whether the named session exists.
    SessionExists(bool),
    /// The authentication the login requires, or why it is refused.
    Admit(Result<TargetAuth, Refusal>),
    /// The new session's TSIH; `None` when the target is out of sessions (status 0x0302).
    Tsih(Option<u16>),
    /// The targets SendTargets may report.
    SendTargets(Vec<DiscoveredTarget>),
    /// No older session of the I_T nexus is left (see [`Question::Reinstate`]).
    Reinstated,
}

/// Answers collected for the PDU being processed (cleared once it is done).
#[derive(Debug, Default)]
pub(super) struct Answers {
    session_exists: Option<bool>,
    admit: Option<Result<TargetAuth, Refusal>>,
    tsih: Option<Option<u16>>,
    pub(super) reinstated: bool,
    pub(super) send_targets: Option<Vec<DiscoveredTarget>>,
}

impl Answers {
    pub(super) fn record(&mut self, a: Answer) {
        match a {
            Answer::SessionExists(b) => self.session_exists = Some(b),
            Answer::Admit(r) => self.admit = Some(r),
            Answer::Tsih(t) => self.tsih = Some(t),
            Answer::SendTargets(v) => self.send_targets = Some(v),
            Answer::Reinstated => self.reinstated = true,
        }
    }
}

/// A PDU put aside until its question is answered.
#[derive(Debug)]
pub(super) struct Blocked {
    pub(super) pdu: Pdu,
}

/// Unpredictable bytes for CHAP identifiers and challenges: SHA-256 in counter mode over a
/// 256-bit seed the driver supplies when it creates the connection (the core has no
/// randomness of its own).
#[derive(Debug, Clone)]
pub(super) struct Entropy {
    seed: [u8; 32],
    counter: u64,
}

impl Entropy {
    pub(super) fn new(seed: [u8; 32]) -> Self {
        Entropy { seed, counter: 0 }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(32) {
            let block = Sha256::new()
                .chain_update(self.seed)
                .chain_update(self.counter.to_le_bytes())
                .finalize();
            self.counter = self.counter.wrapping_add(1);
            let n = chunk.len();
            chunk.copy_from_slice(block.get(..n).unwrap_or_default());
        }
    }
}

/// The login state machine's [`LoginContext`] over the answers known so far. A fact not known
/// yet is recorded as the question to ask, and a neutral value is returned (the step it feeds
/// is thrown away).
pub(super) struct Oracle<'a> {
    answers: &'a Answers,
    entropy: &'a mut Entropy,
    missing: RefCell<Option<Question>>,
}

impl<'a> Oracle<'a> {
    pub(super) fn new(answers: &'a Answers, entropy: &'a mut Entropy) -> Self {
        Oracle {
            answers,
            entropy,
            missing: RefCell::new(None),
        }
    }

    /// The first question the step could not answer, if any.
    pub(super) fn missing(self) -> Option<Question> {
        self.missing.into_inner()
    }

    fn ask(&self, q: Question) {
        let mut m = self.missing.borrow_mut();
        if m.is_none() {
            *m = Some(q);
        }
    }
}

impl LoginContext for Oracle<'_> {
    fn target_auth(&self, target_name: &str) -> Option<TargetAuth> {
        self.admit("", Some(target_name)).ok()
    }

    fn admit(&self, initiator: &str, target: Option<&str>) -> Result<TargetAuth, Refusal> {
        match &self.answers.admit {
            Some(r) => r.clone(),
            None => {
                self.ask(Question::Admit {
                    initiator: initiator.to_string(),
                    target: target.map(str::to_string),
                });
                Err(Refusal::NotFound)
            }
        }
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        self.entropy.fill(buf);
    }

    fn allocate_tsih(&mut self) -> Option<u16> {
        match self.answers.tsih {
            Some(t) => t,
            None => {
                self.ask(Question::AllocateTsih);
                None
            }
        }
    }

    fn session_exists(&self, isid: [u8; 6], tsih: u16) -> bool {
        match self.answers.session_exists {
            Some(b) => b,
            None => {
                self.ask(Question::SessionExists { isid, tsih });
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_fills_any_length_and_never_repeats_a_block() {
        let mut e = Entropy::new([1; 32]);
        let mut a = [0u8; 45];
        let mut b = [0u8; 45];
        e.fill(&mut a);
        e.fill(&mut b);
        assert_ne!(a, b);
        assert_ne!(a.get(..32), a.get(13..45));
    }

    #[test]
    fn an_unknown_fact_becomes_the_first_question() {
        let answers = Answers::default();
        let mut entropy = Entropy::new([0; 32]);
        let mut o = Oracle::new(&answers, &mut entropy);
        assert!(!o.session_exists([1; 6], 9));
        assert_eq!(o.allocate_tsih(), None);
        assert_eq!(
            o.missing(),
            Some(Question::SessionExists {
                isid: [1; 6],
                tsih: 9
            })
        );
    }
}
