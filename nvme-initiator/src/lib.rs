//! An NVMe/TCP host (initiator) on tokio, written to exercise Tandem's target end to end and
//! to measure it: connect a controller (ICReq, admin Connect, Property Get/Set, Identify,
//! I/O queue Connects), issue reads, writes and flushes at any queue depth with in-capsule
//! data or R2T/H2CData, optional header/data digests, keep-alive, and discovery.
//!
//! It reuses the PDU codec and command encoders of `proto-nvmeof`, so the bytes on the wire
//! come from the same definitions the target decodes, checked against the specification by
//! that crate's tests.

mod auth;
pub mod bench;
pub mod discovery;
pub mod error;
pub mod host;
pub mod identify;
pub mod queue;

pub use discovery::{DiscoveryLogPage, DiscoveryRecord};
pub use error::{Error, Result};
pub use host::{Controller, HostOptions};
pub use identify::{AnaLog, IdentifyController, IdentifyNamespace};
pub use proto_nvmeof::pdu::Digests;
pub use queue::{Completion, Data, Queue};

#[cfg(test)]
mod tests;
