//! The operational negotiation engine: answers each key the initiator offers by that key's rule
//! (RFC 7143 sections 6.2 and 13), records the result in [`SessionParams`], and makes the
//! target's own offers when a default would exceed what the target accepts.

use thiserror::Error;

use super::config::TargetConfig;
use super::keys::{Key, Rule};
use super::params::{Digest, SessionParams, SessionType};
use super::status::LoginStatus;
use crate::text::{self, KeyValue, SpecialValue, MAX_ISCSI_NAME_LEN};

/// A negotiation failure that ends the login.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NegotiationError {
    /// A key was sent twice in the login (RFC 7143 section 6.2: a protocol error).
    #[error("key {0} negotiated more than once")]
    Duplicate(String),
    /// The initiator sent a key only a target may send.
    #[error("initiator sent target-only key {0}")]
    TargetOnlyKey(&'static str),
    /// A security key outside the security stage.
    #[error("security key {0} outside the security stage")]
    SecurityKeyOutOfStage(&'static str),
    /// SessionType is neither Normal nor Discovery.
    #[error("unsupported session type")]
    UnsupportedSessionType,
    /// An iSCSI name is empty or too long.
    #[error("invalid iSCSI name in {0}")]
    InvalidName(&'static str),
    /// The initiator's answer to a target offer breaks the key's rule.
    #[error("invalid answer to the target's offer of {0}")]
    BadAnswer(&'static str),
}

impl NegotiationError {
    /// The Login Response status this error is reported with.
    pub fn status(&self) -> LoginStatus {
        match self {
            NegotiationError::UnsupportedSessionType => LoginStatus::SESSION_TYPE_NOT_SUPPORTED,
            _ => LoginStatus::INITIATOR_ERROR,
        }
    }
}

/// Negotiation state of one login (one connection of a new session).
#[derive(Debug, Clone)]
pub struct Negotiator {
    config: TargetConfig,
    params: SessionParams,
    seen: Vec<String>,
    offered: Vec<(Key, String)>,
    declared_mrdsl: bool,
}

fn num_in(value: &str, lo: u64, hi: u64) -> Option<u64> {
    text::parse_number(value)
        .ok()
        .filter(|v| (lo..=hi).contains(v))
}

/// Narrowing that cannot fail for values already range-checked against the key's rule.
fn to_u16(v: u64) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}
fn to_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Negotiator {
    /// Starts a negotiation with the target's preferences.
    pub fn new(config: TargetConfig) -> Self {
        let params = SessionParams {
            target_max_recv_data_segment_length: 8192,
            ..SessionParams::default()
        };
        Negotiator {
            config,
            params,
            seen: Vec::new(),
            offered: Vec::new(),
            declared_mrdsl: false,
        }
    }

    /// The target configuration this negotiation runs with.
    pub fn config(&self) -> &TargetConfig {
        &self.config
    }

    /// The values negotiated so far.
    pub fn params(&self) -> &SessionParams {
        &self.params
    }

    /// Mutable access for the login state machine (identity and authentication results).
    pub fn params_mut(&mut self) -> &mut SessionParams {
        &mut self.params
    }

    /// Whether the target still waits for answers to its own offers.
    pub fn has_pending_offers(&self) -> bool {
        !self.offered.is_empty()
    }

    /// Answers the non-security keys of one (reassembled) login request, in wire order.
    /// Security keys are an error here: the state machine hands them to authentication.
    pub fn negotiate(&mut self, pairs: &[KeyValue]) -> Result<Vec<KeyValue>, NegotiationError> {
        for p in pairs {
            let answers_offer = self.offered.iter().any(|(k, _)| k.name() == p.key);
            if !answers_offer && self.seen.contains(&p.key) {
                return Err(NegotiationError::Duplicate(p.key.clone()));
            }
        }
        // SessionType and MaxBurstLength first: relevance and the FirstBurstLength cap depend
        // on them, whatever order the initiator used.
        let first = |p: &&KeyValue| p.key == "SessionType" || p.key == "MaxBurstLength";
        let mut answers: Vec<(usize, KeyValue)> = Vec::new();
        let ordered = pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| first(p))
            .chain(pairs.iter().enumerate().filter(|(_, p)| !first(p)));
        for (i, p) in ordered {
            if !self.seen.contains(&p.key) {
                self.seen.push(p.key.clone());
            }
            if let Some(value) = self.answer(p)? {
                answers.push((i, KeyValue::new(p.key.clone(), value)));
            }
        }
        answers.sort_by_key(|(i, _)| *i);
        Ok(answers.into_iter().map(|(_, kv)| kv).collect())
    }

    fn answer(&mut self, p: &KeyValue) -> Result<Option<String>, NegotiationError> {
        let Some(key) = Key::from_name(&p.key) else {
            return Ok(if SpecialValue::parse(&p.value).is_some() {
                None
            } else {
                Some(SpecialValue::NotUnderstood.as_str().to_string())
            });
        };
        if let Some(pos) = self.offered.iter().position(|(k, _)| *k == key) {
            let (_, offer) = self.offered.remove(pos);
            self.accept_answer(key, &offer, &p.value)?;
            return Ok(None);
        }
        let rule = key.rule();
        match rule {
            Rule::Security => return Err(NegotiationError::SecurityKeyOutOfStage(key.name())),
            Rule::TargetOnly => return Err(NegotiationError::TargetOnlyKey(key.name())),
            Rule::Declarative => return self.declaration(key, &p.value),
            _ => {}
        }
        if SpecialValue::parse(&p.value).is_some() {
            // An answer to something we never offered: nothing to do.
            return Ok(None);
        }
        if self.params.session_type == SessionType::Discovery && key.irrelevant_in_discovery() {
            return Ok(Some(SpecialValue::Irrelevant.as_str().to_string()));
        }
        let reject = || Ok(Some(SpecialValue::Reject.as_str().to_string()));
        let value = &p.value;
        let c = &self.config;
        let result = match rule {
            Rule::ObsoleteReject => return reject(),
            Rule::FullFeatureOnly => return Ok(Some(SpecialValue::Irrelevant.as_str().into())),
            Rule::List => {
                let supported: Vec<&str> = match key {
                    Key::HeaderDigest => c.header_digests.iter().map(|d| d.as_str()).collect(),
                    Key::DataDigest => c.data_digests.iter().map(|d| d.as_str()).collect(),
                    _ => vec!["RFC3720"],
                };
                match text::split_list(value).find(|v| supported.contains(v)) {
                    Some(v) => v.to_string(),
                    None => return reject(),
                }
            }
            Rule::Min { lo, hi } | Rule::Max { lo, hi } => {
                let Some(offer) = num_in(value, lo, hi) else {
                    return reject();
                };
                let ours = self.target_value(key);
                let v = if matches!(rule, Rule::Min { .. }) {
                    offer.min(ours)
                } else {
                    offer.max(ours)
                };
                v.to_string()
            }
            Rule::And | Rule::Or => {
                let Ok(offer) = text::parse_bool(value) else {
                    return reject();
                };
                let ours = self.target_bool(key);
                let v = if rule == Rule::And {
                    offer && ours
                } else {
                    offer || ours
                };
                text::bool_str(v).to_string()
            }
            _ => return reject(),
        };
        self.record(key, &result);
        Ok(Some(result))
    }

    /// The target's side of a numeric key, including the FirstBurstLength <= MaxBurstLength cap.
    fn target_value(&self, key: Key) -> u64 {
        let c = &self.config;
        match key {
            Key::MaxConnections => c.max_connections.into(),
            Key::MaxOutstandingR2T => c.max_outstanding_r2t.into(),
            Key::MaxBurstLength => c.max_burst_length.into(),
            Key::FirstBurstLength => c
                .first_burst_length
                .min(self.params.max_burst_length)
                .into(),
            Key::DefaultTime2Retain => c.default_time2retain.into(),
            Key::DefaultTime2Wait => c.default_time2wait.into(),
            Key::ErrorRecoveryLevel => c.error_recovery_level.into(),
            Key::IscsiProtocolLevel => 1,
            _ => 0,
        }
    }

    fn target_bool(&self, key: Key) -> bool {
        let c = &self.config;
        match key {
            Key::InitialR2T => c.initial_r2t,
            Key::ImmediateData => c.immediate_data,
            Key::DataPduInOrder => c.data_pdu_in_order,
            Key::DataSequenceInOrder => c.data_sequence_in_order,
            _ => false, // IFMarker/OFMarker: markers are not supported.
        }
    }

    /// Stores a settled value in the session parameters.
    fn record(&mut self, key: Key, value: &str) {
        let p = &mut self.params;
        let num = || text::parse_number(value).unwrap_or(0);
        let yes = value == "Yes";
        match key {
            Key::HeaderDigest => p.header_digest = Digest::parse(value).unwrap_or(Digest::None),
            Key::DataDigest => p.data_digest = Digest::parse(value).unwrap_or(Digest::None),
            Key::MaxConnections => p.max_connections = to_u16(num()),
            Key::MaxOutstandingR2T => p.max_outstanding_r2t = to_u16(num()),
            Key::MaxBurstLength => p.max_burst_length = to_u32(num()),
            Key::FirstBurstLength => p.first_burst_length = to_u32(num()),
            Key::DefaultTime2Retain => p.default_time2retain = to_u16(num()),
            Key::DefaultTime2Wait => p.default_time2wait = to_u16(num()),
            Key::ErrorRecoveryLevel => p.error_recovery_level = u8::try_from(num()).unwrap_or(0),
            Key::InitialR2T => p.initial_r2t = yes,
            Key::ImmediateData => p.immediate_data = yes,
            Key::DataPduInOrder => p.data_pdu_in_order = yes,
            Key::DataSequenceInOrder => p.data_sequence_in_order = yes,
            _ => {}
        }
    }

    fn declaration(&mut self, key: Key, value: &str) -> Result<Option<String>, NegotiationError> {
        let p = &mut self.params;
        match key {
            Key::InitiatorName | Key::TargetName => {
                if value.is_empty() || value.len() > MAX_ISCSI_NAME_LEN {
                    return Err(NegotiationError::InvalidName(key.name()));
                }
                if key == Key::InitiatorName {
                    p.initiator_name = value.to_string();
                } else {
                    p.target_name = Some(value.to_string());
                }
            }
            Key::InitiatorAlias => p.initiator_alias = Some(value.to_string()),
            Key::SessionType => {
                p.session_type = match value {
                    "Normal" => SessionType::Normal,
                    "Discovery" => SessionType::Discovery,
                    _ => return Err(NegotiationError::UnsupportedSessionType),
                }
            }
            Key::MaxRecvDataSegmentLength => match num_in(value, 512, 16_777_215) {
                Some(v) => p.initiator_max_recv_data_segment_length = to_u32(v),
                None => return Ok(Some(SpecialValue::Reject.as_str().to_string())),
            },
            _ => {}
        }
        Ok(None)
    }

    /// Checks the initiator's answer to a target offer and records it.
    fn accept_answer(
        &mut self,
        key: Key,
        offer: &str,
        answer: &str,
    ) -> Result<(), NegotiationError> {
        let bad = || NegotiationError::BadAnswer(key.name());
        let ok = match key.rule() {
            Rule::List => text::split_list(offer).any(|o| o == answer),
            Rule::Min { lo, hi } => {
                let o = text::parse_number(offer).unwrap_or(0);
                num_in(answer, lo, hi).is_some_and(|a| a <= o)
            }
            Rule::Max { lo, hi } => {
                let o = text::parse_number(offer).unwrap_or(0);
                num_in(answer, lo, hi).is_some_and(|a| a >= o)
            }
            Rule::And => answer == "No" || (answer == "Yes" && offer == "Yes"),
            Rule::Or => answer == "Yes" || (answer == "No" && offer == "No"),
            _ => false,
        };
        if !ok {
            return Err(bad());
        }
        self.record(key, answer);
        Ok(())
    }

    /// The target's own offers for keys the initiator left at a default the target cannot
    /// accept. Called before granting the transition to full feature phase; when non-empty the
    /// target sends them (without transiting) and waits for the answers.
    pub fn target_offers(&mut self) -> Vec<KeyValue> {
        let discovery = self.params.session_type == SessionType::Discovery;
        let c = self.config.clone();
        let p = self.params.clone();
        let mut out = Vec::new();
        let mut offer = |this: &mut Self, key: Key, value: String| {
            if this.seen.iter().any(|s| s == key.name())
                || (discovery && key.irrelevant_in_discovery())
            {
                return;
            }
            this.seen.push(key.name().to_string());
            this.offered.push((key, value.clone()));
            out.push(KeyValue::new(key.name(), value));
        };
        let list = |ds: &[Digest]| ds.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(",");
        if !c.header_digests.contains(&p.header_digest) && !c.header_digests.is_empty() {
            offer(self, Key::HeaderDigest, list(&c.header_digests));
        }
        if !c.data_digests.contains(&p.data_digest) && !c.data_digests.is_empty() {
            offer(self, Key::DataDigest, list(&c.data_digests));
        }
        if c.max_burst_length < p.max_burst_length {
            offer(self, Key::MaxBurstLength, c.max_burst_length.to_string());
        }
        let fbl = c
            .first_burst_length
            .min(c.max_burst_length.min(p.max_burst_length));
        if fbl < p.first_burst_length {
            offer(self, Key::FirstBurstLength, fbl.to_string());
        }
        if c.default_time2retain < p.default_time2retain {
            offer(
                self,
                Key::DefaultTime2Retain,
                c.default_time2retain.to_string(),
            );
        }
        if c.default_time2wait > p.default_time2wait {
            offer(self, Key::DefaultTime2Wait, c.default_time2wait.to_string());
        }
        if !c.immediate_data && p.immediate_data {
            offer(self, Key::ImmediateData, "No".to_string());
        }
        out
    }

    /// The target's MaxRecvDataSegmentLength declaration, returned once.
    pub fn declarations(&mut self) -> Vec<KeyValue> {
        if self.declared_mrdsl {
            return Vec::new();
        }
        self.declared_mrdsl = true;
        let v = self
            .config
            .max_recv_data_segment_length
            .clamp(512, 16_777_215);
        self.params.target_max_recv_data_segment_length = v;
        vec![KeyValue::new("MaxRecvDataSegmentLength", v.to_string())]
    }

    /// The final parameters. Enforces FirstBurstLength <= MaxBurstLength and MaxConnections=1
    /// for discovery sessions (RFC 7143 section 13.21).
    pub fn finish(mut self) -> SessionParams {
        let p = &mut self.params;
        p.first_burst_length = p.first_burst_length.min(p.max_burst_length);
        if p.session_type == SessionType::Discovery {
            p.max_connections = 1;
        }
        self.params
    }
}
