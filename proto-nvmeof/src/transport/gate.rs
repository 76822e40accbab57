//! Where a queue stands with in-band authentication: the pending DH-HMAC-CHAP transaction
//! of a host that must authenticate, and which commands it holds back meanwhile.

use rand::rngs::StdRng;

use crate::auth::{ControllerAuth, CONNECT_ATR};
use crate::fabrics::{fctype, Connect};
use crate::sqe::{Sqe, OPC_FABRICS};
use crate::subsystem::Subsystem;

/// Where the queue stands with authentication.
#[derive(Debug, Default)]
pub(super) struct Gate {
    /// The transaction, while the queue must authenticate (None: not required, or done).
    pub(super) pending: Option<Box<ControllerAuth>>,
    /// Randomness for challenges and DH exponents, seeded by the driver
    /// (`Connection::seed_auth`); without it no transaction can start.
    pub(super) rng: Option<StdRng>,
}

impl Gate {
    /// Sets the queue up for `connect` to `subsys`: the ATR bit for the Connect response
    /// when the host must authenticate, else 0.
    pub(super) fn require(&mut self, subsys: &Subsystem, connect: &Connect) -> u32 {
        match subsys.dhchap.get(&connect.hostnqn) {
            Some(policy) => {
                self.pending = Some(Box::new(ControllerAuth::new(
                    std::sync::Arc::clone(policy),
                    &connect.hostnqn,
                    &subsys.nqn,
                )));
                CONNECT_ATR
            }
            None => 0,
        }
    }

    /// Whether `sqe` must be refused because the queue has not authenticated yet.
    pub(super) fn blocks(&self, sqe: &Sqe) -> bool {
        self.pending.is_some()
            && !(sqe.opcode() == OPC_FABRICS
                && matches!(sqe.fctype(), fctype::AUTH_SEND | fctype::AUTH_RECEIVE))
    }
}
