//! `tandem bench nvme`: runs a workload with the Rust initiator against any NVMe/TCP target
//! and prints IOPS and MB/s, optionally beside the loopback TCP ceiling for the same message
//! sizes and queue depth.

use std::net::SocketAddr;
use std::time::Duration;

use nvme_initiator::bench::{self, Op, Pattern, Report, Workload};
use nvme_initiator::{Controller, Digests, HostOptions};

/// Arguments of `tandem bench nvme`.
#[derive(Debug, Clone, clap::Args)]
pub struct NvmeBenchArgs {
    /// Target portal address.
    #[arg(long, default_value = "127.0.0.1:4420")]
    pub addr: SocketAddr,
    /// Subsystem NQN.
    #[arg(long, default_value = super::config::DEFAULT_NQN)]
    pub nqn: String,
    /// Host NQN to connect as.
    #[arg(long, default_value_t = HostOptions::default().hostnqn)]
    pub hostnqn: String,
    /// Namespace id.
    #[arg(long, default_value_t = 1)]
    pub nsid: u32,
    /// Commands in flight.
    #[arg(long, default_value_t = 32)]
    pub qd: usize,
    /// Bytes per I/O.
    #[arg(long, default_value_t = 4096)]
    pub bs: u32,
    /// read or write.
    #[arg(long, default_value = "read")]
    pub op: String,
    /// rand or seq.
    #[arg(long, default_value = "rand")]
    pub pattern: String,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Number of I/O queues (connections).
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
    /// Verify data (writes are read back; disjoint blocks per in-flight slot).
    #[arg(long)]
    pub verify: bool,
    /// Ask for header and data digests.
    #[arg(long)]
    pub digests: bool,
    /// Touch only the first this many MiB of the namespace (0: all of it).
    #[arg(long, default_value_t = 0)]
    pub span_mib: u64,
    /// Also measure the loopback TCP ceiling for the same sizes and queue depth.
    #[arg(long)]
    pub tcp_ceiling: bool,
    /// Writes with Force Unit Access (durable, and on a replicated volume on the standby too,
    /// before completion).
    #[arg(long)]
    pub fua: bool,
    /// Each in-flight slot sends a Flush after every this many writes (0: never).
    #[arg(long, default_value_t = 0)]
    pub flush_every: u32,
}

fn line(label: &str, r: &Report) -> String {
    format!(
        "{label:<34} {:>10.0} IOPS {:>9.1} MB/s {:>9.1} us mean  ({} I/Os, {} errors, {:.1} s)",
        r.iops(),
        r.mb_per_s(),
        r.mean_latency().as_secs_f64() * 1e6,
        r.ios,
        r.errors,
        r.elapsed.as_secs_f64()
    )
}

/// Runs the benchmark and prints the results.
pub async fn run(a: NvmeBenchArgs) -> Result<(), String> {
    let op = match a.op.as_str() {
        "read" => Op::Read,
        "write" => Op::Write,
        o => return Err(format!("--op {o:?}: use read or write")),
    };
    let pattern = match a.pattern.as_str() {
        "rand" | "random" => Pattern::Random,
        "seq" | "sequential" => Pattern::Sequential,
        p => return Err(format!("--pattern {p:?}: use rand or seq")),
    };
    let opts = HostOptions {
        hostnqn: a.hostnqn.clone(),
        digests: Digests {
            header: a.digests,
            data: a.digests,
        },
        io_queues: a.queues.max(1),
        queue_depth: a.qd.clamp(1, 1023) as u16,
        ..HostOptions::default()
    };
    let c = Controller::connect(a.addr, &a.nqn, &opts)
        .await
        .map_err(|e| format!("connecting to {} {}: {e}", a.addr, a.nqn))?;
    let ns = c
        .identify_namespace(a.nsid)
        .await
        .map_err(|e| format!("identify namespace {}: {e}", a.nsid))?;
    let span = if a.span_mib == 0 {
        ns.nsze
    } else {
        ((a.span_mib << 20) / u64::from(ns.block_size)).min(ns.nsze)
    };
    let w = Workload {
        nsid: a.nsid,
        op,
        pattern,
        io_size: a.bs,
        lba_size: ns.block_size,
        span_blocks: span,
        queue_depth: a.qd,
        duration: Duration::from_secs_f64(a.duration),
        verify: a.verify,
        fua: a.fua,
        flush_every: a.flush_every,
    };
    let r = bench::run(&c.io, &w).await.map_err(|e| e.to_string())?;
    let mut label = format!("nvme {} {} bs={} qd={}", a.pattern, a.op, a.bs, a.qd);
    if a.fua {
        label.push_str(" fua");
    }
    if a.flush_every > 0 {
        label.push_str(&format!(" flush/{}", a.flush_every));
    }
    println!(
        "{}  [in-capsule limit {} B]",
        line(&label, &r),
        c.identify.in_capsule_bytes()
    );
    if a.tcp_ceiling {
        let (up, down) = match op {
            Op::Read => (0, a.bs as usize),
            Op::Write => (a.bs as usize, 0),
        };
        let t = bench::tcp_ceiling(up, down, a.qd, w.duration)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "{}",
            line(&format!("tcp ceiling bs={} qd={}", a.bs, a.qd), &t)
        );
        println!(
            "{:<34} {:>9.1} %",
            "tandem / ceiling",
            100.0 * r.iops() / t.iops().max(1e-9)
        );
    }
    let _ = c.shutdown().await;
    if r.errors > 0 {
        return Err(format!("{} I/Os failed", r.errors));
    }
    Ok(())
}
