//! Login response status (RFC 7143 section 11.13.5): the class/detail pair a target puts in a
//! Login Response so the initiator knows whether, and whose fault, a login failed.

/// A Login Response status: class in the high byte, detail in the low byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoginStatus {
    /// Status-Class: 0 success, 1 redirection, 2 initiator error, 3 target error.
    pub class: u8,
    /// Status-Detail within the class.
    pub detail: u8,
}

impl LoginStatus {
    /// 0x0000: login is proceeding OK.
    pub const SUCCESS: Self = Self::new(0x00, 0x00);
    /// 0x0200: miscellaneous initiator error (protocol violations).
    pub const INITIATOR_ERROR: Self = Self::new(0x02, 0x00);
    /// 0x0201: the initiator could not be authenticated.
    pub const AUTHENTICATION_FAILURE: Self = Self::new(0x02, 0x01);
    /// 0x0202: the initiator is not allowed access to the target.
    pub const AUTHORIZATION_FAILURE: Self = Self::new(0x02, 0x02);
    /// 0x0203: the requested TargetName does not exist here.
    pub const NOT_FOUND: Self = Self::new(0x02, 0x03);
    /// 0x0204: the target has been removed.
    pub const TARGET_REMOVED: Self = Self::new(0x02, 0x04);
    /// 0x0205: no common iSCSI version.
    pub const UNSUPPORTED_VERSION: Self = Self::new(0x02, 0x05);
    /// 0x0206: too many connections on this session.
    pub const TOO_MANY_CONNECTIONS: Self = Self::new(0x02, 0x06);
    /// 0x0207: a required parameter (e.g. InitiatorName) is missing.
    pub const MISSING_PARAMETER: Self = Self::new(0x02, 0x07);
    /// 0x0208: the connection cannot be included in the session.
    pub const CANT_INCLUDE_IN_SESSION: Self = Self::new(0x02, 0x08);
    /// 0x0209: the requested SessionType is not supported.
    pub const SESSION_TYPE_NOT_SUPPORTED: Self = Self::new(0x02, 0x09);
    /// 0x020a: the session named by TSIH does not exist.
    pub const SESSION_DOES_NOT_EXIST: Self = Self::new(0x02, 0x0a);
    /// 0x020b: a request that is invalid during login.
    pub const INVALID_DURING_LOGIN: Self = Self::new(0x02, 0x0b);
    /// 0x0300: target hardware or software error.
    pub const TARGET_ERROR: Self = Self::new(0x03, 0x00);
    /// 0x0301: the iSCSI service or target is not currently operational.
    pub const SERVICE_UNAVAILABLE: Self = Self::new(0x03, 0x01);
    /// 0x0302: the target has insufficient resources.
    pub const OUT_OF_RESOURCES: Self = Self::new(0x03, 0x02);

    /// Builds a status from its two bytes.
    pub const fn new(class: u8, detail: u8) -> Self {
        LoginStatus { class, detail }
    }

    /// The status as the 16-bit value usually quoted (e.g. 0x0201).
    pub const fn code(self) -> u16 {
        ((self.class as u16) << 8) | self.detail as u16
    }

    /// Whether this status lets the login continue.
    pub const fn is_success(self) -> bool {
        self.class == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_rfc7143_table() {
        assert_eq!(LoginStatus::AUTHENTICATION_FAILURE.code(), 0x0201);
        assert_eq!(LoginStatus::NOT_FOUND.code(), 0x0203);
        assert_eq!(LoginStatus::MISSING_PARAMETER.code(), 0x0207);
        assert_eq!(LoginStatus::SESSION_TYPE_NOT_SUPPORTED.code(), 0x0209);
        assert_eq!(LoginStatus::SESSION_DOES_NOT_EXIST.code(), 0x020a);
        assert_eq!(LoginStatus::INVALID_DURING_LOGIN.code(), 0x020b);
        assert_eq!(LoginStatus::OUT_OF_RESOURCES.code(), 0x0302);
        assert!(LoginStatus::SUCCESS.is_success());
        assert!(!LoginStatus::TARGET_ERROR.is_success());
    }
}
