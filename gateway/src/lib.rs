//! The Tandem gateway: the only crate that does I/O. It reads the configuration, opens the
//! volumes, runs the iSCSI and NVMe/TCP front ends over tokio sockets, and drives the sans-IO
//! protocol state machines of `proto-iscsi` and `proto-nvmeof` against `blockstore` volumes.

pub mod admin;
pub mod config;
pub mod counters;
pub mod driver;
pub mod exports;
pub mod frontends;
pub mod iscsi;
pub mod lu;
pub mod net;
pub mod nvme;
pub mod replication;
pub mod serve;
pub mod shutdown;
pub mod sink;
pub mod status;
pub mod target;
pub mod time;
pub mod volumes;
