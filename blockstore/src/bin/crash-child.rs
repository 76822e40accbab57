//! The child process of the SIGKILL crash loop (`tests/crash_loop.rs`).
//!
//! It opens (and so recovers) the volume in the directory given, then writes and flushes from
//! two threads until it is killed. Before each write it appends an intent line to its thread's
//! journal, and after each completed flush or FUA write an acknowledgement line, with plain
//! `write` calls that survive SIGKILL. The parent checks the recovered volume against them.
//!
//! Usage: crash-child DIR JOURNAL_PREFIX SEED
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
    if args.len() != 4 {
        eprintln!("usage: crash-child DIR JOURNAL_PREFIX SEED");
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
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let engine = Arc::clone(&engine);
            let journal = format!("{}.{t}", args[2]);
            std::thread::spawn(move || writer(&engine, &journal, t, seed))
        })
        .collect();
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
