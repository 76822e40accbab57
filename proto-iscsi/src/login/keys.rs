//! The login/text keys of RFC 7143 section 13 and 12.1, with the rule each one follows. One
//! table here keeps "which key is negotiated how" in a single place.

/// How a key's value is settled between initiator and target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The responder picks the first value of the offered list it supports.
    List,
    /// Numeric; result is the smaller of both sides; value must be within `lo..=hi`.
    Min {
        /// Lowest legal value.
        lo: u64,
        /// Highest legal value.
        hi: u64,
    },
    /// Numeric; result is the larger of both sides; value must be within `lo..=hi`.
    Max {
        /// Lowest legal value.
        lo: u64,
        /// Highest legal value.
        hi: u64,
    },
    /// Boolean; result is Yes only if both say Yes.
    And,
    /// Boolean; result is Yes if either says Yes.
    Or,
    /// The sender states a fact about itself; no answer is negotiated.
    Declarative,
    /// Only the target may send this key.
    TargetOnly,
    /// Part of the security (authentication) stage.
    Security,
    /// Obsolete marker interval key: always answered with Reject (RFC 7143 section 13.26).
    ObsoleteReject,
    /// Only meaningful in a Text request in full feature phase.
    FullFeatureOnly,
}

/// A key this implementation knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // Variant names are the RFC key names.
pub enum Key {
    HeaderDigest,
    DataDigest,
    MaxConnections,
    SendTargets,
    TargetName,
    InitiatorName,
    TargetAlias,
    InitiatorAlias,
    TargetAddress,
    TargetPortalGroupTag,
    InitialR2T,
    ImmediateData,
    MaxRecvDataSegmentLength,
    MaxBurstLength,
    FirstBurstLength,
    DefaultTime2Wait,
    DefaultTime2Retain,
    MaxOutstandingR2T,
    DataPduInOrder,
    DataSequenceInOrder,
    ErrorRecoveryLevel,
    SessionType,
    TaskReporting,
    IscsiProtocolLevel,
    IfMarker,
    OfMarker,
    IfMarkInt,
    OfMarkInt,
    AuthMethod,
    ChapA,
    ChapI,
    ChapC,
    ChapN,
    ChapR,
}

const BURST: Rule = Rule::Min {
    lo: 512,
    hi: 16_777_215,
};

impl Key {
    /// All known keys.
    pub const ALL: [Key; 34] = [
        Key::HeaderDigest,
        Key::DataDigest,
        Key::MaxConnections,
        Key::SendTargets,
        Key::TargetName,
        Key::InitiatorName,
        Key::TargetAlias,
        Key::InitiatorAlias,
        Key::TargetAddress,
        Key::TargetPortalGroupTag,
        Key::InitialR2T,
        Key::ImmediateData,
        Key::MaxRecvDataSegmentLength,
        Key::MaxBurstLength,
        Key::FirstBurstLength,
        Key::DefaultTime2Wait,
        Key::DefaultTime2Retain,
        Key::MaxOutstandingR2T,
        Key::DataPduInOrder,
        Key::DataSequenceInOrder,
        Key::ErrorRecoveryLevel,
        Key::SessionType,
        Key::TaskReporting,
        Key::IscsiProtocolLevel,
        Key::IfMarker,
        Key::OfMarker,
        Key::IfMarkInt,
        Key::OfMarkInt,
        Key::AuthMethod,
        Key::ChapA,
        Key::ChapI,
        Key::ChapC,
        Key::ChapN,
        Key::ChapR,
    ];

    /// The key's wire name.
    pub fn name(self) -> &'static str {
        match self {
            Key::HeaderDigest => "HeaderDigest",
            Key::DataDigest => "DataDigest",
            Key::MaxConnections => "MaxConnections",
            Key::SendTargets => "SendTargets",
            Key::TargetName => "TargetName",
            Key::InitiatorName => "InitiatorName",
            Key::TargetAlias => "TargetAlias",
            Key::InitiatorAlias => "InitiatorAlias",
            Key::TargetAddress => "TargetAddress",
            Key::TargetPortalGroupTag => "TargetPortalGroupTag",
            Key::InitialR2T => "InitialR2T",
            Key::ImmediateData => "ImmediateData",
            Key::MaxRecvDataSegmentLength => "MaxRecvDataSegmentLength",
            Key::MaxBurstLength => "MaxBurstLength",
            Key::FirstBurstLength => "FirstBurstLength",
            Key::DefaultTime2Wait => "DefaultTime2Wait",
            Key::DefaultTime2Retain => "DefaultTime2Retain",
            Key::MaxOutstandingR2T => "MaxOutstandingR2T",
            Key::DataPduInOrder => "DataPDUInOrder",
            Key::DataSequenceInOrder => "DataSequenceInOrder",
            Key::ErrorRecoveryLevel => "ErrorRecoveryLevel",
            Key::SessionType => "SessionType",
            Key::TaskReporting => "TaskReporting",
            Key::IscsiProtocolLevel => "iSCSIProtocolLevel",
            Key::IfMarker => "IFMarker",
            Key::OfMarker => "OFMarker",
            Key::IfMarkInt => "IFMarkInt",
            Key::OfMarkInt => "OFMarkInt",
            Key::AuthMethod => "AuthMethod",
            Key::ChapA => "CHAP_A",
            Key::ChapI => "CHAP_I",
            Key::ChapC => "CHAP_C",
            Key::ChapN => "CHAP_N",
            Key::ChapR => "CHAP_R",
        }
    }

    /// Looks a wire name up (case-sensitive, as the RFC requires).
    pub fn from_name(name: &str) -> Option<Key> {
        Key::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// The negotiation rule.
    pub fn rule(self) -> Rule {
        match self {
            Key::HeaderDigest | Key::DataDigest | Key::TaskReporting => Rule::List,
            Key::MaxConnections | Key::MaxOutstandingR2T => Rule::Min { lo: 1, hi: 65_535 },
            Key::MaxBurstLength | Key::FirstBurstLength => BURST,
            Key::DefaultTime2Retain => Rule::Min { lo: 0, hi: 3600 },
            Key::ErrorRecoveryLevel => Rule::Min { lo: 0, hi: 2 },
            Key::IscsiProtocolLevel => Rule::Min { lo: 0, hi: 31 },
            Key::DefaultTime2Wait => Rule::Max { lo: 0, hi: 3600 },
            Key::ImmediateData | Key::IfMarker | Key::OfMarker => Rule::And,
            Key::InitialR2T | Key::DataPduInOrder | Key::DataSequenceInOrder => Rule::Or,
            Key::MaxRecvDataSegmentLength
            | Key::InitiatorName
            | Key::InitiatorAlias
            | Key::TargetName
            | Key::SessionType => Rule::Declarative,
            Key::TargetAlias | Key::TargetAddress | Key::TargetPortalGroupTag => Rule::TargetOnly,
            Key::AuthMethod | Key::ChapA | Key::ChapI | Key::ChapC | Key::ChapN | Key::ChapR => {
                Rule::Security
            }
            Key::IfMarkInt | Key::OfMarkInt => Rule::ObsoleteReject,
            Key::SendTargets => Rule::FullFeatureOnly,
        }
    }

    /// Whether the key is irrelevant to a discovery session (RFC 7143 section 13).
    pub fn irrelevant_in_discovery(self) -> bool {
        matches!(
            self,
            Key::MaxConnections
                | Key::InitialR2T
                | Key::ImmediateData
                | Key::MaxBurstLength
                | Key::FirstBurstLength
                | Key::MaxOutstandingR2T
                | Key::DataPduInOrder
                | Key::DataSequenceInOrder
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for k in Key::ALL {
            assert_eq!(Key::from_name(k.name()), Some(k));
        }
        assert_eq!(Key::from_name("maxburstlength"), None);
        assert_eq!(Key::from_name("X-com.example.foo"), None);
    }

    #[test]
    fn rfc7143_result_functions() {
        assert_eq!(Key::InitialR2T.rule(), Rule::Or);
        assert_eq!(Key::ImmediateData.rule(), Rule::And);
        assert_eq!(Key::DataPduInOrder.rule(), Rule::Or);
        assert_eq!(Key::DataSequenceInOrder.rule(), Rule::Or);
        assert_eq!(Key::DefaultTime2Wait.rule(), Rule::Max { lo: 0, hi: 3600 });
        assert_eq!(Key::MaxRecvDataSegmentLength.rule(), Rule::Declarative);
        assert_eq!(Key::ErrorRecoveryLevel.rule(), Rule::Min { lo: 0, hi: 2 });
    }
}
