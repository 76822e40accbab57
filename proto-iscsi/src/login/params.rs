//! The outcome of operational negotiation: every session and connection parameter the full
//! feature phase needs, with RFC 7143 section 13 defaults for keys nobody sent.

/// A digest algorithm for HeaderDigest/DataDigest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Digest {
    /// No digest.
    None,
    /// CRC32C (Castagnoli) over header or data.
    Crc32c,
}

impl Digest {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Digest::None => "None",
            Digest::Crc32c => "CRC32C",
        }
    }

    /// Parses the wire spelling; unknown (e.g. vendor `Y-...`) digests give `None`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "None" => Some(Digest::None),
            "CRC32C" => Some(Digest::Crc32c),
            _ => Option::None,
        }
    }
}

/// The session type the initiator declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SessionType {
    /// A normal session with a target's LUNs.
    #[default]
    Normal,
    /// A discovery session: only SendTargets text requests and logout.
    Discovery,
}

/// How the initiator authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuthOutcome {
    /// No authentication was performed.
    #[default]
    None,
    /// CHAP succeeded.
    Chap {
        /// The initiator's CHAP user name.
        user: String,
        /// The algorithm used.
        algorithm: crate::chap::ChapAlgorithm,
        /// Whether the target authenticated itself too.
        mutual: bool,
    },
}

/// Every negotiated value of a session (and of its one connection), ready for the full feature
/// phase. Field defaults are the RFC 7143 defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    /// Normal or discovery.
    pub session_type: SessionType,
    /// The initiator's iSCSI name.
    pub initiator_name: String,
    /// The initiator's alias, if it declared one.
    pub initiator_alias: Option<String>,
    /// The target this session is for (`None` for discovery sessions that named none).
    pub target_name: Option<String>,
    /// Authentication result.
    pub auth: AuthOutcome,
    /// Negotiated header digest (default None).
    pub header_digest: Digest,
    /// Negotiated data digest (default None).
    pub data_digest: Digest,
    /// Negotiated MaxConnections (default 1).
    pub max_connections: u16,
    /// Negotiated InitialR2T (default Yes).
    pub initial_r2t: bool,
    /// Negotiated ImmediateData (default Yes).
    pub immediate_data: bool,
    /// Negotiated MaxBurstLength (default 262144).
    pub max_burst_length: u32,
    /// Negotiated FirstBurstLength (default 65536); never above `max_burst_length`.
    /// Irrelevant when InitialR2T=Yes and ImmediateData=No.
    pub first_burst_length: u32,
    /// Negotiated DefaultTime2Wait in seconds (default 2).
    pub default_time2wait: u16,
    /// Negotiated DefaultTime2Retain in seconds (default 20).
    pub default_time2retain: u16,
    /// Negotiated MaxOutstandingR2T (default 1).
    pub max_outstanding_r2t: u16,
    /// Negotiated DataPDUInOrder (default Yes).
    pub data_pdu_in_order: bool,
    /// Negotiated DataSequenceInOrder (default Yes).
    pub data_sequence_in_order: bool,
    /// Negotiated ErrorRecoveryLevel (default 0).
    pub error_recovery_level: u8,
    /// The largest data segment the initiator declared it can receive: the limit for PDUs the
    /// target sends (default 8192).
    pub initiator_max_recv_data_segment_length: u32,
    /// The largest data segment the target declared it can receive: the limit for PDUs the
    /// initiator sends (default 8192 unless the target declared otherwise).
    pub target_max_recv_data_segment_length: u32,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            session_type: SessionType::Normal,
            initiator_name: String::new(),
            initiator_alias: None,
            target_name: None,
            auth: AuthOutcome::None,
            header_digest: Digest::None,
            data_digest: Digest::None,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            initiator_max_recv_data_segment_length: 8192,
            target_max_recv_data_segment_length: 8192,
        }
    }
}
