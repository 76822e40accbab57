//! The Tandem gateway: the only crate that does I/O. It reads the configuration, opens the
//! volumes, runs the iSCSI and NVMe/TCP front ends over tokio sockets, and drives the sans-IO
//! protocol state machines of `proto-iscsi` and `proto-nvmeof` against `blockstore` volumes.

pub mod aborts;
pub mod admin;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod control;
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
pub mod paths;
pub mod replication;
pub mod resize;
pub mod serve;
pub mod served;
pub mod shutdown;
pub mod sink;
pub mod status;
pub mod target;
pub mod time;
pub mod token;
pub mod volumes;
