//! Workloads for `tandem bench nvme`: a fixed queue depth of reads or writes, random or
//! sequential, for a duration, optionally verifying data; and the loopback TCP ceiling the
//! results are compared with (the same message sizes and queue depth over a plain socket).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{Error, Result};
use crate::host::{io, rw};
use crate::queue::{Data, Queue};

/// Which operation a workload issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Reads.
    Read,
    /// Writes.
    Write,
}

/// How a workload picks offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Uniformly random, aligned to the I/O size.
    Random,
    /// Consecutive, wrapping at the end of the span.
    Sequential,
}

/// A benchmark workload.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Namespace.
    pub nsid: u32,
    /// Operation.
    pub op: Op,
    /// Offset pattern.
    pub pattern: Pattern,
    /// Bytes per I/O (a multiple of the namespace block size).
    pub io_size: u32,
    /// Namespace logical block size.
    pub lba_size: u32,
    /// Blocks of the namespace the workload may touch.
    pub span_blocks: u64,
    /// Commands kept in flight.
    pub queue_depth: usize,
    /// How long to run.
    pub duration: Duration,
    /// Writes: read every block back and compare. Reads: check the returned length.
    pub verify: bool,
    /// Writes: set Force Unit Access (durable before completion).
    pub fua: bool,
    /// Writes: each worker sends a Flush after every this many of its writes (0: never); the
    /// flush counts in the latency of the write it follows.
    pub flush_every: u32,
}

/// What a run achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Report {
    /// Completed operations.
    pub ios: u64,
    /// Payload bytes moved.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Operations that failed or did not verify.
    pub errors: u64,
    /// Time from submitting each completed operation to its completion, summed.
    pub latency: Duration,
}

impl Report {
    /// Operations per second.
    pub fn iops(&self) -> f64 {
        self.ios as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Payload megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Mean time per completed operation.
    pub fn mean_latency(&self) -> Duration {
        self.latency / u32::try_from(self.ios.max(1)).unwrap_or(u32::MAX)
    }
}

fn pattern(lba: u64, seq: u64, len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len);
    let mut x = lba.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

/// Runs `w` on the I/O queues `queues` (spread round-robin) and reports.
pub async fn run(queues: &[Arc<Queue>], w: &Workload) -> Result<Report> {
    if queues.is_empty() || w.io_size == 0 || !w.io_size.is_multiple_of(w.lba_size.max(1)) {
        return Err(Error::Unexpected("bad workload".into()));
    }
    let blocks = w.io_size / w.lba_size;
    let slots = (w.span_blocks / u64::from(blocks)).max(1);
    let cursor = Arc::new(AtomicU64::new(0));
    let fixed = pattern(1, 1, w.io_size as usize);
    let start = Instant::now();
    let end = start + w.duration;
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..w.queue_depth.max(1) {
        let q = Arc::clone(&queues[i % queues.len()]);
        let (w, cursor, fixed) = (w.clone(), Arc::clone(&cursor), fixed.clone());
        workers.spawn(async move {
            let mut r = Report::default();
            let mut seq = i as u64;
            while Instant::now() < end {
                // Verifying workers own disjoint slots, so no other worker overwrites a block
                // between its write and read-back.
                let qd = w.queue_depth.max(1) as u64;
                let slot = match (w.pattern, w.verify) {
                    (Pattern::Random, false) => rand::thread_rng().gen_range(0..slots),
                    (Pattern::Random, true) => {
                        (rand::thread_rng().gen_range(0..(slots / qd).max(1)) * qd + i as u64)
                            % slots
                    }
                    (Pattern::Sequential, false) => cursor.fetch_add(1, Ordering::Relaxed) % slots,
                    (Pattern::Sequential, true) => {
                        ((cursor.fetch_add(1, Ordering::Relaxed) % (slots / qd).max(1)) * qd
                            + i as u64)
                            % slots
                    }
                };
                let lba = slot * u64::from(blocks);
                seq += w.queue_depth as u64;
                let issued = Instant::now();
                let ok = match w.op {
                    Op::Read => {
                        let sqe = rw(io::READ, w.nsid, lba, blocks, false);
                        match q
                            .submit(sqe, Data::Read(w.io_size))
                            .await
                            .and_then(|c| c.ok())
                        {
                            Ok(c) => !w.verify || c.data.len() == w.io_size as usize,
                            Err(_) => false,
                        }
                    }
                    Op::Write => {
                        let data = if w.verify {
                            pattern(lba, seq, w.io_size as usize)
                        } else {
                            fixed.clone()
                        };
                        let sqe = rw(io::WRITE, w.nsid, lba, blocks, w.fua);
                        let mut wrote = q
                            .submit(sqe, Data::Write(data.clone()))
                            .await
                            .and_then(|c| c.ok())
                            .is_ok();
                        if wrote && w.flush_every > 0 && (r.ios + 1) % u64::from(w.flush_every) == 0
                        {
                            let mut flush = proto_nvmeof::Sqe::new(io::FLUSH, 0);
                            flush.set_nsid(w.nsid);
                            wrote = q
                                .submit(flush, Data::None)
                                .await
                                .and_then(|c| c.ok())
                                .is_ok();
                        }
                        if wrote && w.verify {
                            let sqe = rw(io::READ, w.nsid, lba, blocks, false);
                            matches!(
                                q.submit(sqe, Data::Read(w.io_size)).await.and_then(|c| c.ok()),
                                Ok(c) if c.data == data
                            )
                        } else {
                            wrote
                        }
                    }
                };
                if ok {
                    r.ios += 1;
                    r.bytes += u64::from(w.io_size);
                    r.latency += issued.elapsed();
                } else {
                    r.errors += 1;
                    if q.closed().is_some() {
                        break;
                    }
                }
            }
            r
        });
    }
    let mut total = Report::default();
    while let Some(r) = workers.join_next().await {
        let r = r.map_err(|e| Error::Unexpected(format!("worker failed: {e}")))?;
        total.ios += r.ios;
        total.bytes += r.bytes;
        total.errors += r.errors;
        total.latency += r.latency;
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

/// NVMe/TCP framing around each message of the ceiling test: a 72-byte command capsule
/// header and a 16-byte response capsule (plus a 24-byte data PDU header when data flows).
const CMD: usize = 72;
const RESP: usize = 24;
const DATA_HDR: usize = 24;

/// The loopback TCP ceiling: `queue_depth` request/response exchanges kept in flight over
/// one plain TCP connection to an in-process echo server, each request carrying
/// `to_server` payload bytes and each answer `to_client`, with NVMe/TCP-sized headers.
/// What Tandem achieves is bounded by this; the ratio shows the protocol and storage cost.
pub async fn tcp_ceiling(
    to_server: usize,
    to_client: usize,
    queue_depth: usize,
    duration: Duration,
) -> Result<Report> {
    let req_len = CMD + if to_server > 0 { to_server } else { 0 };
    let resp_len = RESP
        + if to_client > 0 {
            DATA_HDR + to_client
        } else {
            0
        };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let Ok((s, _)) = listener.accept().await else {
            return;
        };
        let _ = s.set_nodelay(true);
        let (rd, mut wr) = s.into_split();
        let mut rd = BufReader::with_capacity(1 << 20, rd);
        let mut req = vec![0u8; req_len];
        let resp = vec![0x5Au8; resp_len];
        while rd.read_exact(&mut req).await.is_ok() {
            if wr.write_all(&resp).await.is_err() {
                return;
            }
        }
    });
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (rd, mut wr) = s.into_split();
    let (credit_tx, mut credit_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let writer = tokio::spawn(async move {
        let req = vec![0xA5u8; req_len];
        for _ in 0..queue_depth.max(1) {
            if wr.write_all(&req).await.is_err() {
                return;
            }
        }
        while credit_rx.recv().await.is_some() {
            if wr.write_all(&req).await.is_err() {
                return;
            }
        }
    });
    let mut rd = BufReader::with_capacity(1 << 20, rd);
    let mut resp = vec![0u8; resp_len];
    let start = Instant::now();
    let mut r = Report::default();
    while start.elapsed() < duration {
        rd.read_exact(&mut resp).await?;
        r.ios += 1;
        r.bytes += (to_server + to_client) as u64;
        let _ = credit_tx.send(());
    }
    r.elapsed = start.elapsed();
    drop(credit_tx);
    writer.abort();
    server.abort();
    Ok(r)
}
