//! The protocol-neutral core of a block target.
//!
//! Tandem serves one volume over iSCSI and NVMe/TCP at once. The two protocol crates describe
//! the same things in their own wire forms (ALUA states and ANA states, SCSI persistent
//! reservations and NVMe reservations, CDBs and NVM commands); this crate is the one
//! vocabulary both translate to, so the gateway executes, checks and persists each thing once:
//!
//! - [`AccessState`]: what a path to the volume on this node may do, derived from the volume's
//!   role; shown to SCSI hosts as an ALUA state and to NVMe hosts as an ANA state.
//! - [`BlockOp`] / [`BlockResult`]: one operation on the volume and its outcome.
//! - [`reservation`]: the volume's one reservation state, its registrants typed by protocol,
//!   the rules of every operation on it, the access check, and the notices a change raises.
//!
//! Like the protocol crates it is sans-IO: no sockets, files, clocks or runtime. It depends on
//! neither protocol crate; both depend on it.

#![forbid(unsafe_code)]

mod access;
mod op;
pub mod reservation;

pub use access::AccessState;
pub use op::{BlockOp, BlockResult, IoKind, LbaExtent, Provisioning};
pub use reservation::{
    Access, Notice, Registrant, ReservationError, ReservationType, Reservations, SharedReservations,
};
