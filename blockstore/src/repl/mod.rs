//! Primary/standby replication of a volume (issue 12).
//!
//! Sans-IO like the protocol crates: this module turns bytes into typed messages and back and
//! holds the state machines; the I/O driver (tokio, sockets) lives outside it, so the whole
//! protocol runs under the deterministic simulation tests without a network.

pub mod frame;
pub mod primary;
pub mod standby;
