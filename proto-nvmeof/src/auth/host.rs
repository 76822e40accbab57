//! The host side of DH-HMAC-CHAP for one queue (what `nvme connect --dhchap-secret
//! [--dhchap-ctrl-secret]` does): the negotiation to AUTH_Send, the controller's challenge
//! answered, and its Success1 checked (its response too, for bidirectional authentication),
//! ending with Success2 or Failure2 to AUTH_Send.

use rand::RngCore;

use super::dh::{DhGroup, EXPONENT_LEN};
use super::secret::{self, DhchapSecret, HashId};
use super::wire::{explanation, AuthMessage, Failure, Negotiate, Reply, REASON_FAILED};

/// Why the host's side of the transaction failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostAuthError {
    /// The controller sent AUTH_Failure1.
    #[error("the controller refused authentication (reason {reason:#04x}, explanation {explanation:#04x})")]
    Refused {
        /// Reason code.
        reason: u8,
        /// Reason code explanation.
        explanation: u8,
    },
    /// The controller's message was not the expected one or did not decode.
    #[error("unexpected authentication message from the controller: {0}")]
    Protocol(String),
    /// The controller chose a hash function or DH group the host did not offer, or sent an
    /// unusable DH value.
    #[error("the controller chose parameters the host cannot use: {0}")]
    Parameters(String),
    /// The controller's response to the host's challenge is wrong (bidirectional
    /// authentication): it does not know the controller secret.
    #[error("the controller failed to authenticate itself")]
    ControllerNotAuthenticated,
}

#[derive(Debug)]
enum State {
    Start,
    AwaitChallenge,
    AwaitSuccess1 {
        hash: HashId,
        c2: Option<(Vec<u8>, u32)>,
        session_key: Option<Vec<u8>>,
    },
    Done,
}

/// What the host sends after the controller's Success1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// Authenticated; nothing more to send (no bidirectional authentication).
    Done,
    /// Authenticated both ways: AUTH_Send this Success2.
    SendSuccess2(Vec<u8>),
}

/// DH-HMAC-CHAP for one queue, host side.
#[derive(Debug)]
pub struct HostAuth {
    hostnqn: String,
    subnqn: String,
    secret: DhchapSecret,
    ctrl_secret: Option<DhchapSecret>,
    tid: u16,
    /// HashIDs offered.
    pub hashes: Vec<u8>,
    /// DH group ids offered.
    pub dhgroups: Vec<u8>,
    state: State,
}

impl HostAuth {
    /// A transaction `tid` for `hostnqn` on `subnqn` with the host's secret and, for
    /// bidirectional authentication, the controller's; offers every hash function and DH
    /// group (change `hashes` / `dhgroups` to offer fewer).
    pub fn new(
        hostnqn: &str,
        subnqn: &str,
        secret: DhchapSecret,
        ctrl_secret: Option<DhchapSecret>,
        tid: u16,
    ) -> HostAuth {
        HostAuth {
            hostnqn: hostnqn.to_string(),
            subnqn: subnqn.to_string(),
            secret,
            ctrl_secret,
            tid,
            hashes: HashId::ALL.iter().map(|h| h.id()).collect(),
            dhgroups: DhGroup::ALL.iter().map(|g| g.id()).collect(),
            state: State::Start,
        }
    }

    /// The AUTH_Negotiate payload to AUTH_Send first.
    pub fn negotiate(&mut self) -> Vec<u8> {
        self.state = State::AwaitChallenge;
        AuthMessage::Negotiate(Negotiate {
            tid: self.tid,
            sc_c: 0,
            hashes: self.hashes.clone(),
            dhgroups: self.dhgroups.clone(),
        })
        .encode()
    }

    /// A Failure2 payload telling the controller why the host gives up.
    pub fn failure2(&self, explanation: u8) -> Vec<u8> {
        AuthMessage::Failure2(Failure {
            tid: self.tid,
            reason: REASON_FAILED,
            explanation,
        })
        .encode()
    }

    fn expect(&self, data: &[u8]) -> Result<AuthMessage, HostAuthError> {
        let m = AuthMessage::decode(data).map_err(|e| HostAuthError::Protocol(e.to_string()))?;
        if let AuthMessage::Failure1(f) = m {
            return Err(HostAuthError::Refused {
                reason: f.reason,
                explanation: f.explanation,
            });
        }
        Ok(m)
    }

    /// Takes the controller's challenge (an AUTH_Receive payload); returns the Reply to
    /// AUTH_Send.
    pub fn on_challenge(
        &mut self,
        data: &[u8],
        rng: &mut dyn RngCore,
    ) -> Result<Vec<u8>, HostAuthError> {
        if !matches!(self.state, State::AwaitChallenge) {
            return Err(HostAuthError::Protocol("challenge out of sequence".into()));
        }
        let AuthMessage::Challenge(c) = self.expect(data)? else {
            return Err(HostAuthError::Protocol("expected a challenge".into()));
        };
        if c.tid != self.tid {
            return Err(HostAuthError::Protocol("wrong transaction id".into()));
        }
        let hash = HashId::from_id(c.hash)
            .filter(|h| self.hashes.contains(&h.id()) && c.challenge.len() == h.digest_len())
            .ok_or_else(|| HostAuthError::Parameters(format!("hash {}", c.hash)))?;
        let group = DhGroup::from_id(c.dhgroup)
            .filter(|g| self.dhgroups.contains(&g.id()))
            .ok_or_else(|| HostAuthError::Parameters(format!("DH group {}", c.dhgroup)))?;
        let (session_key, dh_value) = if group.is_null() {
            (None, Vec::new())
        } else {
            let mut x = vec![0u8; EXPONENT_LEN];
            rng.fill_bytes(&mut x);
            let key = group
                .shared_secret(&x, &c.dh_value)
                .ok_or_else(|| HostAuthError::Parameters("DH value".into()))?;
            (Some(key), group.public_value(&x))
        };
        let c1 = secret::effective_challenge(hash, session_key.as_deref(), &c.challenge);
        let response = secret::host_response(
            hash,
            &self.secret.transformed(&self.hostnqn),
            &c1,
            c.seqnum,
            self.tid,
            &self.hostnqn,
            &self.subnqn,
        );
        let c2 = self.ctrl_secret.as_ref().map(|_| {
            let mut c2 = vec![0u8; hash.digest_len()];
            rng.fill_bytes(&mut c2);
            let s2 = loop {
                let s = rng.next_u32();
                if s != 0 {
                    break s;
                }
            };
            (c2, s2)
        });
        let reply = AuthMessage::Reply(Reply {
            tid: self.tid,
            seqnum: c2.as_ref().map_or(0, |(_, s2)| *s2),
            response,
            challenge: c2.as_ref().map(|(c, _)| c.clone()),
            dh_value,
        });
        self.state = State::AwaitSuccess1 {
            hash,
            c2,
            session_key,
        };
        Ok(reply.encode())
    }

    /// Takes the controller's Success1 (an AUTH_Receive payload) and checks its response
    /// when the host asked for one.
    pub fn on_success1(&mut self, data: &[u8]) -> Result<Finish, HostAuthError> {
        let State::AwaitSuccess1 {
            hash,
            c2,
            session_key,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(HostAuthError::Protocol("success1 out of sequence".into()));
        };
        let AuthMessage::Success1(s) = self.expect(data)? else {
            return Err(HostAuthError::Protocol("expected success1".into()));
        };
        if s.tid != self.tid {
            return Err(HostAuthError::Protocol("wrong transaction id".into()));
        }
        let (Some((c2, s2)), Some(ctrl)) = (c2, &self.ctrl_secret) else {
            return Ok(Finish::Done);
        };
        let Some(r2) = s.response else {
            return Err(HostAuthError::ControllerNotAuthenticated);
        };
        let c2e = secret::effective_challenge(hash, session_key.as_deref(), &c2);
        let expected = secret::controller_response(
            hash,
            &ctrl.transformed(&self.subnqn),
            &c2e,
            s2,
            self.tid,
            &self.hostnqn,
            &self.subnqn,
        );
        if !secret::same(&expected, &r2) {
            return Err(HostAuthError::ControllerNotAuthenticated);
        }
        Ok(Finish::SendSuccess2(
            AuthMessage::Success2 { tid: self.tid }.encode(),
        ))
    }
}

/// The Failure2 explanation for a host-side error.
pub fn failure_explanation(e: &HostAuthError) -> u8 {
    match e {
        HostAuthError::ControllerNotAuthenticated => explanation::FAILED,
        HostAuthError::Parameters(_) => explanation::NOT_USABLE,
        _ => explanation::INCORRECT_MESSAGE,
    }
}
