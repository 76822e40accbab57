//! iSCSI login for a target (RFC 7143 section 6): the per-connection state machine, the
//! operational key negotiation, the session parameters it produces, and SendTargets answers.
//!
//! Sans-IO: `session::Connection` decodes Login Request PDUs, passes their fields to
//! [`LoginConnection::step`] together with a [`LoginContext`] (target lookup, randomness, TSIH
//! allocation) built from its driver's answers, and encodes the returned [`LoginResponse`].

mod config;
mod discovery;
#[cfg(any(test, feature = "fuzz"))]
mod fuzz;
mod keys;
mod negotiate;
mod params;
mod state;
mod status;
#[cfg(test)]
mod tests;

pub use config::{LoginContext, Refusal, TargetAuth, TargetConfig};
pub use discovery::{send_targets_response, DiscoveredTarget};
#[cfg(any(test, feature = "fuzz"))]
pub use fuzz::fuzz_login_negotiate;
pub use keys::{Key, Rule};
pub use negotiate::{NegotiationError, Negotiator};
pub use params::{AuthOutcome, Digest, SessionParams, SessionType};
pub use state::{
    LoginConnection, LoginError, LoginOutcome, LoginRequest, LoginResponse, LoginStep,
    LoginSuccess, Stage, MAX_LOGIN_REQUESTS,
};
pub use status::LoginStatus;
