//! End-to-end tests of [`LogicalUnit`] driven against the in-memory volume, split by area.

use bytes::Bytes;

use super::cdb::*;
use super::config::LuConfig;
use super::sense::*;
use super::task::{Completion, Nexus, Status};
use super::testvol::{run, MemVol};
use super::unit::LogicalUnit;

mod media;
mod pr;
mod pr_shared;
mod state;

pub(super) const BS: usize = 512;
pub(super) const BLOCKS: u64 = 64;

pub(super) fn nexus(id: u64) -> Nexus {
    Nexus {
        id,
        initiator_port: format!("iqn.2024-01.test:host{id},i,0x00023d00000{id}"),
        target_port_group: 1,
        relative_port: 1,
    }
}

/// An LU plus volume with nexuses 1 and 2 past their power-on unit attention.
pub(super) fn setup() -> (LogicalUnit, MemVol) {
    let mut lu = LogicalUnit::new(LuConfig::new(BS as u32, [0x42; 16]), BLOCKS);
    let mut vol = MemVol::new(BS, BLOCKS as usize);
    for id in [1, 2] {
        let c = run(&mut lu, &mut vol, &nexus(id), &tur(), &[]);
        assert_eq!(
            sense_code(&c),
            Some((SenseKey::UnitAttention, ASC_POWER_ON_RESET))
        );
    }
    (lu, vol)
}

pub(super) fn sense_code(c: &Completion) -> Option<(SenseKey, Asc)> {
    c.sense.map(|s| (s.key, s.asc))
}

pub(super) fn tur() -> Vec<u8> {
    vec![TEST_UNIT_READY, 0, 0, 0, 0, 0]
}

pub(super) fn rw10(op: u8, lba: u32, n: u16, flags: u8) -> Vec<u8> {
    let mut c = vec![op, flags, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&n.to_be_bytes());
    c
}

pub(super) fn rw16(op: u8, lba: u64, n: u32, flags: u8) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = op;
    c[1] = flags;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&n.to_be_bytes());
    c
}

pub(super) fn pattern(seed: u8, blocks: usize) -> Vec<u8> {
    (0..blocks * BS)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub(super) fn good(c: &Completion) {
    assert_eq!(c.status, Status::Good, "{:?}", c.sense);
}

pub(super) fn read(lu: &mut LogicalUnit, vol: &mut MemVol, lba: u32, n: u16) -> Bytes {
    let c = run(lu, vol, &nexus(1), &rw10(READ_10, lba, n, 0), &[]);
    good(&c);
    c.data
}
