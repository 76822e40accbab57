//! Snapshots and clones against a model, with power lost on the simulated disk at random
//! points and at every I/O operation of fixed workloads: during snapshot create, delete and
//! rollback, during the copy-on-write of a checkpoint, during a clone's checkpoints, and during
//! recovery itself.
//!
//! Invariants after every recovery:
//! - the volume's blocks hold allowed values (as in `model.rs`), and a rollback interrupted by
//!   the crash left either the whole old state or the whole snapshot, never a mix;
//! - every snapshot whose creation returned exists and reads exactly as the volume did when it
//!   was taken; one whose creation was cut off either does not exist or reads exactly so; a
//!   deleted one does not exist; a delete cut off leaves it whole or gone; no other exists;
//! - a clone reads its own writes where it wrote and its origin snapshot elsewhere, and its
//!   origin snapshot never changes.

use std::sync::Arc;

use blockstore::clone::create_clone;
use blockstore::engine::Engine;
use blockstore::sim::{SimRng, SimStorage};
use blockstore::testkit::power_loss::{
    at_every_io_operation, close_and_reopen, quiet, recover, sim_volume, PowerLossHarness, Reopen,
};
use blockstore::testkit::{identify, write_data};
use blockstore::{CloneOptions, Error, Role};
use proptest::prelude::*;

const BS: usize = 512;
const BLOCKS: u64 = 40;
const WAL: u64 = 16 * 1024;

#[derive(Debug, Clone)]
enum Op {
    Write { lba: u64, blocks: u64, fua: bool },
    Trim { lba: u64, blocks: u64 },
    Flush,
    FlusherRun,
    Snapshot,
    Delete { pick: usize },
    Rollback { pick: usize },
    ReadSnapshot { pick: usize },
    Reopen,
    Arm { ops: u64 },
    PowerCut { seed: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..BLOCKS, 1u64..10, any::<bool>()).prop_map(|(lba, blocks, fua)| Op::Write { lba, blocks, fua }),
        2 => (0..BLOCKS, 1u64..12).prop_map(|(lba, blocks)| Op::Trim { lba, blocks }),
        2 => Just(Op::Flush),
        3 => Just(Op::FlusherRun),
        3 => Just(Op::Snapshot),
        1 => (0usize..8).prop_map(|pick| Op::Delete { pick }),
        1 => (0usize..8).prop_map(|pick| Op::Rollback { pick }),
        2 => (0usize..8).prop_map(|pick| Op::ReadSnapshot { pick }),
        1 => Just(Op::Reopen),
        2 => (0u64..25).prop_map(|ops| Op::Arm { ops }),
        1 => any::<u64>().prop_map(|seed| Op::PowerCut { seed }),
    ]
}

/// A snapshot the model knows: its id, exact contents, and whether it must exist.
#[derive(Debug, Clone)]
struct SnapModel {
    id: u64,
    blocks: Vec<u64>,
    /// `Some(true)`: must exist; `Some(false)`: must not; `None`: either (cut off).
    exists: Option<bool>,
}

struct Harness {
    disk: SimStorage,
    engine: Option<Arc<Engine>>,
    /// Per block, the values it may hold after a crash (the last is the newest).
    blocks: Vec<Vec<u64>>,
    snaps: Vec<SnapModel>,
    /// A rollback cut off by the crash: the snapshot contents it was restoring.
    rollback: Option<Vec<u64>>,
    next_id: u64,
    /// The id the engine gives the next snapshot (ids are never reused).
    snap_next: u64,
    names: u64,
    rng: SimRng,
    crashes: u64,
}

fn read_ids(e: &Engine) -> Result<Vec<u64>, String> {
    let data = e.read(0, BLOCKS).map_err(|e| e.to_string())?;
    data.chunks(BS)
        .enumerate()
        .map(|(b, d)| identify(d, b as u64))
        .collect()
}

fn snap_ids(e: &Engine, id: u64) -> Result<Vec<u64>, String> {
    let mut buf = vec![0u8; BLOCKS as usize * BS];
    e.read_snapshot(id, 0, &mut buf)
        .map_err(|e| e.to_string())?;
    buf.chunks(BS)
        .enumerate()
        .map(|(b, d)| identify(d, b as u64))
        .collect()
}

impl Harness {
    fn new(seed: u64) -> Self {
        let disk = sim_volume(BS, BLOCKS, WAL, Role::Primary);
        let engine = Engine::open(&disk, quiet()).unwrap();
        Harness {
            disk,
            engine: Some(engine),
            blocks: vec![vec![0]; BLOCKS as usize],
            snaps: Vec::new(),
            rollback: None,
            next_id: 1,
            snap_next: 1,
            names: 0,
            rng: SimRng::new(seed),
            crashes: 0,
        }
    }

    fn engine(&self) -> &Arc<Engine> {
        self.engine.as_ref().unwrap()
    }

    fn newest(&self) -> Vec<u64> {
        self.blocks.iter().map(|v| *v.last().unwrap()).collect()
    }

    fn durable_all(&mut self) {
        for v in &mut self.blocks {
            let last = *v.last().unwrap();
            *v = vec![last];
        }
    }

    fn live(&self) -> Vec<usize> {
        (0..self.snaps.len())
            .filter(|&i| self.snaps[i].exists != Some(false))
            .collect()
    }

    fn power_cut(&mut self) -> Result<(), TestCaseError> {
        self.crashes += 1;
        self.engine = None;
        let (disk, engine) = recover(&self.disk, &mut self.rng, 12).map_err(TestCaseError::fail)?;
        self.disk = disk;
        let got = read_ids(&engine).map_err(TestCaseError::fail)?;
        let rolled = self.rollback.take().filter(|snap| *snap == got);
        if rolled.is_none() {
            for (b, g) in got.iter().enumerate() {
                prop_assert!(
                    self.blocks[b].contains(g),
                    "block {b} holds write {g} after recovery; allowed {:?}",
                    self.blocks[b]
                );
            }
        }
        self.blocks = got.iter().map(|&g| vec![g]).collect();
        // Snapshots: exactly the expected ones, each reading exactly as taken.
        let listed: Vec<u64> = engine.list_snapshots().iter().map(|s| s.id).collect();
        for s in &mut self.snaps {
            let present = listed.contains(&s.id);
            if let Some(must) = s.exists {
                prop_assert_eq!(present, must, "snapshot {} presence after recovery", s.id);
            }
            if present {
                let ids = snap_ids(&engine, s.id).map_err(TestCaseError::fail)?;
                prop_assert_eq!(&ids, &s.blocks, "snapshot {} contents after recovery", s.id);
            }
            s.exists = Some(present);
            if present {
                self.snap_next = self.snap_next.max(s.id + 1);
            }
        }
        for id in &listed {
            prop_assert!(
                self.snaps.iter().any(|s| s.id == *id),
                "snapshot {id} appeared from nowhere"
            );
        }
        self.snaps.retain(|s| s.exists == Some(true));
        self.engine = Some(engine);
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let dead = |h: &Self, e: &Error| -> Result<(), TestCaseError> {
            if h.disk.is_dead() {
                Ok(())
            } else {
                Err(TestCaseError::fail(format!(
                    "{op:?} failed on a live disk: {e}"
                )))
            }
        };
        let r: Result<(), TestCaseError> = match *op {
            Op::Write { lba, blocks, fua } => {
                let blocks = blocks.min(BLOCKS - lba);
                let id = self.next_id;
                self.next_id += 1;
                for b in lba..lba + blocks {
                    self.blocks[b as usize].push(id);
                }
                match self
                    .engine()
                    .write(lba, &write_data(id, lba, blocks, BS), fua)
                {
                    Ok(()) if fua => {
                        for b in lba..lba + blocks {
                            let v = &mut self.blocks[b as usize];
                            *v = vec![id];
                        }
                        Ok(())
                    }
                    Ok(()) => Ok(()),
                    Err(e) => dead(self, &e),
                }
            }
            Op::Trim { lba, blocks } => {
                let blocks = blocks.min(BLOCKS - lba);
                for b in lba..lba + blocks {
                    self.blocks[b as usize].push(0);
                }
                match self.engine().trim(lba, blocks) {
                    Ok(()) => Ok(()),
                    Err(e) => dead(self, &e),
                }
            }
            Op::Flush => match self.engine().flush() {
                Ok(()) => {
                    self.durable_all();
                    Ok(())
                }
                Err(e) => dead(self, &e),
            },
            Op::FlusherRun => match self.engine().flush_once() {
                Ok(_) => Ok(()),
                Err(e) => dead(self, &e),
            },
            Op::Snapshot => {
                self.names += 1;
                let contents = self.newest();
                match self.engine().create_snapshot(&format!("s{}", self.names)) {
                    Ok(info) => {
                        prop_assert_eq!(info.id, self.snap_next, "ids are handed out in order");
                        self.snap_next += 1;
                        self.durable_all();
                        self.snaps.push(SnapModel {
                            id: info.id,
                            blocks: contents,
                            exists: Some(true),
                        });
                        Ok(())
                    }
                    Err(e) => {
                        // Cut off: it may exist after recovery, with the next unused id.
                        if self.disk.is_dead() {
                            self.snaps.push(SnapModel {
                                id: self.snap_next,
                                blocks: contents,
                                exists: None,
                            });
                        }
                        dead(self, &e)
                    }
                }
            }
            Op::Delete { pick } => {
                let live = self.live();
                if live.is_empty() {
                    return Ok(());
                }
                let i = live[pick % live.len()];
                let id = self.snaps[i].id;
                match self.engine().delete_snapshot(id) {
                    Ok(()) => {
                        self.snaps[i].exists = Some(false);
                        Ok(())
                    }
                    Err(e) => {
                        if self.disk.is_dead() {
                            self.snaps[i].exists = None;
                        }
                        dead(self, &e)
                    }
                }
            }
            Op::Rollback { pick } => {
                let live: Vec<usize> = self
                    .live()
                    .into_iter()
                    .filter(|&i| self.snaps[i].exists == Some(true))
                    .collect();
                if live.is_empty() {
                    return Ok(());
                }
                let i = live[pick % live.len()];
                let (id, contents) = (self.snaps[i].id, self.snaps[i].blocks.clone());
                match self.engine().rollback_snapshot(id) {
                    Ok(()) => {
                        self.blocks = contents.iter().map(|&v| vec![v]).collect();
                        Ok(())
                    }
                    Err(e) => {
                        if self.disk.is_dead() {
                            self.rollback = Some(contents);
                        }
                        dead(self, &e)
                    }
                }
            }
            Op::ReadSnapshot { pick } => {
                let live: Vec<usize> = self
                    .live()
                    .into_iter()
                    .filter(|&i| self.snaps[i].exists == Some(true))
                    .collect();
                if live.is_empty() {
                    return Ok(());
                }
                let i = live[pick % live.len()];
                match snap_ids(self.engine(), self.snaps[i].id) {
                    Ok(ids) => {
                        prop_assert_eq!(&ids, &self.snaps[i].blocks, "snapshot read");
                        Ok(())
                    }
                    Err(_) if self.disk.is_dead() => Ok(()),
                    Err(e) => Err(TestCaseError::fail(e)),
                }
            }
            Op::Reopen => {
                if self.disk.is_dead() {
                    return self.power_cut();
                }
                match close_and_reopen(self.engine.take().unwrap(), &self.disk) {
                    Reopen::Open(e) => {
                        self.durable_all();
                        self.engine = Some(e);
                        Ok(())
                    }
                    Reopen::OpenFailed(_) if self.disk.is_dead() => {
                        self.durable_all();
                        self.power_cut()
                    }
                    Reopen::OpenFailed(e) => Err(TestCaseError::fail(format!("reopen: {e}"))),
                    Reopen::CloseFailed(e, err) => {
                        self.engine = Some(e);
                        dead(self, &err)
                    }
                }
            }
            Op::Arm { ops } => {
                self.disk.arm_crash_after(ops);
                Ok(())
            }
            Op::PowerCut { seed } => {
                self.rng = SimRng::new(seed ^ self.rng.next_u64());
                self.power_cut()
            }
        };
        r?;
        if self.disk.is_dead() {
            self.power_cut()?;
        }
        Ok(())
    }
}

impl PowerLossHarness for Harness {
    type Op = Op;
    type Error = TestCaseError;
    fn with_seed(seed: u64) -> Self {
        Harness::new(seed)
    }
    fn disk(&self) -> &SimStorage {
        &self.disk
    }
    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        Harness::step(self, op)
    }
    fn power_cut(&mut self) -> Result<(), TestCaseError> {
        Harness::power_cut(self)
    }
    fn crashes(&self) -> u64 {
        self.crashes
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_snapshot_operations_with_power_loss_match_the_model(
        seed: u64,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut h = Harness::new(seed);
        for op in &ops {
            h.step(op)?;
        }
        h.power_cut()?;
    }
}

/// A fixed workload of writes, checkpoints (with copy-on-write), snapshots, deletes and
/// rollbacks, with power lost after each of its I/O operations in turn.
#[test]
fn power_loss_at_every_io_operation_of_a_snapshot_workload() {
    let mut workload = Vec::new();
    for i in 0..16u64 {
        workload.push(Op::Write {
            lba: (i * 5) % (BLOCKS - 6),
            blocks: 1 + i % 6,
            fua: i % 5 == 0,
        });
        match i % 8 {
            1 => workload.push(Op::Snapshot),
            3 => workload.push(Op::FlusherRun),
            4 => workload.push(Op::Trim {
                lba: i % 10,
                blocks: 3,
            }),
            5 => workload.push(Op::Rollback { pick: i as usize }),
            6 => workload.push(Op::Delete { pick: 0 }),
            _ => {}
        }
    }
    workload.push(Op::Snapshot);
    workload.push(Op::Write {
        lba: 0,
        blocks: 20,
        fua: false,
    });
    workload.push(Op::FlusherRun);
    workload.push(Op::Delete { pick: 1 });
    let (points, total) = at_every_io_operation::<Harness>(&workload, 100, 3);
    println!("verified {points} power-loss points over {total} I/O operations");
}

/// A clone's checkpoints (marking blocks written, then writing its extent) with power lost at
/// every I/O operation of the clone's disk: the clone reads its writes or its origin, and the
/// origin snapshot is untouched.
#[test]
fn power_loss_at_every_io_operation_of_a_clone() {
    let odisk = sim_volume(BS, BLOCKS, WAL, Role::Primary);
    let origin = Engine::open(&odisk, quiet()).unwrap();
    origin
        .write(0, &write_data(1, 0, BLOCKS, BS), false)
        .unwrap();
    let s = origin.create_snapshot("base").unwrap();
    let base = snap_ids(&origin, s.id).unwrap();
    let run = |disk: &SimStorage, crash_at: Option<u64>| -> Vec<Vec<u64>> {
        // Per block, the values allowed after a crash.
        let mut model: Vec<Vec<u64>> = base.iter().map(|&v| vec![v]).collect();
        if let Some(n) = crash_at {
            disk.arm_crash_after(n);
        }
        let c = match Engine::open_clone(
            Arc::new(disk.clone()),
            quiet(),
            origin.snapshot_view(s.id).unwrap(),
        ) {
            Ok(c) => c,
            Err(_) => return model,
        };
        for i in 0..12u64 {
            let (lba, n) = ((i * 7) % (BLOCKS - 5), 1 + i % 5);
            let id = 100 + i;
            for b in lba..lba + n {
                model[b as usize].push(id);
            }
            if c.write(lba, &write_data(id, lba, n, BS), i % 4 == 0)
                .is_err()
            {
                return model;
            }
            if i % 4 == 0 {
                for b in lba..lba + n {
                    model[b as usize] = vec![id];
                }
            }
            if i % 3 == 2 && c.flush_once().is_err() {
                return model;
            }
            if i == 6 {
                for b in 10..14 {
                    model[b as usize].push(0);
                }
                if c.trim(10, 4).is_err() {
                    return model;
                }
            }
        }
        if c.flush().is_err() {
            return model;
        }
        for m in &mut model {
            let last = *m.last().unwrap();
            *m = vec![last];
        }
        let _ = c.flush_once();
        model
    };
    let template = SimStorage::new();
    create_clone(
        &template,
        &origin.snapshot_view(s.id).unwrap(),
        &CloneOptions::writable(WAL),
    )
    .unwrap();
    // The template's creation is durable; each run starts from a copy of it.
    let fresh = || template.crash(&mut SimRng::new(1));
    let total = {
        let d = fresh();
        let before = d.ops_done();
        run(&d, None);
        d.ops_done() - before
    };
    assert!(total > 30, "clone workload too small: {total}");
    for crash_at in 0..total {
        for seed in 0..3u64 {
            let d = fresh();
            let model = run(&d, Some(crash_at));
            let after = d.crash(&mut SimRng::new(crash_at * 7 + seed));
            let c = Engine::open_clone(
                Arc::new(after),
                quiet(),
                origin.snapshot_view(s.id).unwrap(),
            )
            .unwrap_or_else(|e| panic!("crash point {crash_at}: recovery failed: {e}"));
            let got = read_ids(&c).unwrap();
            for (b, g) in got.iter().enumerate() {
                assert!(
                    model[b].contains(g),
                    "crash point {crash_at} seed {seed}: clone block {b} holds {g}, allowed {:?}",
                    model[b]
                );
            }
        }
    }
    assert_eq!(snap_ids(&origin, s.id).unwrap(), base);
    println!("verified {} clone power-loss points", total * 3);
    // The clones above were dropped without clone_deleted: counted still.
    assert_eq!(origin.list_snapshots()[0].clones, 1);
}
