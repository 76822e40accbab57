//! Engine benchmark: the engine and a raw-file baseline doing the same work, in one run, on the
//! same file system, printing each figure and the ratio engine / raw.
//!
//! `cargo bench -p blockstore` (set TANDEM_BENCH_DIR to choose the file system; default: the
//! system temporary directory; TANDEM_BENCH_SCALE multiplies the operation counts).
//!
//! Workloads: 4 KiB random writes with a flush every 32 writes; 4 KiB random reads after the
//! flusher has run; 1 MiB sequential writes; single-threaded 4 KiB write + FUA latency.

use std::fs::{File, OpenOptions as FsOpen};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use blockstore::engine::{create, CreateOptions, Engine, OpenOptions};
use blockstore::sim::SimRng;
use blockstore::DirStorage;

const BS: usize = 4096;
const CAPACITY: u64 = 1 << 30;
const BLOCKS: u64 = CAPACITY / BS as u64;

fn scale() -> u64 {
    std::env::var("TANDEM_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn raw_file(dir: &std::path::Path) -> File {
    let f = FsOpen::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("raw"))
        .unwrap();
    f.set_len(CAPACITY).unwrap();
    f
}

fn report(name: &str, unit: &str, engine: f64, raw: f64, target: Option<(&str, f64)>) {
    let ratio = engine / raw;
    let verdict = match target {
        Some((rel, t)) => {
            let ok = if rel == ">=" { ratio >= t } else { ratio <= t };
            format!("target {rel} {t:.2}: {}", if ok { "met" } else { "MISSED" })
        }
        None => String::from("no target"),
    };
    println!("{name:<44} engine {engine:>12.1} {unit:<6} raw {raw:>12.1} {unit:<6} ratio {ratio:>5.2}  ({verdict})");
}

fn main() {
    let base = std::env::var_os("TANDEM_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base).unwrap();
    println!(
        "engine benchmark in {} (4 KiB blocks, 1 GiB volume, 256 MiB log)",
        base.display()
    );
    let storage = DirStorage::new(dir.path().join("vol"));
    create(
        &storage,
        &CreateOptions {
            block_size: BS as u32,
            capacity_bytes: CAPACITY,
            wal_bytes: 256 << 20,
            ..CreateOptions::default()
        },
    )
    .unwrap();
    let engine = Engine::open(&storage, OpenOptions::default()).unwrap();
    let raw = raw_file(dir.path());
    let buf = vec![0xA5u8; BS];
    let n = 16_000 * scale();

    // 1. Random 4 KiB writes, a flush every 32.
    let mut rng = SimRng::new(1);
    let t = Instant::now();
    for i in 1..=n {
        raw.write_all_at(&buf, rng.below(BLOCKS) * BS as u64)
            .unwrap();
        if i % 32 == 0 {
            raw.sync_data().unwrap();
        }
    }
    raw.sync_data().unwrap();
    let raw_iops = n as f64 / t.elapsed().as_secs_f64();
    let mut rng = SimRng::new(1);
    let t = Instant::now();
    for i in 1..=n {
        engine.write(rng.below(BLOCKS), &buf, false).unwrap();
        if i % 32 == 0 {
            engine.flush().unwrap();
        }
    }
    engine.flush().unwrap();
    let eng_iops = n as f64 / t.elapsed().as_secs_f64();
    report(
        "4 KiB random write, flush every 32",
        "IOPS",
        eng_iops,
        raw_iops,
        Some((">=", 0.5)),
    );

    // 2. Random 4 KiB reads after the flusher has run.
    while engine.flush_once().unwrap() {}
    assert_eq!(engine.stats().dirty_blocks, 0);
    let reads = 4 * n;
    let mut rbuf = vec![0u8; BS];
    let mut rng = SimRng::new(2);
    let t = Instant::now();
    for _ in 0..reads {
        raw.read_exact_at(&mut rbuf, rng.below(BLOCKS) * BS as u64)
            .unwrap();
    }
    let raw_r = reads as f64 / t.elapsed().as_secs_f64();
    let mut rng = SimRng::new(2);
    let t = Instant::now();
    for _ in 0..reads {
        engine.read_into(rng.below(BLOCKS), &mut rbuf).unwrap();
    }
    let eng_r = reads as f64 / t.elapsed().as_secs_f64();
    report(
        "4 KiB random read after flusher",
        "IOPS",
        eng_r,
        raw_r,
        Some((">=", 0.8)),
    );

    // 3. 1 MiB sequential writes.
    let big = vec![0x5Au8; 1 << 20];
    let mb = 512 * scale().min(2);
    let t = Instant::now();
    for i in 0..mb {
        raw.write_all_at(&big, (i % 1024) << 20).unwrap();
    }
    raw.sync_data().unwrap();
    let raw_mb = mb as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..mb {
        engine
            .write(((i % 1024) << 20) / BS as u64, &big, false)
            .unwrap();
    }
    engine.flush().unwrap();
    let eng_mb = mb as f64 / t.elapsed().as_secs_f64();
    report("1 MiB sequential write", "MiB/s", eng_mb, raw_mb, None);

    // 4. Single-threaded 4 KiB write + FUA latency.
    while engine.flush_once().unwrap() {}
    let ops = 2_000 * scale();
    let mut lat_raw = Vec::with_capacity(ops as usize);
    let mut rng = SimRng::new(3);
    for _ in 0..ops {
        let t = Instant::now();
        raw.write_all_at(&buf, rng.below(BLOCKS) * BS as u64)
            .unwrap();
        raw.sync_data().unwrap();
        lat_raw.push(t.elapsed());
    }
    let mut lat_eng = Vec::with_capacity(ops as usize);
    let mut rng = SimRng::new(3);
    for _ in 0..ops {
        let t = Instant::now();
        engine.write(rng.below(BLOCKS), &buf, true).unwrap();
        lat_eng.push(t.elapsed());
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e6
    };
    let mean = |v: &[Duration]| v.iter().sum::<Duration>().as_secs_f64() * 1e6 / v.len() as f64;
    report(
        "4 KiB write+FUA latency (mean)",
        "us",
        mean(&lat_eng),
        mean(&lat_raw),
        Some(("<=", 1.3)),
    );
    report(
        "4 KiB write+FUA latency (median)",
        "us",
        med(&mut lat_eng),
        med(&mut lat_raw),
        Some(("<=", 1.3)),
    );
    let s = engine.stats();
    println!(
        "engine: {} log fdatasyncs for {} flushes; {} flusher runs; {} waits for log space ({} ms)",
        s.log_syncs,
        s.flushes,
        s.flusher_runs,
        s.log_full_waits,
        s.log_full_wait_us / 1000
    );
    engine.close().unwrap();
}
