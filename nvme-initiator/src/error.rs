//! Why an initiator operation failed, typed by who is at fault: the network, the target's
//! protocol behaviour, or a command the target completed with an error status.

use proto_nvmeof::Status;

/// Errors of the initiator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The target sent a PDU that does not decode.
    #[error("malformed PDU from the target: {0}")]
    Pdu(#[from] proto_nvmeof::PduError),
    /// The target answered with something the protocol does not allow here.
    #[error("unexpected answer from the target: {0}")]
    Unexpected(String),
    /// The command completed with an error status.
    #[error("command failed with status {status:?} (SCT {sct}, SC {sc:#04x}, DNR {dnr}), DW0 {dw0:#x}", sct = status.sct(), sc = status.sc(), dnr = status.is_dnr())]
    Status {
        /// The status.
        status: Status,
        /// Completion DW0 (e.g. IATTR/IPO of a refused Connect).
        dw0: u32,
    },
    /// The connection is gone.
    #[error("connection closed: {0}")]
    Closed(String),
    /// In-band authentication (DH-HMAC-CHAP) failed or could not start.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The controller did not become ready in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
