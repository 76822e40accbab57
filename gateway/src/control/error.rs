//! The control plane's refusals: an HTTP status and a message a person can act on.

use hyper::StatusCode;

/// A refused or failed control-plane request: the HTTP status and a message saying what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status code.
    pub status: u16,
    /// The message.
    pub message: String,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, m: impl Into<String>) -> ApiError {
        ApiError {
            status: status.as_u16(),
            message: m.into(),
        }
    }

    /// 400: the request is malformed or its values are invalid.
    pub fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, m)
    }

    /// 404: it names something that does not exist.
    pub fn not_found(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, m)
    }

    /// 409: it conflicts with the node's state.
    pub fn conflict(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, m)
    }

    /// 500: the node failed to do it.
    pub fn internal(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }
}

impl ApiError {
    /// A volume's refusal of a snapshot or clone operation: 404 for what does not exist, 409
    /// for what its state refuses (clones, a standby, a name taken), else 500.
    pub fn from_volume(e: blockstore::Error) -> ApiError {
        match e {
            blockstore::Error::NotFound(m) => ApiError::not_found(m),
            blockstore::Error::Busy(m) | blockstore::Error::Invalid(m) => ApiError::conflict(m),
            e => ApiError::internal(e.to_string()),
        }
    }
}
