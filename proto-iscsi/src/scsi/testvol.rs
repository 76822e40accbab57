//! Test-only in-memory volume that executes [`BlockOp`]s against a `Vec<u8>`, plus a driver
//! that runs a command through every [`Step`] to its [`Completion`].

use bytes::Bytes;

use super::task::{BlockOp, BlockResult, Completion, LbaExtent, Nexus, Provisioning, Step};
use super::unit::LogicalUnit;

/// A thin-provisioned volume in memory.
pub struct MemVol {
    pub bs: usize,
    pub data: Vec<u8>,
    pub mapped: Vec<bool>,
    pub flushes: usize,
    pub persists: usize,
}

impl MemVol {
    pub fn new(bs: usize, blocks: usize) -> Self {
        MemVol {
            bs,
            data: vec![0; bs * blocks],
            mapped: vec![false; blocks],
            flushes: 0,
            persists: 0,
        }
    }

    fn range(&self, lba: u64, blocks: u64) -> Option<std::ops::Range<usize>> {
        let end = lba.checked_add(blocks)?;
        if end as usize > self.mapped.len() {
            return None;
        }
        Some(lba as usize * self.bs..end as usize * self.bs)
    }

    fn set_mapped(&mut self, lba: u64, blocks: u64, m: bool) {
        for b in lba..lba + blocks {
            self.mapped[b as usize] = m;
        }
    }

    pub fn exec(&mut self, op: BlockOp) -> BlockResult {
        match op {
            BlockOp::Read { lba, blocks } => match self.range(lba, u64::from(blocks)) {
                Some(r) => BlockResult::Data(Bytes::copy_from_slice(&self.data[r])),
                None => BlockResult::OutOfRange,
            },
            BlockOp::Write { lba, data, .. } => {
                let blocks = (data.len() / self.bs) as u64;
                match self.range(lba, blocks) {
                    Some(r) => {
                        self.data[r].copy_from_slice(&data);
                        self.set_mapped(lba, blocks, true);
                        BlockResult::Ok
                    }
                    None => BlockResult::OutOfRange,
                }
            }
            BlockOp::Flush => {
                self.flushes += 1;
                BlockResult::Ok
            }
            BlockOp::Deallocate { ranges } => {
                for (lba, n) in ranges {
                    let Some(r) = self.range(lba, u64::from(n)) else {
                        return BlockResult::OutOfRange;
                    };
                    self.data[r].fill(0);
                    self.set_mapped(lba, u64::from(n), false);
                }
                BlockResult::Ok
            }
            BlockOp::WriteZeroes {
                lba,
                blocks,
                deallocate: unmap,
                ..
            } => match self.range(lba, u64::from(blocks)) {
                Some(r) => {
                    self.data[r].fill(0);
                    self.set_mapped(lba, u64::from(blocks), !unmap);
                    BlockResult::Ok
                }
                None => BlockResult::OutOfRange,
            },
            BlockOp::CompareAndWrite {
                lba,
                blocks,
                compare,
                write,
                ..
            } => {
                let Some(r) = self.range(lba, u64::from(blocks)) else {
                    return BlockResult::OutOfRange;
                };
                if let Some(i) = self.data[r.clone()]
                    .iter()
                    .zip(compare.iter())
                    .position(|(a, b)| a != b)
                {
                    return BlockResult::Miscompare { offset: i as u32 };
                }
                self.data[r].copy_from_slice(&write);
                self.set_mapped(lba, u64::from(blocks), true);
                BlockResult::Ok
            }
            BlockOp::GetLbaStatus { lba } => {
                let mut out: Vec<LbaExtent> = Vec::new();
                for b in lba as usize..self.mapped.len() {
                    let status = if self.mapped[b] {
                        Provisioning::Mapped
                    } else {
                        Provisioning::Deallocated
                    };
                    match out.last_mut() {
                        Some(e) if e.status == status => e.blocks += 1,
                        _ => out.push(LbaExtent {
                            lba: b as u64,
                            blocks: 1,
                            status,
                        }),
                    }
                }
                BlockResult::LbaStatus(out)
            }
            BlockOp::PersistReservations => {
                self.persists += 1;
                BlockResult::Ok
            }
        }
    }
}

/// Drives one command to completion; `data` is the data-out buffer the initiator would send.
pub fn run(
    lu: &mut LogicalUnit,
    vol: &mut MemVol,
    n: &Nexus,
    cdb: &[u8],
    data: &[u8],
) -> Completion {
    let mut step = lu.start(n, cdb, data.len() as u32);
    loop {
        step = match step {
            Step::Done(c) => return c,
            Step::NeedDataOut { len, task } => {
                let mut buf = data.to_vec();
                buf.resize(len as usize, 0);
                lu.data_out(n, task, Bytes::from(buf))
            }
            Step::Io { op, task } => return lu.io_done(task, vol.exec(op)),
        }
    }
}
