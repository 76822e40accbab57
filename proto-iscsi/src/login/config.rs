//! What the target is willing to negotiate, and the hooks through which the login state machine
//! asks the embedding application about targets, credentials, randomness and session handles.

use super::params::Digest;
use crate::chap::ChapConfig;

/// The target's negotiation preferences and limits, shared by all its connections.
///
/// Values are what the target *offers or accepts*: for "minimum" keys the negotiated value is at
/// most the limit here, for booleans the value here is the target's side of the AND/OR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// Header digests the target accepts, e.g. `[None, Crc32c]`.
    pub header_digests: Vec<Digest>,
    /// Data digests the target accepts.
    pub data_digests: Vec<Digest>,
    /// MaxRecvDataSegmentLength the target declares (512..=16777215).
    pub max_recv_data_segment_length: u32,
    /// Largest MaxBurstLength accepted.
    pub max_burst_length: u32,
    /// Largest FirstBurstLength accepted.
    pub first_burst_length: u32,
    /// Largest MaxOutstandingR2T accepted.
    pub max_outstanding_r2t: u16,
    /// Largest DefaultTime2Retain accepted.
    pub default_time2retain: u16,
    /// The target's DefaultTime2Wait (the result is the larger of both sides).
    pub default_time2wait: u16,
    /// The target's InitialR2T (OR).
    pub initial_r2t: bool,
    /// The target's ImmediateData (AND).
    pub immediate_data: bool,
    /// The target's DataPDUInOrder (OR).
    pub data_pdu_in_order: bool,
    /// The target's DataSequenceInOrder (OR).
    pub data_sequence_in_order: bool,
    /// Largest ErrorRecoveryLevel supported (this implementation: 0).
    pub error_recovery_level: u8,
    /// Largest MaxConnections supported (this implementation: 1).
    pub max_connections: u16,
    /// The portal group's alias sent as TargetAlias to normal sessions, if any.
    pub target_alias: Option<String>,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            header_digests: vec![Digest::None, Digest::Crc32c],
            data_digests: vec![Digest::None, Digest::Crc32c],
            max_recv_data_segment_length: 262_144,
            max_burst_length: 1_048_576,
            first_burst_length: 262_144,
            max_outstanding_r2t: 1,
            default_time2retain: 20,
            default_time2wait: 2,
            initial_r2t: true,
            immediate_data: true,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            max_connections: 1,
            target_alias: None,
        }
    }
}

/// How initiators must authenticate to one target (or to discovery).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TargetAuth {
    /// No authentication: AuthMethod=None.
    #[default]
    None,
    /// CHAP with these credentials.
    Chap(ChapConfig),
}

/// Why a login is refused before authentication starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// TargetName names no target here (status 0x0203).
    NotFound,
    /// The initiator may not access the target (status 0x0202).
    NotAuthorized,
}

/// The answers to the questions a login asks, as the pure state machine
/// ([`super::LoginConnection::step`]) takes them. Keeping these behind a trait keeps the state
/// machine free of I/O, clocks and global state, and makes tests deterministic.
///
/// Not part of the connection's driving API: `session::Connection` implements it over the
/// answers its driver gives to `session::Event::Question`s.
pub trait LoginContext {
    /// Looks a target up by its iSCSI name; `None` means "not found" (status 0x0203).
    fn target_auth(&self, target_name: &str) -> Option<TargetAuth>;

    /// Authentication required for discovery sessions.
    fn discovery_auth(&self) -> TargetAuth {
        TargetAuth::None
    }

    /// Whether this initiator may log in to this target (status 0x0202 if not).
    fn initiator_allowed(&self, _target_name: &str, _initiator_name: &str) -> bool {
        true
    }

    /// Decides whether `initiator` may open a session to `target` (a discovery session when
    /// `None`) and how it must authenticate. The login asks this once, as one question; the
    /// default combines [`Self::target_auth`], [`Self::initiator_allowed`] and
    /// [`Self::discovery_auth`].
    fn admit(&self, initiator: &str, target: Option<&str>) -> Result<TargetAuth, Refusal> {
        match target {
            None => Ok(self.discovery_auth()),
            Some(t) => {
                let auth = self.target_auth(t).ok_or(Refusal::NotFound)?;
                if self.initiator_allowed(t, initiator) {
                    Ok(auth)
                } else {
                    Err(Refusal::NotAuthorized)
                }
            }
        }
    }

    /// Fills `buf` with unpredictable bytes (CHAP identifiers and challenges).
    fn fill_random(&mut self, buf: &mut [u8]);

    /// Allocates the TSIH of a new session (must be non-zero and unique among live sessions).
    /// `None` means the target is out of session slots (status 0x0302).
    fn allocate_tsih(&mut self) -> Option<u16>;

    /// Whether a session with this ISID and TSIH exists (for logins that name a TSIH).
    fn session_exists(&self, _isid: [u8; 6], _tsih: u16) -> bool {
        false
    }
}
