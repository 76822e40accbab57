//! One block volume on one node: the storage engine under both protocol front ends.
//!
//! A volume is three files: a two-slot superblock, a circular write-ahead log, and a sparse
//! extent holding the data. Writes are acknowledged once logged; FLUSH / FUA share one
//! `fdatasync` of the log (group commit); a background flusher copies logged blocks into the
//! extent and advances the checkpoint. Recovery finds the end of the log from the records
//! themselves. The volume also owns its role on this node (role, persisted epoch, timed lease),
//! from which [`role::access_state`] derives the one access state both protocols show hosts.
//!
//! [`Engine`] is the synchronous core; [`Volume`] is the async API the gateway uses.

mod batch;
pub mod engine;
pub mod error;
pub mod executor;
mod extent_copy;
mod flusher;
pub mod index;
mod lease_timer;
pub mod record;
pub mod recovery;
pub mod role;
pub mod sim;
pub mod stats;
pub mod storage;
pub mod superblock;
pub mod testkit;
pub mod volume;

pub use engine::{create, CreateOptions, Engine, OpenOptions};
pub use error::{Error, Result};
pub use role::{AccessState, Role, RoleState};
pub use stats::StatsSnapshot;
pub use storage::{DirStorage, Storage};
pub use volume::Volume;
