//! Sans-IO iSCSI target protocol.
//!
//! This crate never touches a socket, a file or a clock: it turns bytes into typed PDUs, runs the
//! login and full-feature state machines, and turns SCSI commands into block requests that the
//! `gateway` crate carries out against a `blockstore` volume.

pub mod chap;
pub mod login;
pub mod pdu;
pub mod scsi;
pub mod session;
mod text;
