//! Typed code values carried in BHS fields (task attributes, login stages, TMF functions, ...).
//!
//! Two kinds exist: codes whose reserved values RFC 7143 makes a protocol error on receipt
//! ([`TaskAttribute`], [`Stage`], [`LogoutReason`]) have a fallible `from_u8`; codes whose
//! unknown values a peer may legitimately see and answer (TMF functions, response codes,
//! async events) keep them in an `Other(u8)` variant so decoding never loses information.

/// Declares a one-byte code enum with an `Other(u8)` catch-all and lossless conversions.
macro_rules! open_code {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $value:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this crate has no name for; kept so it can be echoed or reported.
            Other(u8),
        }

        impl $name {
            /// Maps a wire value to the code; unknown values become `Other`.
            pub fn from_u8(value: u8) -> Self {
                match value {
                    $( $value => Self::$variant, )+
                    other => Self::Other(other),
                }
            }

            /// The wire value of the code.
            pub fn as_u8(self) -> u8 {
                match self {
                    $( Self::$variant => $value, )+
                    Self::Other(other) => other,
                }
            }
        }
    };
}

/// SCSI task attribute of a SCSI Command (ATTR field, RFC 7143 section 11.3.1.1).
///
/// The SCSI layer needs it to order tasks; values 5-7 are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TaskAttribute {
    /// 0: untagged.
    Untagged,
    /// 1: simple (the default of Linux initiators).
    #[default]
    Simple,
    /// 2: ordered.
    Ordered,
    /// 3: head of queue.
    HeadOfQueue,
    /// 4: ACA.
    Aca,
}

impl TaskAttribute {
    /// Maps the 3-bit ATTR value; `None` for the reserved values 5-7.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::Untagged,
            1 => Self::Simple,
            2 => Self::Ordered,
            3 => Self::HeadOfQueue,
            4 => Self::Aca,
            _ => return None,
        })
    }

    /// The 3-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Untagged => 0,
            Self::Simple => 1,
            Self::Ordered => 2,
            Self::HeadOfQueue => 3,
            Self::Aca => 4,
        }
    }
}

/// Login stage in the CSG/NSG fields of Login PDUs (RFC 7143 section 11.12.3).
///
/// The login state machine is driven by these; value 2 is reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Stage {
    /// 0: SecurityNegotiation.
    #[default]
    SecurityNegotiation,
    /// 1: LoginOperationalNegotiation.
    OperationalNegotiation,
    /// 3: FullFeaturePhase.
    FullFeaturePhase,
}

impl Stage {
    /// Maps the 2-bit stage value; `None` for the reserved value 2.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::SecurityNegotiation,
            1 => Self::OperationalNegotiation,
            3 => Self::FullFeaturePhase,
            _ => return None,
        })
    }

    /// The 2-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::SecurityNegotiation => 0,
            Self::OperationalNegotiation => 1,
            Self::FullFeaturePhase => 3,
        }
    }
}

/// Reason code of a Logout Request (RFC 7143 section 11.14.1); values 3-127 are reserved.
///
/// The session needs it to know whether to close one connection or the whole session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogoutReason {
    /// 0: close the session.
    CloseSession,
    /// 1: close the connection.
    CloseConnection,
    /// 2: remove the connection for recovery.
    RemoveConnectionForRecovery,
}

impl LogoutReason {
    /// Maps the 7-bit reason value; `None` for reserved values.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::CloseSession,
            1 => Self::CloseConnection,
            2 => Self::RemoveConnectionForRecovery,
            _ => return None,
        })
    }

    /// The 7-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::CloseSession => 0,
            Self::CloseConnection => 1,
            Self::RemoveConnectionForRecovery => 2,
        }
    }
}

open_code! {
    /// Task management function (RFC 7143 section 11.5.1).
    ///
    /// Unknown values are kept: the target answers them with "function not supported".
    TmfFunction {
        /// 1: ABORT TASK.
        AbortTask = 1,
        /// 2: ABORT TASK SET.
        AbortTaskSet = 2,
        /// 3: CLEAR ACA.
        ClearAca = 3,
        /// 4: CLEAR TASK SET.
        ClearTaskSet = 4,
        /// 5: LOGICAL UNIT RESET.
        LogicalUnitReset = 5,
        /// 6: TARGET WARM RESET.
        TargetWarmReset = 6,
        /// 7: TARGET COLD RESET.
        TargetColdReset = 7,
        /// 8: TASK REASSIGN.
        TaskReassign = 8,
    }
}

open_code! {
    /// Response of a Task Management Function Response (RFC 7143 section 11.6.1).
    TmfResponse {
        /// 0: function complete.
        Complete = 0,
        /// 1: task does not exist.
        TaskDoesNotExist = 1,
        /// 2: LUN does not exist.
        LunDoesNotExist = 2,
        /// 3: task still allegiant.
        TaskStillAllegiant = 3,
        /// 4: task allegiance reassignment not supported.
        ReassignmentNotSupported = 4,
        /// 5: task management function not supported.
        NotSupported = 5,
        /// 6: function authorization failed.
        AuthorizationFailed = 6,
        /// 255: function rejected.
        Rejected = 255,
    }
}

open_code! {
    /// Response of a Logout Response (RFC 7143 section 11.15.1).
    LogoutResponseCode {
        /// 0: connection or session closed successfully.
        Success = 0,
        /// 1: CID not found.
        CidNotFound = 1,
        /// 2: connection recovery is not supported.
        RecoveryNotSupported = 2,
        /// 3: cleanup failed for various reasons.
        CleanupFailed = 3,
    }
}

open_code! {
    /// SNACK type (RFC 7143 section 11.16.1).
    ///
    /// Decoded only so a target at ErrorRecoveryLevel 0 can reject the SNACK knowingly.
    SnackType {
        /// 0: Data/R2T SNACK.
        DataR2t = 0,
        /// 1: Status SNACK.
        Status = 1,
        /// 2: DataACK.
        DataAck = 2,
        /// 3: R-Data SNACK.
        RData = 3,
    }
}

open_code! {
    /// AsyncEvent code of an Asynchronous Message (RFC 7143 section 11.9.1).
    AsyncEvent {
        /// 0: SCSI asynchronous event (sense data in the data segment).
        ScsiEvent = 0,
        /// 1: target requests logout.
        RequestLogout = 1,
        /// 2: target will drop the connection.
        DropConnection = 2,
        /// 3: target will drop all connections of the session.
        DropAllConnections = 3,
        /// 4: target requests parameter renegotiation.
        RequestNegotiation = 4,
        /// 255: vendor-specific event.
        VendorSpecific = 255,
    }
}

open_code! {
    /// iSCSI service response of a SCSI Response (RFC 7143 section 11.4.3).
    ServiceResponse {
        /// 0x00: command completed at target (SCSI status is valid).
        CommandCompleted = 0x00,
        /// 0x01: target failure.
        TargetFailure = 0x01,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_codes_refuse_reserved_values() {
        assert_eq!(Stage::from_u8(2), None);
        assert_eq!(TaskAttribute::from_u8(5), None);
        assert_eq!(LogoutReason::from_u8(3), None);
        for v in 0..=4 {
            assert_eq!(TaskAttribute::from_u8(v).map(TaskAttribute::as_u8), Some(v));
        }
        for v in [0, 1, 3] {
            assert_eq!(Stage::from_u8(v).map(Stage::as_u8), Some(v));
        }
    }

    #[test]
    fn open_codes_are_lossless() {
        for v in 0..=255u8 {
            assert_eq!(TmfFunction::from_u8(v).as_u8(), v);
            assert_eq!(TmfResponse::from_u8(v).as_u8(), v);
            assert_eq!(AsyncEvent::from_u8(v).as_u8(), v);
        }
        assert_eq!(TmfFunction::from_u8(5), TmfFunction::LogicalUnitReset);
        assert_eq!(TmfResponse::from_u8(255), TmfResponse::Rejected);
        assert_eq!(TmfFunction::from_u8(9), TmfFunction::Other(9));
    }
}
