//! The operator's dashboard on the admin port: `GET /` is a web page showing every volume with
//! its role, epoch and access state, the hosts on iSCSI and on NVMe/TCP, the migration's
//! progress, live throughput and latency; `GET /v1/dashboard` is the JSON the page's script
//! polls.
//!
//! It exists because the people running Tandem are moving a fleet from iSCSI to NVMe/TCP and
//! want to watch that move, not read `/v1/volumes`. The page is served by the daemon itself
//! (no external assets), so it works on a management network without internet access.
//!
//! Rates come from a short history ([`History`]) that a sampler task ([`spawn_sampler`]) fills
//! every [`SAMPLE_EVERY`] from the per-host I/O counters, summed per volume and protocol, and
//! the mean latency per volume and protocol from the running totals every volume keeps of its
//! executed commands ([`crate::metrics::LatencyTotals`]).

mod doc;
mod page;

pub use doc::{DashboardDoc, Migration, Rates, Sample, VolumeSeries};

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use crate::counters::IoSnapshot;
use crate::metrics::LatencyTotals;
use crate::status::{NodeView, VolumesDoc};

/// How often the sampler takes the counters.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How many samples each volume keeps: five minutes at [`SAMPLE_EVERY`].
pub const SAMPLES_KEPT: usize = 300;

/// Identity of one host's counters between samples: a reconnect is a new key.
type HostKey = (String, &'static str, String, String, u64);

/// The latency totals of every volume (by name), per protocol in [`crate::metrics::Protocol::ALL`]
/// order: what [`History::record`] takes besides the host counters.
pub type LatencyReading = BTreeMap<String, [LatencyTotals; 2]>;

/// The latency totals of every volume of `view` now.
pub fn latency_reading(view: &NodeView) -> LatencyReading {
    view.targets()
        .iter()
        .map(|(name, t)| (name.clone(), t.metrics().latency_totals()))
        .collect()
}

/// The previous reading, which the next sample is compared with.
#[derive(Debug)]
struct Last {
    at: Instant,
    hosts: BTreeMap<HostKey, IoSnapshot>,
    latency: LatencyReading,
}

#[derive(Debug, Default)]
struct Inner {
    last: Option<Last>,
    series: BTreeMap<String, VecDeque<Sample>>,
}

/// The recent rates of every volume, kept in memory by the admin API for the dashboard.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

fn rates(d: &IoSnapshot, secs: f64) -> Rates {
    Rates {
        read_bytes: d.read_bytes as f64 / secs,
        write_bytes: d.write_bytes as f64 / secs,
        reads: d.reads as f64 / secs,
        writes: d.writes as f64 / secs,
        other: d.other as f64 / secs,
        latency_us: None,
    }
}

/// The mean latency in microseconds of the commands counted between two readings; `None` when
/// none ran.
fn mean_latency_us(now: LatencyTotals, before: LatencyTotals) -> Option<f64> {
    let commands = now.commands.saturating_sub(before.commands);
    let nanos = now.nanos.saturating_sub(before.nanos);
    (commands > 0).then(|| nanos as f64 / commands as f64 / 1000.0)
}

fn delta(now: &IoSnapshot, before: &IoSnapshot) -> IoSnapshot {
    IoSnapshot {
        reads: now.reads.saturating_sub(before.reads),
        writes: now.writes.saturating_sub(before.writes),
        read_bytes: now.read_bytes.saturating_sub(before.read_bytes),
        write_bytes: now.write_bytes.saturating_sub(before.write_bytes),
        other: now.other.saturating_sub(before.other),
    }
}

impl History {
    /// Records one sample of `doc` and `latency` taken at `at` (`t_ms`: the same moment on the
    /// wall clock).
    ///
    /// Each host's counters are compared with its own previous reading; a host that connected
    /// since the last sample counts from zero, so attaching or leaving never shows as a spike or
    /// a negative rate. Each volume's latency totals are compared with the previous reading too:
    /// a sample's `latency_us` is the mean over the interval, `None` when no command ran. The
    /// first call only sets the baseline.
    pub fn record(&self, doc: &VolumesDoc, latency: &LatencyReading, at: Instant, t_ms: u64) {
        let mut now = BTreeMap::new();
        for v in &doc.volumes {
            for (proto, list) in [("iscsi", &v.hosts.iscsi), ("nvme", &v.hosts.nvme)] {
                for h in list {
                    let key = (
                        v.name.clone(),
                        proto,
                        h.host.clone(),
                        h.address.clone(),
                        h.since_unix,
                    );
                    now.insert(key, h.io);
                }
            }
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = &inner.last {
            let before = &last.hosts;
            let idle = [LatencyTotals::default(); 2];
            let secs = at.saturating_duration_since(last.at).as_secs_f64();
            if secs > 0.0 {
                let mut sums: BTreeMap<&str, [IoSnapshot; 2]> = doc
                    .volumes
                    .iter()
                    .map(|v| (v.name.as_str(), Default::default()))
                    .collect();
                for (key, io) in &now {
                    let d = delta(io, before.get(key).unwrap_or(&IoSnapshot::default()));
                    if let Some(s) = sums.get_mut(key.0.as_str()) {
                        s[usize::from(key.1 == "nvme")].add(&d);
                    }
                }
                let added: Vec<(String, Sample)> = sums
                    .into_iter()
                    .map(|(name, [i, n])| {
                        let took = latency.get(name).unwrap_or(&idle);
                        let took_before = last.latency.get(name).unwrap_or(&idle);
                        let mut sample = Sample {
                            t_ms,
                            iscsi: rates(&i, secs),
                            nvme: rates(&n, secs),
                        };
                        sample.iscsi.latency_us = mean_latency_us(took[0], took_before[0]);
                        sample.nvme.latency_us = mean_latency_us(took[1], took_before[1]);
                        (name.to_string(), sample)
                    })
                    .collect();
                for (name, sample) in added {
                    let ring = inner.series.entry(name).or_default();
                    if ring.len() == SAMPLES_KEPT {
                        ring.pop_front();
                    }
                    ring.push_back(sample);
                }
            }
        }
        inner.last = Some(Last {
            at,
            hosts: now,
            latency: latency.clone(),
        });
    }

    /// The samples of volume `name`, oldest first.
    pub fn samples(&self, name: &str) -> Vec<Sample> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .series
            .get(name)
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// Counts the distinct hosts on each protocol over every volume.
pub fn migration(doc: &VolumesDoc) -> Migration {
    let mut iscsi = BTreeSet::new();
    let mut nvme = BTreeSet::new();
    for v in &doc.volumes {
        iscsi.extend(v.hosts.iscsi.iter().map(|h| h.host.clone()));
        nvme.extend(v.hosts.nvme.iter().map(|h| h.host.clone()));
    }
    Migration {
        iscsi_hosts: iscsi.len(),
        nvme_hosts: nvme.len(),
        still_on_iscsi: iscsi.into_iter().collect(),
    }
}

/// What the page shows now.
pub fn document(view: &NodeView, history: &History) -> DashboardDoc {
    let doc = view.volumes();
    let series = doc
        .volumes
        .iter()
        .map(|v| VolumeSeries {
            volume: v.name.clone(),
            samples: history.samples(&v.name),
        })
        .collect();
    DashboardDoc {
        sample_every_secs: SAMPLE_EVERY.as_secs(),
        migration: migration(&doc),
        volumes: doc.volumes,
        series,
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Starts the task that samples `view`'s counters into `history` every [`SAMPLE_EVERY`] until
/// `shutdown` is raised.
pub fn spawn_sampler(
    view: Arc<NodeView>,
    history: Arc<History>,
    shutdown: &crate::shutdown::Shutdown,
) -> tokio::task::JoinHandle<()> {
    let mut stop = shutdown.subscribe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let latency = latency_reading(&view);
            history.record(&view.volumes(), &latency, Instant::now(), unix_ms());
        }
    })
}

fn reply(content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

/// Answers the dashboard's paths (`/`, `/v1/dashboard`); `None` for any other path.
pub fn route(view: &NodeView, history: &History, path: &str) -> Option<Response<Full<Bytes>>> {
    match path {
        "/" => Some(reply(
            "text/html; charset=utf-8",
            page::render(&document(view, history)),
        )),
        "/v1/dashboard" => Some(match serde_json::to_string(&document(view, history)) {
            Ok(json) => reply("application/json", json),
            Err(e) => {
                let mut r = reply("text/plain", e.to_string());
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                r
            }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{HostStatus, Hosts, VolumeStatus};

    fn doc(iscsi: &[(&str, IoSnapshot)], nvme: &[(&str, IoSnapshot)]) -> VolumesDoc {
        let host = |(name, io): &(&str, IoSnapshot)| HostStatus {
            host: name.to_string(),
            via: "t".into(),
            address: "127.0.0.1:1".into(),
            since_unix: 7,
            io: *io,
            portal: None,
            relative_port: None,
            cntlid: None,
        };
        let json = serde_json::json!({
            "name": "v", "uuid": "u", "size_bytes": 0, "block_size": 512, "role": "primary",
            "epoch": 1, "access_state": "optimized",
            "engine": {"reads":0,"writes":0,"read_bytes":0,"write_bytes":0,"flushes":0,
                       "flusher_runs":0,"log_used_bytes":0,"log_size_bytes":0,"dirty_blocks":0},
            "exports": {"iscsi": [], "nvme": []},
            "reservation": {"generation": 0, "kind": null, "holder": null, "registrants": []},
            "hosts": {"iscsi": [], "nvme": []}
        });
        let mut v: VolumeStatus = serde_json::from_value(json).unwrap();
        v.hosts = Hosts {
            iscsi: iscsi.iter().map(host).collect(),
            nvme: nvme.iter().map(host).collect(),
        };
        VolumesDoc {
            volumes: vec![v],
            unavailable: Vec::new(),
            cluster: None,
        }
    }

    fn io(reads: u64, read_bytes: u64) -> IoSnapshot {
        IoSnapshot {
            reads,
            read_bytes,
            ..IoSnapshot::default()
        }
    }

    /// No latency totals for any volume (they read as zero).
    fn none() -> LatencyReading {
        LatencyReading::new()
    }

    /// Latency totals of volume `v`: (commands, nanoseconds) on iSCSI and on NVMe/TCP.
    fn latency(iscsi: (u64, u64), nvme: (u64, u64)) -> LatencyReading {
        let t = |(commands, nanos)| LatencyTotals { commands, nanos };
        LatencyReading::from([("v".to_string(), [t(iscsi), t(nvme)])])
    }

    #[test]
    fn latency_is_the_mean_over_the_interval_per_protocol_and_none_when_idle() {
        let h = History::default();
        let t0 = Instant::now();
        let d = doc(&[("i", io(0, 0))], &[("n", io(0, 0))]);
        h.record(&d, &latency((10, 5_000_000), (4, 400_000)), t0, 0);
        // iSCSI: 20 commands taking 5 ms in all (250 µs each); NVMe/TCP: 6 taking 0.3 ms (50 µs)
        let t1 = t0 + SAMPLE_EVERY;
        h.record(&d, &latency((30, 10_000_000), (10, 700_000)), t1, 1000);
        // idle: the totals do not move
        let t2 = t1 + SAMPLE_EVERY;
        h.record(&d, &latency((30, 10_000_000), (10, 700_000)), t2, 2000);
        let s = h.samples("v");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].iscsi.latency_us, Some(250.0));
        assert_eq!(s[0].nvme.latency_us, Some(50.0));
        assert_eq!((s[1].iscsi.latency_us, s[1].nvme.latency_us), (None, None));
        // no totals at all (a volume without commands yet) is idle too
        h.record(&d, &none(), t2 + SAMPLE_EVERY, 3000);
        assert_eq!(h.samples("v")[2].iscsi.latency_us, None);
        let json = serde_json::to_value(s[0]).unwrap();
        assert_eq!(json["nvme"]["latency_us"], 50.0);
    }

    #[test]
    fn rates_are_per_protocol_and_per_second_and_a_new_host_counts_from_zero() {
        let h = History::default();
        let t0 = Instant::now();
        h.record(&doc(&[("i", io(10, 5120))], &[]), &none(), t0, 0);
        assert!(
            h.samples("v").is_empty(),
            "the first reading is the baseline"
        );
        let t1 = t0 + Duration::from_secs(2);
        h.record(
            &doc(&[("i", io(30, 15360))], &[("n", io(4, 16384))]),
            &none(),
            t1,
            2000,
        );
        let s = h.samples("v");
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].iscsi.reads, s[0].iscsi.read_bytes), (10.0, 5120.0));
        assert_eq!((s[0].nvme.reads, s[0].nvme.read_bytes), (2.0, 8192.0));
        // the iSCSI host leaves: no negative rate
        h.record(
            &doc(&[], &[("n", io(4, 16384))]),
            &none(),
            t1 + SAMPLE_EVERY,
            3000,
        );
        let s = h.samples("v");
        assert_eq!(
            (s[1].iscsi, s[1].nvme),
            (Rates::default(), Rates::default())
        );
    }

    #[test]
    fn the_ring_keeps_the_last_minutes_only() {
        let h = History::default();
        let t0 = Instant::now();
        for i in 0..(SAMPLES_KEPT as u64 + 20) {
            h.record(
                &doc(&[], &[("n", io(i, 0))]),
                &none(),
                t0 + SAMPLE_EVERY * i as u32,
                i,
            );
        }
        let s = h.samples("v");
        assert_eq!(s.len(), SAMPLES_KEPT);
        assert_eq!(s.last().unwrap().t_ms, SAMPLES_KEPT as u64 + 19);
        assert_eq!(s[0].t_ms, 20);
    }

    #[test]
    fn migration_counts_distinct_hosts_per_protocol() {
        let d = doc(
            &[("iqn.b", io(0, 0)), ("iqn.a", io(0, 0))],
            &[("nqn.c", io(0, 0))],
        );
        let m = migration(&d);
        assert_eq!((m.iscsi_hosts, m.nvme_hosts), (2, 1));
        assert_eq!(m.still_on_iscsi, ["iqn.a", "iqn.b"]);
    }
}
