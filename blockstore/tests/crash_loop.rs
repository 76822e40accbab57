//! The real crash loop: a child process writes and flushes under load and is killed with SIGKILL
//! at random moments; after each kill the volume is recovered and checked against the child's
//! journal of acknowledged flushes. Runs 50 iterations, or TANDEM_CRASH_ITERATIONS.
//!
//! Checked after every kill: each block holds the newest write acknowledged durable (by a flush
//! or FUA) or a later one, and is an intact write or zeros, never garbage or a torn mix. A
//! second loop (20 iterations, or TANDEM_CRASH_ITERATIONS) also grows the volume online while
//! the writers run: the recovered capacity is the last acknowledged grow or the one in flight,
//! and every block grown reads as zeros until written.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use blockstore::engine::{create, CreateOptions, Engine, OpenOptions};
use blockstore::sim::SimRng;
use blockstore::testkit::identify;
use blockstore::DirStorage;

const BS: usize = 4096;
const BLOCKS: u64 = 2048;

/// Applies one journal to the per-block candidate lists.
fn apply_journal(text: &str, cand: &mut [Vec<u64>]) {
    let mut writes: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut mine: Vec<(u64, u64)> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [k @ ("W" | "Z"), id, lba, n] => {
                let (Ok(id), Ok(lba), Ok(n)) =
                    (id.parse::<u64>(), lba.parse::<u64>(), n.parse::<u64>())
                else {
                    break; // a line cut by the kill
                };
                let value = if *k == "W" { id } else { 0 };
                writes.insert(id, (lba, n));
                mine.push((lba, n));
                for b in lba..lba + n {
                    cand[b as usize].push(value);
                }
            }
            ["U", id] => {
                if let Some(&(lba, n)) = id.parse::<u64>().ok().and_then(|id| writes.get(&id)) {
                    for b in lba..lba + n {
                        let last = *cand[b as usize].last().unwrap();
                        cand[b as usize] = vec![last];
                    }
                }
            }
            ["F"] => {
                for &(lba, n) in &mine {
                    for b in lba..lba + n {
                        let last = *cand[b as usize].last().unwrap();
                        cand[b as usize] = vec![last];
                    }
                }
                mine.clear();
            }
            _ => break,
        }
    }
}

/// The recovered capacity after a kill, checked against the grow journal: at least the last
/// acknowledged grow, and either that (or `before`, with none acknowledged) or the grow in
/// flight.
fn check_grow_journal(text: &str, before: u64, recovered: u64, it: u64) {
    let (mut acked, mut in_flight) = (before, None);
    for line in text.lines() {
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["G", n] => match n.parse::<u64>() {
                Ok(n) => in_flight = Some(n),
                Err(_) => break,
            },
            ["g", n] => match n.parse::<u64>() {
                Ok(n) => {
                    acked = n;
                    in_flight = None;
                }
                Err(_) => break,
            },
            _ => break,
        }
    }
    assert!(
        recovered == acked || Some(recovered) == in_flight,
        "iteration {it}: capacity {recovered} after recovery; acknowledged {acked}, in flight {in_flight:?}"
    );
}

#[test]
fn sigkill_under_load_never_loses_an_acknowledged_flush() {
    crash_loop(false, 50);
}

#[test]
fn sigkill_during_online_grow_keeps_the_acknowledged_capacity() {
    crash_loop(true, 20);
}

fn crash_loop(grow: bool, default_iterations: u64) {
    let iterations: u64 = std::env::var("TANDEM_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_iterations);
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    create(
        &DirStorage::new(&vol),
        &CreateOptions {
            block_size: BS as u32,
            capacity_bytes: BLOCKS * BS as u64,
            wal_bytes: 1 << 20,
            ..CreateOptions::default()
        },
    )
    .unwrap();
    let mut cand: Vec<Vec<u64>> = vec![vec![0]; BLOCKS as usize];
    let mut rng = SimRng::new(0x7a4d_e11a);
    let (mut acked_flushes, mut writes_seen) = (0usize, 0usize);
    let mut capacity = BLOCKS;
    for it in 1..=iterations {
        let journal = dir.path().join(format!("journal-{it}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-child"));
        child.arg(&vol).arg(&journal).arg(it.to_string());
        if grow {
            child.arg("grow");
        }
        let mut child = child.spawn().expect("spawn crash-child");
        std::thread::sleep(Duration::from_millis(30 + rng.below(220)));
        child.kill().expect("SIGKILL the child");
        let status = child.wait().unwrap();
        assert!(
            status.code().is_none(),
            "child exited by itself ({status}): it failed"
        );
        for t in 0..2 {
            let text =
                std::fs::read_to_string(format!("{}.{t}", journal.display())).unwrap_or_default();
            acked_flushes += text.lines().filter(|l| *l == "F").count();
            writes_seen += text.lines().filter(|l| l.starts_with('W')).count();
            apply_journal(&text, &mut cand);
        }
        let engine = Engine::open(
            &DirStorage::new(&vol),
            OpenOptions {
                background_flusher: false,
                ..OpenOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("iteration {it}: recovery failed: {e}"));
        if grow {
            let text =
                std::fs::read_to_string(format!("{}.grow", journal.display())).unwrap_or_default();
            let recovered = engine.capacity_blocks();
            check_grow_journal(&text, capacity, recovered, it);
            capacity = recovered;
            // Grown blocks read as zeros until written.
            cand.resize(capacity as usize, vec![0]);
        }
        let data = engine.read(0, capacity).unwrap();
        for b in 0..capacity as usize {
            let got = identify(&data[b * BS..(b + 1) * BS], b as u64)
                .unwrap_or_else(|e| panic!("iteration {it}: {e}"));
            assert!(
                cand[b].contains(&got),
                "iteration {it}: block {b} holds write {got}, allowed {:?}",
                cand[b]
            );
            cand[b] = vec![got];
        }
        engine.close().unwrap();
    }
    println!(
        "crash loop: {iterations} SIGKILLs, {writes_seen} writes, {acked_flushes} acknowledged flushes verified, capacity {BLOCKS} -> {capacity} blocks"
    );
    if grow {
        assert!(
            capacity > BLOCKS + iterations,
            "the child grew the volume too little to test anything ({BLOCKS} -> {capacity})"
        );
    }
    assert!(
        acked_flushes > iterations as usize,
        "the child made too little progress to test anything"
    );
}
