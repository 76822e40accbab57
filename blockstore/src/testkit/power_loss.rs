//! The power-loss driving the model tests share: a fresh volume on a simulated disk, recovery
//! after a power cut (with power lost again during recovery itself), and a fixed workload run
//! once with power lost after each of its I/O operations in turn.
//!
//! Each model test keeps only what is its own (its operations and the model it checks them
//! against); how a crash is injected and recovered from is written once, here.

use std::sync::Arc;

use crate::engine::{create, CreateOptions, Engine, OpenOptions};
use crate::role::Role;
use crate::sim::{SimRng, SimStorage};

/// Open options for simulated volumes: no background flusher, so a test decides exactly when
/// the log is checkpointed and every run replays the same I/O operations.
pub fn quiet() -> OpenOptions {
    OpenOptions {
        background_flusher: false,
        ..OpenOptions::default()
    }
}

/// A newly created volume on a fresh simulated disk (`blocks` blocks of `block_size` bytes, a
/// log of `wal_bytes`, epoch 1), not opened: tests that open it themselves, or as a standby.
pub fn sim_volume(block_size: usize, blocks: u64, wal_bytes: u64, role: Role) -> SimStorage {
    let disk = SimStorage::new();
    create(
        &disk,
        &CreateOptions {
            block_size: block_size as u32,
            capacity_bytes: blocks * block_size as u64,
            wal_bytes,
            role,
            epoch: 1,
        },
    )
    .expect("creating a volume on a fresh simulated disk");
    disk
}

/// Power lost now on `disk`: a new disk keeping a random part of what was not synced (chosen by
/// `rng`), then the engine recovered from it. One time in three, power is lost again within the
/// first `max_rearm` I/O operations of recovery, and recovery starts over on what that left.
/// Returns the disk after the last crash (disarmed) and the recovered engine, or why recovery
/// failed on a live disk.
pub fn recover(
    disk: &SimStorage,
    rng: &mut SimRng,
    max_rearm: u64,
) -> Result<(SimStorage, Arc<Engine>), String> {
    let mut disk = disk.crash(rng);
    let engine = loop {
        if rng.below(3) == 0 {
            disk.arm_crash_after(rng.below(max_rearm));
        }
        match Engine::open(&disk, quiet()) {
            Ok(e) => break e,
            Err(_) if disk.is_dead() => disk = disk.crash(rng),
            Err(e) => return Err(format!("recovery failed: {e}")),
        }
    };
    disk.arm_crash_after(u64::MAX);
    Ok((disk, engine))
}

/// A model test's harness, as the crash-point driver runs it.
pub trait PowerLossHarness: Sized {
    /// One operation of the test's workload.
    type Op;
    /// How the harness reports a broken invariant.
    type Error: std::fmt::Display;
    /// A fresh volume and model; `seed` chooses how crashes tear unsynced writes.
    fn with_seed(seed: u64) -> Self;
    /// The simulated disk the engine runs on now.
    fn disk(&self) -> &SimStorage;
    /// Runs one operation, recovering and checking the model if power is lost during it.
    fn step(&mut self, op: &Self::Op) -> Result<(), Self::Error>;
    /// Loses power now, recovers and checks every invariant against the model.
    fn power_cut(&mut self) -> Result<(), Self::Error>;
    /// How many power cuts the harness has recovered from.
    fn crashes(&self) -> u64;
}

/// Runs `workload` once cleanly to count its I/O operations (at least `min_ops`, or the
/// workload is too small to mean anything), then once per I/O operation and tear pattern
/// (`seeds_per_point` of them) with power lost after that operation, recovering, finishing the
/// workload and losing power once more at the end. Panics with the crash point and seed on the
/// first broken invariant. Returns (points verified, I/O operations of the workload).
pub fn at_every_io_operation<H: PowerLossHarness>(
    workload: &[H::Op],
    min_ops: u64,
    seeds_per_point: u64,
) -> (u64, u64) {
    let total = {
        let mut h = H::with_seed(1);
        let before = h.disk().ops_done();
        for op in workload {
            if let Err(e) = h.step(op) {
                panic!("clean run: {e}");
            }
        }
        h.disk().ops_done() - before
    };
    assert!(
        total >= min_ops,
        "workload too small: {total} I/O operations"
    );
    let mut points = 0;
    for crash_at in 0..total {
        for seed in 0..seeds_per_point {
            let mut h = H::with_seed(crash_at * 31 + seed);
            h.disk().arm_crash_after(crash_at);
            for op in workload {
                if let Err(e) = h.step(op) {
                    panic!("crash point {crash_at} seed {seed}: {e}");
                }
            }
            if let Err(e) = h.power_cut() {
                panic!("crash point {crash_at} seed {seed}: {e}");
            }
            assert!(
                h.crashes() >= 2,
                "crash point {crash_at} seed {seed}: the armed power cut never happened"
            );
            points += 1;
        }
    }
    (points, total)
}

/// What a clean close and reopen of an engine came to.
pub enum Reopen {
    /// Closed (everything written is durable) and opened again.
    Open(Arc<Engine>),
    /// Closing failed: the engine, still open, and why.
    CloseFailed(Arc<Engine>, crate::Error),
    /// Closed (everything written is durable), but opening again failed.
    OpenFailed(crate::Error),
}

/// Closes `engine` cleanly and opens the volume on `disk` again, as a restart does.
pub fn close_and_reopen(engine: Arc<Engine>, disk: &SimStorage) -> Reopen {
    if let Err(e) = engine.close() {
        return Reopen::CloseFailed(engine, e);
    }
    drop(engine);
    match Engine::open(disk, quiet()) {
        Ok(e) => Reopen::Open(e),
        Err(e) => Reopen::OpenFailed(e),
    }
}

/// Applies `records` to a fresh standby (on a disk from `fresh`) three at a time, each piece
/// synced as the replication link does, once cleanly to count its I/O operations, then once per
/// operation with power lost after it; each standby recovered from such a crash goes to `check`
/// with its crash point. Returns the number of crash points.
pub fn at_every_io_operation_of_an_apply(
    records: &[crate::replica::ShippedRecord],
    fresh: impl Fn() -> SimStorage,
    mut check: impl FnMut(u64, Arc<Engine>),
) -> u64 {
    let apply = |s: &Engine| -> bool {
        records
            .chunks(3)
            .all(|r| s.apply_replicated(r).is_ok() && s.sync_applied().is_ok())
    };
    let total = {
        let disk = fresh();
        let s = Engine::open(&disk, quiet()).expect("opening a fresh standby");
        let before = disk.ops_done();
        assert!(apply(&s), "a clean apply failed");
        disk.ops_done() - before
    };
    for crash_at in 0..total {
        let disk = fresh();
        let s = Engine::open(&disk, quiet()).expect("opening a fresh standby");
        disk.arm_crash_after(crash_at);
        apply(&s);
        drop(s);
        let after = disk.crash(&mut SimRng::new(crash_at));
        let s = Engine::open(&after, quiet())
            .unwrap_or_else(|e| panic!("crash point {crash_at}: recovery: {e}"));
        check(crash_at, s);
    }
    total
}
