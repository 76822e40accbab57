//! Sans-IO NVMe/TCP target core: PDU codec, NVMe command structures, the fabrics/admin/I/O
//! controller state machine, discovery, ANA and the per-connection transport.
//!
//! Nothing in this crate performs I/O or reads a clock. The gateway feeds a [`Connection`] the
//! bytes it read from a socket together with the current time, sends the bytes the connection
//! produces, and performs the [`Event`]s it emits: admitting a Connect against the shared
//! [`Registry`], and running [`IoOp`]s against the volume. Completions come back through
//! [`Connection::connect_done`] and [`Connection::io_done`], tagged with the command's CID, so
//! any number of commands can be in flight per queue.

pub mod auth;
mod cqe;
pub mod discovery;
pub mod fabrics;
mod features;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
mod ident;
pub mod identify;
mod io;
pub mod logpage;
mod padded;
pub mod pdu;
mod registry;
pub mod reservation;
pub mod resv_notice;
pub mod sqe;
mod status;
mod subsystem;
mod transport;

mod admin;
mod controller;

pub use controller::Controller;
pub use cqe::Cqe;
pub use discovery::{AddressFamily, DiscoveryEntry, DiscoveryLog, Portal, DISCOVERY_NQN};
pub use features::WriteCache;
pub use ident::{namespace_ids, NamespaceIds};
pub use io::{IoOp, IoResult, IoTag};
pub use pdu::{Pdu, PduError};
pub use registry::{Admission, ConnectRequest, Registry};
pub use reservation::{ReservationOutcome, ReservationReport, ReservationRequest, ReservationType};
pub use sqe::Sqe;
pub use status::Status;
pub use subsystem::{AnaGroup, AnaState, Namespace, Subsystem, TargetConfig};
pub use transport::{CloseReason, Connection, Event};
