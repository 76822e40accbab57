//! NVMe in-band authentication with DH-HMAC-CHAP (NVMe base 2.0 section 8.13): the fabrics
//! commands that carry it (Authentication Send / Receive), the protocol messages
//! ([`wire`]), secrets and the HMAC computations ([`secret`]), the RFC 7919 groups ([`dh`]),
//! and one state machine per side ([`ControllerAuth`] for the target, [`HostAuth`] for the
//! Rust initiator). All sans-IO: bytes and an RNG in, bytes out.
//!
//! A Connect to a subsystem whose host has a secret completes with ATR set in DW0; until the
//! queue has authenticated, every command but the authentication ones fails with
//! [`crate::Status::AUTH_REQUIRED`].

mod controller;
pub mod dh;
mod host;
pub mod secret;
pub mod wire;

#[cfg(test)]
mod tests;

pub use controller::{ControllerAuth, DhchapPolicy, SendOutcome};
pub use dh::DhGroup;
pub use host::{failure_explanation, Finish, HostAuth, HostAuthError};
pub use secret::{DhchapSecret, HashId, SecretError};
pub use wire::{AuthDecodeError, AuthMessage};

use crate::fabrics::fctype;
use crate::sqe::{Sgl, Sqe, OPC_FABRICS, SGL_IN_CAPSULE};

/// Connect response DW0 bit: authentication required (ATR) before other commands.
pub const CONNECT_ATR: u32 = 1 << 17;
/// Connect response DW0 bit: authentication and secure channel required (ASCR).
pub const CONNECT_ASCR: u32 = 1 << 18;
/// SECP of Authentication Send / Receive for DH-HMAC-CHAP.
pub const SECP_DHCHAP: u8 = 0xE9;
/// SPSP0 and SPSP1 of the authentication commands.
pub const SPSP: u8 = 0x01;
/// Largest TL / AL accepted. The messages are small (an ffdhe8192 Reply is 1168 bytes) and
/// Linux asks with AL 4096, but a host may offer a larger receive buffer; nothing is allocated
/// from these lengths (send data arrives through the transport's own limits).
pub const MAX_PAYLOAD: u32 = 1 << 16;

/// Why an Authentication Send / Receive command is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthCommandError {
    /// SECP, SPSP0 or SPSP1 do not name DH-HMAC-CHAP (the byte offset of the field).
    #[error("security protocol field at byte {0} is not DH-HMAC-CHAP's")]
    Protocol(u16),
    /// TL / AL is zero or above [`MAX_PAYLOAD`].
    #[error("transfer length {0} out of range")]
    Length(u32),
}

/// The length field (TL of Authentication Send, AL of Authentication Receive) after checking
/// the security protocol fields.
pub fn parse_command(sqe: &Sqe) -> Result<u32, AuthCommandError> {
    if sqe.0[43] != SECP_DHCHAP {
        return Err(AuthCommandError::Protocol(43));
    }
    if sqe.0[41] != SPSP {
        return Err(AuthCommandError::Protocol(41));
    }
    if sqe.0[42] != SPSP {
        return Err(AuthCommandError::Protocol(42));
    }
    let len = sqe.u32_at(44);
    if len == 0 || len > MAX_PAYLOAD {
        return Err(AuthCommandError::Length(len));
    }
    Ok(len)
}

/// An Authentication Send SQE carrying `len` bytes in the capsule (host side).
pub fn send_command(cid: u16, len: u32) -> Sqe {
    command(cid, fctype::AUTH_SEND, len, SGL_IN_CAPSULE)
}

/// An Authentication Receive SQE asking for up to `len` bytes (host side).
pub fn receive_command(cid: u16, len: u32) -> Sqe {
    command(cid, fctype::AUTH_RECEIVE, len, crate::sqe::SGL_TRANSPORT)
}

fn command(cid: u16, fc: u8, len: u32, ident: u8) -> Sqe {
    let mut sqe = Sqe::new(OPC_FABRICS, cid);
    sqe.0[4] = fc;
    sqe.set_sgl(Sgl {
        addr: 0,
        length: len,
        ident,
    });
    sqe.0[41] = SPSP;
    sqe.0[42] = SPSP;
    sqe.0[43] = SECP_DHCHAP;
    sqe.put(44, &len.to_le_bytes());
    sqe
}
