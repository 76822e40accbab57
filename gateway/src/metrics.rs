//! The node's live metrics: what cannot be read from a snapshot of the node at scrape time
//! because it happens per command or per login: the latency of every block operation (a
//! histogram per volume, protocol and operation), the commands refused or failed by kind, and
//! failed logins and refused connects. The instruments are made once per node
//! ([`Metrics::new`]); each volume target holds its own handles ([`VolumeMetrics`]), so the data
//! path records without a map lookup. [`crate::exposition`] writes them, with everything the operator view
//! knows, as the Prometheus text `GET /metrics` serves.
//!
//! Besides the histograms, each volume keeps per protocol a running total of latency and a count
//! of executed commands ([`LatencyTotals`]), which the dashboard turns into a mean per sample.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use block_core::{BlockOp, BlockResult};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// The front end a command or login came through: the `protocol` label of every series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// iSCSI.
    Iscsi = 0,
    /// NVMe/TCP.
    Nvme = 1,
}

impl Protocol {
    /// Both, in label order.
    pub const ALL: [Protocol; 2] = [Protocol::Iscsi, Protocol::Nvme];

    /// The label value: `iscsi` or `nvme`.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Iscsi => "iscsi",
            Protocol::Nvme => "nvme",
        }
    }
}

/// The `op` label of a latency sample: what an operator tells apart in a latency graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Reads.
    Read = 0,
    /// Anything carrying data to the volume: writes, write-zeroes, compare-and-write.
    Write = 1,
    /// Cache flushes (SYNCHRONIZE CACHE, NVMe Flush).
    Flush = 2,
    /// Everything else that reaches the volume: trims, LBA status, reservation persistence.
    Other = 3,
}

impl Op {
    /// Every operation, in label order.
    pub const ALL: [Op; 4] = [Op::Read, Op::Write, Op::Flush, Op::Other];

    /// The operation a block operation is counted as.
    pub fn of(op: &BlockOp) -> Op {
        match op {
            BlockOp::Read { .. } => Op::Read,
            BlockOp::Write { .. }
            | BlockOp::WriteZeroes { .. }
            | BlockOp::CompareAndWrite { .. } => Op::Write,
            BlockOp::Flush => Op::Flush,
            _ => Op::Other,
        }
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Other => "other",
        }
    }
}

/// Why a command on a volume was not served: the `kind` label of `tandem_command_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The path's access state does not serve I/O: an ALUA NOT READY (iSCSI) or ANA path status
    /// (NVMe) answer.
    AccessState = 0,
    /// A reservation held by another host excludes the command.
    ReservationConflict = 1,
    /// The volume's storage failed (medium error, write fault).
    MediumError = 2,
    /// Anything else the target failed on (a bug or an unexpected volume error).
    Internal = 3,
    /// The storage under the volume is out of space (thin-provisioning write protect).
    SpaceExhausted = 4,
}

impl Refusal {
    /// Every kind, in label order.
    pub const ALL: [Refusal; 5] = [
        Refusal::AccessState,
        Refusal::ReservationConflict,
        Refusal::MediumError,
        Refusal::Internal,
        Refusal::SpaceExhausted,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::AccessState => "access_state",
            Refusal::ReservationConflict => "reservation_conflict",
            Refusal::MediumError => "medium_error",
            Refusal::Internal => "internal",
            Refusal::SpaceExhausted => "space_exhausted",
        }
    }

    /// The refusal a block result is, if it is one (a miscompare or an out-of-range request is
    /// the host's business, not the node's).
    pub fn of(r: &BlockResult) -> Option<Refusal> {
        match r {
            BlockResult::AccessState(_) => Some(Refusal::AccessState),
            BlockResult::ReservationConflict => Some(Refusal::ReservationConflict),
            BlockResult::MediumError => Some(Refusal::MediumError),
            BlockResult::Internal => Some(Refusal::Internal),
            BlockResult::SpaceExhausted => Some(Refusal::SpaceExhausted),
            _ => None,
        }
    }
}

/// Labels of a latency series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OpLabels {
    volume: String,
    protocol: String,
    op: String,
}

/// Labels of a command error series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ErrorLabels {
    volume: String,
    protocol: String,
    kind: String,
}

/// Labels of a login failure series (a login is refused before it reaches any volume).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LoginLabels {
    protocol: String,
    kind: String,
}

type HistogramFamily = Family<OpLabels, Histogram, fn() -> Histogram>;

/// Latency buckets: 10 µs doubling to about 10.5 s (21 buckets), so a page-cache read and a
/// stalled fdatasync both land in a bucket of their own.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(10e-6, 2.0, 21))
}

/// The node's live instruments.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub(crate) latency: HistogramFamily,
    pub(crate) errors: Family<ErrorLabels, Counter>,
    pub(crate) logins: Family<LoginLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty instruments for one node.
    pub fn new() -> Metrics {
        Metrics {
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            errors: Family::default(),
            logins: Family::default(),
        }
    }

    /// The handles of volume `name`: every series of the volume exists from now on (at zero),
    /// so a dashboard sees both protocols before the first command.
    pub fn volume(&self, name: &str) -> VolumeMetrics {
        let latency = Protocol::ALL.map(|p| {
            Op::ALL.map(|op| {
                self.latency
                    .get_or_create(&OpLabels {
                        volume: name.to_string(),
                        protocol: p.label().into(),
                        op: op.label().into(),
                    })
                    .clone()
            })
        });
        let errors = Protocol::ALL.map(|p| {
            Refusal::ALL.map(|k| {
                self.errors
                    .get_or_create(&ErrorLabels {
                        volume: name.to_string(),
                        protocol: p.label().into(),
                        kind: k.label().into(),
                    })
                    .clone()
            })
        });
        VolumeMetrics {
            latency,
            errors,
            totals: Arc::default(),
        }
    }

    /// Counts a failed iSCSI login or a refused NVMe Connect, by `kind` (`chap`,
    /// `not_authorized`, `refused`...).
    pub fn login_failed(&self, protocol: Protocol, kind: &str) {
        self.logins
            .get_or_create(&LoginLabels {
                protocol: protocol.label().into(),
                kind: kind.into(),
            })
            .inc();
    }
}

/// One volume's handles on the node's instruments, indexed by the enums' discriminants (the
/// order of their `ALL` lists).
#[derive(Debug, Clone)]
pub struct VolumeMetrics {
    latency: [[Histogram; 4]; 2],
    errors: [[Counter; 5]; 2],
    /// Per protocol: executed commands and their summed latency, shared by every clone.
    totals: Arc<[RunningTotals; 2]>,
}

/// One protocol's running totals, updated with relaxed atomics (no lock on the data path).
#[derive(Debug, Default)]
struct RunningTotals {
    commands: AtomicU64,
    nanos: AtomicU64,
}

/// What one protocol's commands on a volume took since the volume was opened: a reading of the
/// running totals, to be compared with an earlier reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyTotals {
    /// Block operations executed.
    pub commands: u64,
    /// Their latencies summed, in nanoseconds.
    pub nanos: u64,
}

impl VolumeMetrics {
    /// Records one executed block operation: its latency, and its result if a refusal.
    pub fn executed(&self, protocol: Protocol, op: Op, took: Duration, result: &BlockResult) {
        self.latency[protocol as usize][op as usize].observe(took.as_secs_f64());
        let t = &self.totals[protocol as usize];
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        t.nanos.fetch_add(nanos, Ordering::Relaxed);
        t.commands.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = Refusal::of(result) {
            self.refused(protocol, r);
        }
    }

    /// Counts a command refused before it reached the volume (by the protocol's logical unit,
    /// its reservation check or its ANA state).
    pub fn refused(&self, protocol: Protocol, why: Refusal) {
        self.errors[protocol as usize][why as usize].inc();
    }

    /// The running latency totals of each protocol, indexed like [`Protocol::ALL`]. The two
    /// counters are read apart, so a reading may count a command's latency without the command
    /// (or the other way round); over a sample interval that is noise.
    pub fn latency_totals(&self) -> [LatencyTotals; 2] {
        self.totals.each_ref().map(|t| LatencyTotals {
            commands: t.commands.load(Ordering::Relaxed),
            nanos: t.nanos.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_indexed_in_label_order() {
        for (i, p) in Protocol::ALL.into_iter().enumerate() {
            assert_eq!(p as usize, i);
        }
        for (i, o) in Op::ALL.into_iter().enumerate() {
            assert_eq!(o as usize, i);
        }
        for (i, r) in Refusal::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i);
        }
    }

    #[test]
    fn ops_and_refusals_are_labelled_by_kind() {
        assert_eq!(Op::of(&BlockOp::Flush), Op::Flush);
        assert_eq!(Op::of(&BlockOp::Read { lba: 0, blocks: 1 }), Op::Read);
        assert_eq!(Op::of(&BlockOp::PersistReservations), Op::Other);
        assert_eq!(
            Refusal::of(&BlockResult::AccessState(block_core::AccessState::Standby)),
            Some(Refusal::AccessState)
        );
        assert_eq!(Refusal::of(&BlockResult::Ok), None);
        assert_eq!(Refusal::of(&BlockResult::OutOfRange), None);
    }

    #[test]
    fn a_volume_records_in_its_own_series() {
        let m = Metrics::new();
        let a = m.volume("a");
        let _b = m.volume("b");
        a.executed(
            Protocol::Nvme,
            Op::Write,
            Duration::from_micros(30),
            &BlockResult::MediumError,
        );
        let text = crate::exposition::encode(&m, |_| {});
        assert!(
            text.contains(
                r#"tandem_command_latency_seconds_count{volume="a",protocol="nvme",op="write"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"tandem_command_latency_seconds_count{volume="b",protocol="nvme",op="write"} 0"#
        ));
        // 30 µs is above the 20 µs bucket and within the 40 µs one.
        let bucket = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("tandem_command_latency_seconds_bucket{")
                        && l.contains(&format!("le=\"{le}\""))
                        && l.contains(r#"volume="a",protocol="nvme",op="write""#)
                })
                .unwrap_or_else(|| panic!("no bucket le={le} in {text}"))
                .rsplit(' ')
                .next()
                .map(str::to_string)
        };
        assert_eq!(bucket("0.00002").as_deref(), Some("0"), "{text}");
        assert_eq!(bucket("0.00004").as_deref(), Some("1"), "{text}");
        assert!(text.contains(
            r#"tandem_command_errors_total{volume="a",protocol="nvme",kind="medium_error"} 1"#
        ));
        assert!(text.contains(
            r#"tandem_command_errors_total{volume="a",protocol="iscsi",kind="medium_error"} 0"#
        ));
    }

    #[test]
    fn latency_totals_are_per_protocol_and_shared_by_clones() {
        let a = Metrics::new().volume("a");
        let clone = a.clone();
        for us in [10, 30] {
            clone.executed(
                Protocol::Iscsi,
                Op::Read,
                Duration::from_micros(us),
                &BlockResult::Ok,
            );
        }
        a.refused(Protocol::Nvme, Refusal::AccessState);
        assert_eq!(
            a.latency_totals(),
            [
                LatencyTotals {
                    commands: 2,
                    nanos: 40_000
                },
                LatencyTotals::default()
            ]
        );
    }
}
