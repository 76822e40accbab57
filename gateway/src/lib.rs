//! The Tandem gateway: the only crate that does I/O. It reads the configuration, opens the
//! volumes, runs the iSCSI and NVMe/TCP front ends over tokio sockets, and drives the sans-IO
//! protocol state machines of `proto-iscsi` and `proto-nvmeof` against `blockstore` volumes.

pub mod aborts;
pub mod admin;
pub mod cluster;
pub mod config;
pub mod counters;
pub mod dashboard;
pub mod driver;
pub mod exports;
pub mod exposition;
pub mod frontends;
pub mod health;
pub mod iscsi;
pub mod lu;
pub mod metrics;
pub mod net;
pub mod nvme;
pub mod operator;
pub mod replication;
pub mod serve;
pub mod shutdown;
pub mod sink;
pub mod status;
pub mod target;
pub mod time;
pub mod volumes;
