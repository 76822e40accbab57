//! Answers to `SendTargets` text requests (RFC 7143 section 13.3 and appendix C), used in
//! discovery sessions (and, for the session's own target, in normal sessions).

use super::params::{SessionParams, SessionType};
use crate::text::{self, KeyValue};

/// One target as discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredTarget {
    /// The target's iSCSI name.
    pub name: String,
    /// Its portals as `address[:port],portal-group-tag`, e.g. `10.0.0.1:3260,1` or
    /// `[fe80::1]:3260,1`.
    pub addresses: Vec<String>,
}

/// Builds the text answering `SendTargets=<value>`.
///
/// `All` lists every target and is only honoured in discovery sessions; an iSCSI name lists that
/// target if it exists; an empty value lists the session's own target (normal sessions). Anything
/// else yields an empty answer. Large answers must be split by the caller according to the
/// initiator's MaxRecvDataSegmentLength (C bit).
pub fn send_targets_response(
    value: &str,
    session: &SessionParams,
    targets: &[DiscoveredTarget],
) -> Vec<u8> {
    let selected: Vec<&DiscoveredTarget> = match value {
        "All" if session.session_type == SessionType::Discovery => targets.iter().collect(),
        "All" => Vec::new(),
        "" => match &session.target_name {
            Some(own) => targets.iter().filter(|t| &t.name == own).collect(),
            None => Vec::new(),
        },
        name => targets.iter().filter(|t| t.name == name).collect(),
    };
    let mut pairs = Vec::new();
    for t in selected {
        pairs.push(KeyValue::new("TargetName", t.name.clone()));
        for a in &t.addresses {
            pairs.push(KeyValue::new("TargetAddress", a.clone()));
        }
    }
    text::encode_text(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Vec<DiscoveredTarget> {
        vec![
            DiscoveredTarget {
                name: "iqn.2024-01.org.example:a".into(),
                addresses: vec!["10.0.0.1:3260,1".into(), "[fe80::1]:3260,1".into()],
            },
            DiscoveredTarget {
                name: "iqn.2024-01.org.example:b".into(),
                addresses: vec!["10.0.0.1:3260,1".into()],
            },
        ]
    }

    #[test]
    fn all_in_discovery_session_lists_every_target() {
        let s = SessionParams {
            session_type: SessionType::Discovery,
            ..SessionParams::default()
        };
        let out = send_targets_response("All", &s, &targets());
        assert_eq!(
            out,
            b"TargetName=iqn.2024-01.org.example:a\0TargetAddress=10.0.0.1:3260,1\0\
TargetAddress=[fe80::1]:3260,1\0TargetName=iqn.2024-01.org.example:b\0\
TargetAddress=10.0.0.1:3260,1\0"
                .to_vec()
        );
    }

    #[test]
    fn normal_session_scope() {
        let s = SessionParams {
            target_name: Some("iqn.2024-01.org.example:b".into()),
            ..SessionParams::default()
        };
        assert!(send_targets_response("All", &s, &targets()).is_empty());
        assert_eq!(
            send_targets_response("", &s, &targets()),
            b"TargetName=iqn.2024-01.org.example:b\0TargetAddress=10.0.0.1:3260,1\0".to_vec()
        );
        assert!(send_targets_response("iqn.none", &s, &targets()).is_empty());
    }
}
