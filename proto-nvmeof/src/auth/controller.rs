//! The controller side of DH-HMAC-CHAP for one queue: AUTH_Send payloads in, AUTH_Receive
//! payloads out. The host negotiates, the controller challenges (with its DH value), the host
//! replies (with its response, its DH value and optionally its own challenge), the controller
//! answers Success1 (with its response when asked) or Failure1, and a host that checked the
//! controller's response confirms with Success2.
//!
//! Randomness (challenges, sequence numbers, DH exponents) comes from the caller's RNG: the
//! state machine does no I/O.

use std::sync::Arc;

use rand::RngCore;

use super::dh::{DhGroup, EXPONENT_LEN};
use super::secret::{self, DhchapSecret, HashId};
use super::wire::{explanation, AuthMessage, Challenge, Failure, Success1, REASON_FAILED};

/// What a subsystem requires of one host: its secret, the controller's secret when the host
/// may ask for bidirectional authentication, and the hash functions and DH groups the
/// controller accepts, in order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhchapPolicy {
    /// The host's secret (`--dhchap-secret` on the host).
    pub host_secret: DhchapSecret,
    /// The controller's secret (`--dhchap-ctrl-secret` on the host); without it a host asking
    /// for the controller's response is refused.
    pub ctrl_secret: Option<DhchapSecret>,
    /// Acceptable hash functions, preferred first.
    pub hashes: Vec<HashId>,
    /// Acceptable DH groups, preferred first.
    pub dhgroups: Vec<DhGroup>,
}

impl DhchapPolicy {
    /// A policy with every hash function (SHA-256 first) and every DH group (ffdhe2048 first,
    /// the null group last).
    pub fn new(host_secret: DhchapSecret, ctrl_secret: Option<DhchapSecret>) -> DhchapPolicy {
        DhchapPolicy {
            host_secret,
            ctrl_secret,
            hashes: HashId::ALL.to_vec(),
            dhgroups: vec![
                DhGroup::Ffdhe2048,
                DhGroup::Ffdhe3072,
                DhGroup::Ffdhe4096,
                DhGroup::Ffdhe6144,
                DhGroup::Ffdhe8192,
                DhGroup::Null,
            ],
        }
    }
}

#[derive(Debug)]
enum State {
    AwaitNegotiate,
    SendChallenge {
        tid: u16,
        hash: HashId,
        group: DhGroup,
    },
    AwaitReply {
        tid: u16,
        hash: HashId,
        group: DhGroup,
        c1: Vec<u8>,
        s1: u32,
        x: Vec<u8>,
    },
    SendSuccess1 {
        tid: u16,
        hash: HashId,
        r2: Option<Vec<u8>>,
    },
    AwaitSuccess2 {
        tid: u16,
    },
    SendFailure1 {
        tid: u16,
        explanation: u8,
    },
    Authenticated,
    Failed,
}

/// How an AUTH_Send payload left the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// The transaction goes on (the host reads the next message with AUTH_Receive).
    Continue,
    /// The host confirmed the controller's response (Success2): the queue is authenticated.
    Authenticated,
    /// The host gave up (AUTH_Failure2).
    HostFailed,
}

/// DH-HMAC-CHAP for one queue, controller side.
#[derive(Debug)]
pub struct ControllerAuth {
    policy: Arc<DhchapPolicy>,
    hostnqn: String,
    subnqn: String,
    state: State,
}

fn nonzero_u32(rng: &mut dyn RngCore) -> u32 {
    loop {
        let v = rng.next_u32();
        if v != 0 {
            return v;
        }
    }
}

impl ControllerAuth {
    /// A transaction for `hostnqn` connecting to `subnqn` under `policy`, awaiting
    /// AUTH_Negotiate.
    pub fn new(policy: Arc<DhchapPolicy>, hostnqn: &str, subnqn: &str) -> ControllerAuth {
        ControllerAuth {
            policy,
            hostnqn: hostnqn.to_string(),
            subnqn: subnqn.to_string(),
            state: State::AwaitNegotiate,
        }
    }

    /// Whether the queue is authenticated (commands other than authentication may run).
    pub fn authenticated(&self) -> bool {
        matches!(self.state, State::Authenticated)
    }

    fn tid(&self) -> u16 {
        match &self.state {
            State::SendChallenge { tid, .. }
            | State::AwaitReply { tid, .. }
            | State::SendSuccess1 { tid, .. }
            | State::AwaitSuccess2 { tid }
            | State::SendFailure1 { tid, .. } => *tid,
            _ => 0,
        }
    }

    fn fail(&mut self, tid: u16, explanation: u8) -> SendOutcome {
        self.state = State::SendFailure1 { tid, explanation };
        SendOutcome::Continue
    }

    /// Takes the payload of an AUTH_Send.
    pub fn send(&mut self, data: &[u8]) -> SendOutcome {
        let tid = self.tid();
        let msg = match AuthMessage::decode(data) {
            Ok(m) => m,
            Err(_) => return self.fail(tid, explanation::INCORRECT_PAYLOAD),
        };
        match msg {
            // A negotiation (re)starts the transaction in any state, as re-authentication.
            AuthMessage::Negotiate(n) => {
                if n.sc_c != 0 {
                    return self.fail(n.tid, explanation::CONCAT_MISMATCH);
                }
                let hash = self
                    .policy
                    .hashes
                    .iter()
                    .copied()
                    .find(|h| n.hashes.contains(&h.id()));
                let Some(hash) = hash else {
                    return self.fail(n.tid, explanation::HASH_UNUSABLE);
                };
                let group = self
                    .policy
                    .dhgroups
                    .iter()
                    .copied()
                    .find(|g| n.dhgroups.contains(&g.id()));
                let Some(group) = group else {
                    return self.fail(n.tid, explanation::DHGROUP_UNUSABLE);
                };
                self.state = State::SendChallenge {
                    tid: n.tid,
                    hash,
                    group,
                };
                SendOutcome::Continue
            }
            AuthMessage::Reply(r) => {
                let State::AwaitReply {
                    tid,
                    hash,
                    group,
                    c1,
                    s1,
                    x,
                } = std::mem::replace(&mut self.state, State::Failed)
                else {
                    return self.fail(tid, explanation::INCORRECT_MESSAGE);
                };
                if r.tid != tid || r.response.len() != hash.digest_len() {
                    return self.fail(tid, explanation::INCORRECT_PAYLOAD);
                }
                let session_key = if group.is_null() {
                    if !r.dh_value.is_empty() {
                        return self.fail(tid, explanation::INCORRECT_PAYLOAD);
                    }
                    None
                } else {
                    match group.shared_secret(&x, &r.dh_value) {
                        Some(k) => Some(k),
                        None => return self.fail(tid, explanation::DHGROUP_UNUSABLE),
                    }
                };
                let c1e = secret::effective_challenge(hash, session_key.as_deref(), &c1);
                let expected = secret::host_response(
                    hash,
                    &self.policy.host_secret.transformed(&self.hostnqn),
                    &c1e,
                    s1,
                    tid,
                    &self.hostnqn,
                    &self.subnqn,
                );
                if !secret::same(&expected, &r.response) {
                    return self.fail(tid, explanation::FAILED);
                }
                let r2 = match (&r.challenge, r.seqnum) {
                    (Some(c2), s2) if s2 != 0 => {
                        let Some(ctrl) = &self.policy.ctrl_secret else {
                            // The host wants the controller authenticated, and it cannot be.
                            return self.fail(tid, explanation::FAILED);
                        };
                        if c2.len() != hash.digest_len() {
                            return self.fail(tid, explanation::INCORRECT_PAYLOAD);
                        }
                        let c2e = secret::effective_challenge(hash, session_key.as_deref(), c2);
                        Some(secret::controller_response(
                            hash,
                            &ctrl.transformed(&self.subnqn),
                            &c2e,
                            s2,
                            tid,
                            &self.hostnqn,
                            &self.subnqn,
                        ))
                    }
                    _ => None,
                };
                self.state = State::SendSuccess1 { tid, hash, r2 };
                SendOutcome::Continue
            }
            AuthMessage::Success2 { tid: t } => match self.state {
                State::AwaitSuccess2 { tid } if tid == t => {
                    self.state = State::Authenticated;
                    SendOutcome::Authenticated
                }
                _ => self.fail(tid, explanation::INCORRECT_MESSAGE),
            },
            AuthMessage::Failure2(_) => {
                self.state = State::Failed;
                SendOutcome::HostFailed
            }
            _ => self.fail(tid, explanation::INCORRECT_MESSAGE),
        }
    }

    /// The payload of an AUTH_Receive: the next message of the transaction (a Failure1 when
    /// none is due).
    pub fn receive(&mut self, rng: &mut dyn RngCore) -> Vec<u8> {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::SendChallenge { tid, hash, group } => {
                let mut c1 = vec![0u8; hash.digest_len()];
                rng.fill_bytes(&mut c1);
                let s1 = nonzero_u32(rng);
                let mut x = Vec::new();
                if !group.is_null() {
                    x = vec![0u8; EXPONENT_LEN];
                    rng.fill_bytes(&mut x);
                }
                let msg = AuthMessage::Challenge(Challenge {
                    tid,
                    hash: hash.id(),
                    dhgroup: group.id(),
                    seqnum: s1,
                    challenge: c1.clone(),
                    dh_value: group.public_value(&x),
                });
                self.state = State::AwaitReply {
                    tid,
                    hash,
                    group,
                    c1,
                    s1,
                    x,
                };
                msg.encode()
            }
            State::SendSuccess1 { tid, hash, r2 } => {
                self.state = if r2.is_some() {
                    State::AwaitSuccess2 { tid }
                } else {
                    State::Authenticated
                };
                AuthMessage::Success1(Success1 {
                    tid,
                    hash_len: hash.digest_len() as u8,
                    response: r2,
                })
                .encode()
            }
            State::SendFailure1 { tid, explanation } => AuthMessage::Failure1(Failure {
                tid,
                reason: REASON_FAILED,
                explanation,
            })
            .encode(),
            State::Authenticated => {
                self.state = State::Authenticated;
                AuthMessage::Failure1(Failure {
                    tid: 0,
                    reason: REASON_FAILED,
                    explanation: explanation::INCORRECT_MESSAGE,
                })
                .encode()
            }
            other => {
                let tid = match &other {
                    State::AwaitReply { tid, .. } | State::AwaitSuccess2 { tid } => *tid,
                    _ => 0,
                };
                AuthMessage::Failure1(Failure {
                    tid,
                    reason: REASON_FAILED,
                    explanation: explanation::INCORRECT_MESSAGE,
                })
                .encode()
            }
        }
    }
}
