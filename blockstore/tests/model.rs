//! Model-based tests: random operation sequences against an in-memory model, with power loss
//! injected at every stage on the simulated disk (mid append, between append and fdatasync,
//! mid copy into the extent, mid checkpoint, mid superblock write, and during recovery itself).
//!
//! Invariants after every recovery:
//! - every write covered by a completed flush or FUA reads back (or something written after it);
//! - every block reads as a value that was written to it, or zeros — never garbage, never a torn
//!   mix of two writes inside one logical block.

use std::sync::Arc;

use blockstore::engine::Engine;
use blockstore::sim::{SimRng, SimStorage};
use blockstore::testkit::power_loss::{
    at_every_io_operation, close_and_reopen, quiet, recover, sim_volume, PowerLossHarness, Reopen,
};
use blockstore::testkit::{identify, write_data};
use blockstore::{Error, Role};
use proptest::prelude::*;

const BS: usize = 512;
const BLOCKS: u64 = 48;
const WAL: u64 = 16 * 1024;

#[derive(Debug, Clone)]
enum Op {
    Write { lba: u64, blocks: u64, fua: bool },
    Trim { lba: u64, blocks: u64 },
    Flush,
    FlusherRun,
    Read { lba: u64, blocks: u64 },
    Grow { extra: u64 },
    Shrink { less: u64 },
    Reopen,
    Arm { ops: u64 },
    PowerCut { seed: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..BLOCKS, 1u64..12, any::<bool>()).prop_map(|(lba, blocks, fua)| Op::Write { lba, blocks, fua }),
        2 => (0..BLOCKS, 1u64..20).prop_map(|(lba, blocks)| Op::Trim { lba, blocks }),
        2 => Just(Op::Flush),
        2 => Just(Op::FlusherRun),
        3 => (0..BLOCKS, 1u64..16).prop_map(|(lba, blocks)| Op::Read { lba, blocks }),
        1 => (1u64..8).prop_map(|extra| Op::Grow { extra }),
        1 => (1u64..8).prop_map(|less| Op::Shrink { less }),
        1 => Just(Op::Reopen),
        2 => (0u64..12).prop_map(|ops| Op::Arm { ops }),
        1 => any::<u64>().prop_map(|seed| Op::PowerCut { seed }),
    ]
}

/// The model: per block, the values it may hold after a crash, oldest first. The first is the
/// newest value known durable; the last is the newest value written.
struct Model {
    blocks: Vec<Vec<u64>>,
    capacity: u64,
    /// A shrink to this many blocks failed with the disk: after recovery the volume has the
    /// old capacity (and data) or this one.
    shrinking: Option<u64>,
    next_id: u64,
}

impl Model {
    fn new() -> Self {
        Model {
            blocks: vec![vec![0]; BLOCKS as usize],
            capacity: BLOCKS,
            shrinking: None,
            next_id: 1,
        }
    }
    fn record(&mut self, lba: u64, blocks: u64, id: u64) {
        for b in lba..lba + blocks {
            self.blocks[b as usize].push(id);
        }
    }
    fn durable(&mut self, lba: u64, blocks: u64) {
        for b in lba..lba + blocks {
            let v = &self.blocks[b as usize];
            let last = *v.last().unwrap();
            self.blocks[b as usize] = vec![last];
        }
    }
}

struct Harness {
    disk: SimStorage,
    engine: Option<Arc<Engine>>,
    model: Model,
    rng: SimRng,
    crashes: u64,
}

impl Harness {
    fn new(seed: u64) -> Self {
        let disk = sim_volume(BS, BLOCKS, WAL, Role::Primary);
        let engine = Engine::open(&disk, quiet()).unwrap();
        Harness {
            disk,
            engine: Some(engine),
            model: Model::new(),
            rng: SimRng::new(seed),
            crashes: 0,
        }
    }

    fn engine(&self) -> &Arc<Engine> {
        self.engine.as_ref().unwrap()
    }

    /// Power loss now: the disk keeps a random part of what was not synced; then recover,
    /// possibly losing power again during recovery, and check every block against the model.
    fn power_cut(&mut self) -> Result<(), TestCaseError> {
        self.crashes += 1;
        self.engine = None;
        let (disk, engine) = recover(&self.disk, &mut self.rng, 10).map_err(TestCaseError::fail)?;
        self.disk = disk;
        let cap = engine.capacity_blocks();
        match self.model.shrinking.take() {
            Some(small) => prop_assert!(
                cap == small || cap == self.model.capacity,
                "capacity {cap} after an interrupted shrink from {} to {small}",
                self.model.capacity
            ),
            None => prop_assert!(
                cap >= self.model.capacity,
                "capacity {cap} lost a completed grow"
            ),
        }
        self.model.capacity = cap;
        // Blocks beyond a (completed) shrink are gone: growing again gives zeros.
        self.model.blocks.truncate(cap as usize);
        self.model.blocks.resize(cap as usize, vec![0]);
        let data = engine
            .read(0, cap)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for b in 0..cap {
            let block = &data[b as usize * BS..(b as usize + 1) * BS];
            let got = identify(block, b).map_err(TestCaseError::fail)?;
            let allowed = &self.model.blocks[b as usize];
            prop_assert!(
                allowed.contains(&got),
                "block {b} holds write {got} after recovery; allowed {allowed:?}"
            );
            self.model.blocks[b as usize] = vec![got];
        }
        self.engine = Some(engine);
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let dead_error = |h: &Self, e: &Error| -> Result<(), TestCaseError> {
            if h.disk.is_dead() {
                Ok(())
            } else {
                Err(TestCaseError::fail(format!(
                    "{op:?} failed on a live disk: {e}"
                )))
            }
        };
        let result: Result<(), TestCaseError> = match *op {
            Op::Write { lba, blocks, fua } => {
                if lba + blocks > self.model.capacity {
                    let r = self
                        .engine()
                        .write(lba, &vec![0; blocks as usize * BS], fua);
                    prop_assert!(
                        matches!(r, Err(Error::OutOfRange { .. }) | Err(Error::Failed)),
                        "{r:?}"
                    );
                    return Ok(());
                }
                let id = self.model.next_id;
                self.model.next_id += 1;
                self.model.record(lba, blocks, id);
                match self
                    .engine()
                    .write(lba, &write_data(id, lba, blocks, BS), fua)
                {
                    Ok(()) => {
                        if fua {
                            self.model.durable(lba, blocks);
                        }
                        Ok(())
                    }
                    Err(e) => dead_error(self, &e),
                }
            }
            Op::Trim { lba, blocks } => {
                let blocks = blocks.min(self.model.capacity.saturating_sub(lba));
                if blocks == 0 {
                    return Ok(());
                }
                self.model.record(lba, blocks, 0);
                match self.engine().trim(lba, blocks) {
                    Ok(()) => Ok(()),
                    Err(e) => dead_error(self, &e),
                }
            }
            Op::Flush => match self.engine().flush() {
                Ok(()) => {
                    self.model.durable(0, self.model.capacity);
                    Ok(())
                }
                Err(e) => dead_error(self, &e),
            },
            Op::FlusherRun => match self.engine().flush_once() {
                Ok(_) => Ok(()),
                Err(e) => dead_error(self, &e),
            },
            Op::Read { lba, blocks } => {
                let blocks = blocks.min(self.model.capacity.saturating_sub(lba));
                if blocks == 0 {
                    return Ok(());
                }
                match self.engine().read(lba, blocks) {
                    Ok(data) => {
                        for i in 0..blocks {
                            let b = lba + i;
                            let block = &data[i as usize * BS..(i as usize + 1) * BS];
                            let got = identify(block, b).map_err(TestCaseError::fail)?;
                            let want = *self.model.blocks[b as usize].last().unwrap();
                            prop_assert_eq!(got, want, "read of block {} before any crash", b);
                        }
                        Ok(())
                    }
                    Err(e) => dead_error(self, &e),
                }
            }
            Op::Grow { extra } => {
                let new = self.model.capacity + extra;
                match self.engine().grow(new) {
                    Ok(()) => {
                        self.model.capacity = new;
                        self.model.blocks.resize(new as usize, vec![0]);
                        Ok(())
                    }
                    Err(e) => dead_error(self, &e),
                }
            }
            Op::Shrink { less } => {
                let new = self.model.capacity.saturating_sub(less).max(1);
                match self.engine().shrink(new) {
                    Ok(()) => {
                        self.model.capacity = new;
                        self.model.blocks.truncate(new as usize);
                        Ok(())
                    }
                    Err(e) => {
                        if new < self.model.capacity {
                            self.model.shrinking = Some(new);
                        }
                        dead_error(self, &e)
                    }
                }
            }
            Op::Reopen => {
                if self.disk.is_dead() {
                    return self.power_cut();
                }
                match close_and_reopen(self.engine.take().unwrap(), &self.disk) {
                    Reopen::Open(e) => {
                        self.model.durable(0, self.model.capacity);
                        self.engine = Some(e);
                        Ok(())
                    }
                    Reopen::OpenFailed(_) if self.disk.is_dead() => {
                        self.model.durable(0, self.model.capacity);
                        self.power_cut()
                    }
                    Reopen::OpenFailed(e) => Err(TestCaseError::fail(format!("reopen: {e}"))),
                    Reopen::CloseFailed(e, err) => {
                        self.engine = Some(e);
                        dead_error(self, &err)
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
        result?;
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
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_with_power_loss_match_the_model(
        seed: u64,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut h = Harness::new(seed);
        for op in &ops {
            h.step(op)?;
        }
        h.power_cut()?;
    }
}

/// A fixed workload with power lost after every single I/O operation it makes, in turn, and
/// several ways the unsynced writes can land for each crash point.
#[test]
fn power_loss_at_every_io_operation_of_a_workload() {
    let workload: Vec<Op> = {
        let mut v = Vec::new();
        for i in 0..30u64 {
            v.push(Op::Write {
                lba: (i * 7) % (BLOCKS - 8),
                blocks: 1 + i % 8,
                fua: i % 5 == 0,
            });
            if i % 4 == 3 {
                v.push(Op::Flush);
            }
            if i % 6 == 5 {
                v.push(Op::FlusherRun);
            }
            if i % 9 == 8 {
                v.push(Op::Trim {
                    lba: i % 20,
                    blocks: 6,
                });
            }
            if i == 17 {
                v.push(Op::Grow { extra: 4 });
            }
            if i == 23 {
                v.push(Op::Shrink { less: 12 });
            }
            if i == 29 {
                v.push(Op::Grow { extra: 10 });
            }
        }
        v
    };
    let (points, total) = at_every_io_operation::<Harness>(&workload, 100, 3);
    println!("verified {points} power-loss points over {total} I/O operations");
}
