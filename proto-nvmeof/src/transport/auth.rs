//! In-band authentication of a queue: after a Connect whose host the subsystem makes
//! authenticate, the queue runs a DH-HMAC-CHAP transaction ([`crate::auth::ControllerAuth`])
//! over Authentication Send / Receive, and refuses every other command with Authentication
//! Required until it succeeded. The queue's state is a [`super::gate::Gate`].

use std::time::Instant;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::{Connection, Queue};
use crate::auth::{self, SendOutcome};
use crate::cqe::Response;
use crate::fabrics::fctype;
use crate::sqe::Sqe;
use crate::status::Status;

impl Connection {
    /// Supplies the randomness of this connection's authentication transactions (32 bytes
    /// from the operating system's generator). A connection never seeded cannot authenticate
    /// a host: its transactions end in AUTH_Failure1.
    pub fn seed_auth(&mut self, seed: [u8; 32]) {
        self.auth.rng = Some(StdRng::from_seed(seed));
    }

    /// Whether the queue still has to authenticate before running other commands.
    pub fn auth_pending(&self) -> bool {
        self.auth.pending.is_some()
    }

    /// Authentication Send / Receive.
    pub(super) fn authenticate(&mut self, now: Instant, sqe: Sqe, data: &Bytes) {
        let cid = sqe.cid();
        if let Queue::Admin(c) = &mut self.queue {
            c.touch(now);
        }
        let len = match auth::parse_command(&sqe) {
            Ok(l) => l,
            Err(_) => {
                return self.send_response(Response::status(cid, Status::INVALID_FIELD.dnr()), 0)
            }
        };
        let Some(tx) = self.auth.pending.as_mut() else {
            // Nothing to authenticate on this queue.
            return self.send_response(
                Response::status(cid, Status::COMMAND_SEQUENCE_ERROR.dnr()),
                0,
            );
        };
        if sqe.fctype() == fctype::AUTH_SEND {
            if data.len() != len as usize {
                return self.send_response(Response::status(cid, Status::INVALID_FIELD.dnr()), 0);
            }
            let outcome = if self.auth.rng.is_some() {
                tx.send(data)
            } else {
                // Unseeded: answer whatever comes with a failure (see seed_auth).
                tx.send(&[])
            };
            if outcome == SendOutcome::Authenticated {
                self.auth.pending = None;
            }
            return self.send_response(Response::status(cid, Status::SUCCESS), 0);
        }
        let msg = match self.auth.rng.as_mut() {
            Some(rng) => tx.receive(rng),
            None => tx.receive(&mut StdRng::from_seed([0; 32])),
        };
        if tx.authenticated() {
            self.auth.pending = None;
        }
        let resp = Response::data(cid, msg);
        self.send_response(resp, len as usize);
    }
}
