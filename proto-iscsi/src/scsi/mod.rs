//! Sans-IO SCSI block device emulation (SPC-4 / SBC-3) of one logical unit.
//!
//! The SCSI layer knows nothing about iSCSI PDUs: it sees CDB bytes, a data-out buffer and the
//! [`Nexus`] a command came through. [`LogicalUnit::start`] returns a [`Step`]: finished, needs
//! data-out, or needs one [`BlockOp`] performed on the volume by the caller. Suspended commands
//! are plain [`PendingTask`] values, so any number can be in flight.

pub mod absent;
pub mod alua;
pub mod capacity;
pub mod cdb;
pub mod config;
pub mod fuzz;
pub mod inquiry;
pub mod luns;
pub mod mode;
pub mod opcodes;
pub mod pr;
pub mod pr_cmd;
pub mod rw;
pub mod sense;
pub mod task;
pub mod unit;
pub mod vpd;

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
