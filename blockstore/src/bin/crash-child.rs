//! The child process of the SIGKILL crash loop (`tests/crash_loop.rs`).
//!
//! It opens (and so recovers) the volume in the directory given, then writes and flushes from
//! two threads until it is killed. Before each write it appends an intent line to its thread's
//! journal, and after each completed flush or FUA write an acknowledgement line, with plain
//! `write` calls that survive SIGKILL. The parent checks the recovered volume against them.
//!
//! With a fourth argument `grow`, a third thread grows the volume online by a few blocks at a
//! time while the writers run, journaling `G blocks` before each grow and `g blocks` once it
//! returned (the new capacity is durable) in `JOURNAL_PREFIX.grow`.
//!
//! Usage: crash-child DIR JOURNAL_PREFIX SEED [grow]
//! Journal lines: `W id lba blocks`, `Z id lba blocks` (trim), `U id` (FUA write acknowledged),
//! `F` (flush acknowledged: every write before it is durable).

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use blockstore::engine::{Engine, OpenOptions};
use blockstore::sim::SimRng;
use blockstore::testkit::write_data;
use blockstore::DirStorage;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !(4..=5).contains(&args.len()) {
        eprintln!("usage: crash-child DIR JOURNAL_PREFIX SEED [grow]");
        std::process::exit(2);
    }
    let seed: u64 = args[3].parse().unwrap_or(1);
    let engine = match Engine::open(&DirStorage::new(&args[1]), OpenOptions::default()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("crash-child: open failed: {e}");
            std::process::exit(1);
        }
    };
    let mut threads: Vec<_> = (0..2u64)
        .map(|t| {
            let engine = Arc::clone(&engine);
            let journal = format!("{}.{t}", args[2]);
            std::thread::spawn(move || writer(&engine, &journal, t, seed))
        })
        .collect();
    if args.get(4).map(String::as_str) == Some("grow") {
        let engine = Arc::clone(&engine);
        let journal = format!("{}.grow", args[2]);
        threads.push(std::thread::spawn(move || grower(&engine, &journal, seed)));
    }
    for t in threads {
        let _ = t.join();
    }
}

/// One writer: thread `t` owns the half of the volume starting at `t * half`.
fn writer(engine: &Engine, journal: &str, t: u64, seed: u64) {
    let Ok(mut j) = File::create(journal) else {
        std::process::exit(1);
    };
    let bs = engine.block_size() as usize;
    let half = engine.capacity_blocks() / 2;
    let mut rng = SimRng::new(seed.wrapping_mul(31).wrapping_add(t));
    for n in 1u64.. {
        let id = (seed << 24) | (t << 22) | n;
        let blocks = 1 + rng.below(16);
        let lba = t * half + rng.below(half - blocks);
        let choice = rng.below(20);
        if choice == 0 {
            let _ = writeln!(j, "Z {id} {lba} {blocks}");
            if engine.trim(lba, blocks).is_err() {
                std::process::exit(1);
            }
            continue;
        }
        let fua = choice == 1;
        let _ = writeln!(j, "W {id} {lba} {blocks}");
        if engine
            .write(lba, &write_data(id, lba, blocks, bs), fua)
            .is_err()
        {
            std::process::exit(1);
        }
        if fua {
            let _ = writeln!(j, "U {id}");
        }
        if n % 8 == 0 {
            if engine.flush().is_err() {
                std::process::exit(1);
            }
            let _ = writeln!(j, "F");
        }
    }
}

/// Grows the volume by 1 to 64 blocks every few milliseconds, journaling each grow before it
/// starts (`G`) and once it returned (`g`).
fn grower(engine: &Engine, journal: &str, seed: u64) {
    let Ok(mut j) = File::create(journal) else {
        std::process::exit(1);
    };
    let mut rng = SimRng::new(seed.wrapping_mul(97).wrapping_add(5));
    loop {
        std::thread::sleep(std::time::Duration::from_millis(2 + rng.below(8)));
        let new = engine.capacity_blocks() + 1 + rng.below(64);
        let _ = writeln!(j, "G {new}");
        if engine.grow(new).is_err() {
            std::process::exit(1);
        }
        let _ = writeln!(j, "g {new}");
    }
}
