//! One block volume on one node: the storage engine under both protocol front ends.
//!
//! A volume is three files: a two-slot superblock, a circular write-ahead log, and a sparse
//! extent holding the data. Writes are acknowledged once logged; FLUSH / FUA share one
//! `fdatasync` of the log (group commit); a background flusher copies logged blocks into the
//! extent and advances the checkpoint. Recovery finds the end of the log from the records
//! themselves. The volume also owns its role on this node (role, persisted epoch, timed lease),
//! from which [`role::access_state`] derives the one access state both protocols show hosts.
//!
//! Snapshots are copy-on-write at the flusher: before a checkpoint overwrites an extent block
//! the newest snapshot still needs, the old block goes to that snapshot's delta store
//! ([`snapshot`], `cow`). Taking and deleting one are log records, so a standby does the same
//! at the same position. A [`clone`] is a volume of its own reading the blocks it never wrote
//! from its origin snapshot; a read-only clone is how a snapshot is exported.
//!
//! [`Engine`] is the synchronous core; [`Volume`] is the async API the gateway uses.
//! [`repl`] holds primary/standby replication, sans-IO: its wire format and state machines.
//!
//! With the `testkit` feature the crate also exports what its crash tests, the crash-loop child
//! and the benchmarks share: a simulated disk that loses power (`sim`), self-identifying block
//! contents and a view of the log record format (`testkit`). Production users leave it off.

mod backing;
mod batch;
mod blockmap;
pub mod clone;
mod cow;
pub mod engine;
pub mod error;
mod executor;
mod extent_copy;
mod flusher;
mod grow;
mod handover;
mod index;
mod lease_timer;
mod record;
mod recovery;
pub mod repl;
pub mod replica;
mod replica_apply;
mod replica_gate;
pub mod resync;
pub mod role;
pub mod role_machine;
#[cfg(feature = "testkit")]
pub mod sim;
pub mod snapshot;
mod snapshot_ops;
mod stats;
pub mod storage;
mod superblock;
#[cfg(feature = "testkit")]
pub mod testkit;
#[cfg(feature = "testkit")]
pub mod tmpfs;
pub mod volume;
mod worker;

pub use clone::{clone_origin, create_clone, CloneOptions, CloneOrigin, SnapshotView};
pub use engine::{create, CreateOptions, Engine, OpenOptions};
pub use error::{Error, Result};
pub use role::{AccessState, Role, RoleState};
pub use snapshot::SnapshotInfo;
pub use stats::StatsSnapshot;
pub use storage::{DirStorage, Storage};
pub use volume::Volume;
