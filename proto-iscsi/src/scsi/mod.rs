//! Sans-IO SCSI block device emulation (SPC-4 / SBC-3) of one logical unit.
//!
//! The SCSI layer knows nothing about iSCSI PDUs: it sees CDB bytes, a data-out buffer and the
//! [`Nexus`] a command came through. [`LogicalUnit::start`] returns a [`Step`]: finished, needs
//! data-out, or needs one [`BlockOp`] performed on the volume by the caller. Suspended commands
//! are plain [`PendingTask`] values, so any number can be in flight.

mod absent;
mod alua;
mod capacity;
mod cdb;
mod config;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
mod inquiry;
mod luns;
mod mode;
mod opcodes;
pub mod pr;
mod pr_cmd;
mod rw;
pub(crate) mod sense;
mod task;
mod unit;
mod vpd;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testvol;

pub use absent::absent_lun;
pub use alua::{AccessState, Alua, PortGroup};
pub use config::LuConfig;
pub use sense::{Sense, SenseKey};
pub use task::{
    Begun, BlockOp, BlockResult, Completion, LbaExtent, Nexus, PendingTask, Provisioning, Status,
    Step,
};
pub use unit::LogicalUnit;
