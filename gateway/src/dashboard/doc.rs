//! The document `GET /v1/dashboard` returns and the page renders: the rates and latency, the migration's
//! progress and the volumes. Kept apart so the page renderer and the history both use it without
//! depending on each other.

use serde::{Deserialize, Serialize};

use crate::status::VolumeStatus;

/// Per-second rates and mean latency of one protocol on one volume over one sample interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Bytes read per second.
    pub read_bytes: f64,
    /// Bytes written per second.
    pub write_bytes: f64,
    /// Read commands per second.
    pub reads: f64,
    /// Write commands per second.
    pub writes: f64,
    /// Other commands (flush, trim, inquiry, ...) per second.
    pub other: f64,
    /// Mean latency of the block operations executed over the interval, in microseconds;
    /// `None` (JSON `null`) when none ran.
    #[serde(default)]
    pub latency_us: Option<f64>,
}

/// One point of a volume's history: the rates of each protocol over the interval ending at `t`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// End of the interval, milliseconds since the Unix epoch.
    pub t_ms: u64,
    /// Hosts on iSCSI.
    pub iscsi: Rates,
    /// Hosts on NVMe/TCP.
    pub nvme: Rates,
}

/// The migration at a glance: distinct host names on each protocol, over every volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    /// Hosts (initiator IQNs) with an iSCSI session now.
    pub iscsi_hosts: usize,
    /// Hosts (host NQNs) with an NVMe/TCP controller now.
    pub nvme_hosts: usize,
    /// The hosts still on iSCSI, by initiator name: the ones left to move.
    pub still_on_iscsi: Vec<String>,
}

/// One volume's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeSeries {
    /// Volume name.
    pub volume: String,
    /// Oldest first, at most `dashboard::SAMPLES_KEPT` (five minutes).
    pub samples: Vec<Sample>,
}

/// The document `GET /v1/dashboard` returns: everything the page shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardDoc {
    /// Seconds between samples.
    pub sample_every_secs: u64,
    /// Hosts per protocol.
    pub migration: Migration,
    /// The volumes as `GET /v1/volumes` shows them.
    pub volumes: Vec<VolumeStatus>,
    /// Recent rates per volume and protocol.
    pub series: Vec<VolumeSeries>,
}
