//! End-to-end tests of [`LogicalUnit`] driven against the in-memory volume.

use bytes::Bytes;
use proptest::prelude::*;

use super::alua::AccessState;
use super::cdb::*;
use super::config::LuConfig;
use super::pr::PrState;
use super::sense::*;
use super::task::{BlockOp, Completion, Nexus, Status, Step};
use super::testvol::{run, MemVol};
use super::unit::LogicalUnit;

const BS: usize = 512;
const BLOCKS: u64 = 64;

fn nexus(id: u64) -> Nexus {
    Nexus {
        id,
        initiator_port: format!("iqn.2024-01.test:host{id},i,0x00023d00000{id}"),
        target_port_group: 1,
        relative_port: 1,
    }
}

/// An LU plus volume with nexuses 1 and 2 past their power-on unit attention.
fn setup() -> (LogicalUnit, MemVol) {
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

fn sense_code(c: &Completion) -> Option<(SenseKey, Asc)> {
    c.sense.map(|s| (s.key, s.asc))
}

fn tur() -> Vec<u8> {
    vec![TEST_UNIT_READY, 0, 0, 0, 0, 0]
}

fn rw10(op: u8, lba: u32, n: u16, flags: u8) -> Vec<u8> {
    let mut c = vec![op, flags, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&n.to_be_bytes());
    c
}

fn rw16(op: u8, lba: u64, n: u32, flags: u8) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = op;
    c[1] = flags;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&n.to_be_bytes());
    c
}

fn pattern(seed: u8, blocks: usize) -> Vec<u8> {
    (0..blocks * BS)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn good(c: &Completion) {
    assert_eq!(c.status, Status::Good, "{:?}", c.sense);
}

fn read(lu: &mut LogicalUnit, vol: &mut MemVol, lba: u32, n: u16) -> Bytes {
    let c = run(lu, vol, &nexus(1), &rw10(READ_10, lba, n, 0), &[]);
    good(&c);
    c.data
}

#[test]
fn unit_attention_once_per_nexus_and_not_on_inquiry() {
    let mut lu = LogicalUnit::new(LuConfig::new(512, [1; 16]), BLOCKS);
    let mut vol = MemVol::new(BS, BLOCKS as usize);
    let n = nexus(7);
    let inq = [INQUIRY, 0, 0, 0, 36, 0];
    good(&run(&mut lu, &mut vol, &n, &inq, &[]));
    let c = run(&mut lu, &mut vol, &n, &tur(), &[]);
    assert_eq!(c.status, Status::CheckCondition);
    let s = c.sense_bytes().unwrap();
    assert_eq!((s[2], s[12], s[13]), (0x06, 0x29, 0x00));
    good(&run(&mut lu, &mut vol, &n, &tur(), &[]));
}

#[test]
fn request_sense_reports_and_clears_ua() {
    let mut lu = LogicalUnit::new(LuConfig::new(512, [1; 16]), BLOCKS);
    let mut vol = MemVol::new(BS, BLOCKS as usize);
    let n = nexus(3);
    let c = run(
        &mut lu,
        &mut vol,
        &n,
        &[REQUEST_SENSE, 0, 0, 0, 252, 0],
        &[],
    );
    good(&c);
    assert_eq!(c.data.len(), 18);
    assert_eq!((c.data[0], c.data[2], c.data[12]), (0x70, 0x06, 0x29));
    let c = run(
        &mut lu,
        &mut vol,
        &n,
        &[REQUEST_SENSE, 0, 0, 0, 252, 0],
        &[],
    );
    assert_eq!((c.data[2], c.data[12]), (0x00, 0x00));
    // DESC=1 not supported; allocation length truncation
    let c = run(
        &mut lu,
        &mut vol,
        &n,
        &[REQUEST_SENSE, 1, 0, 0, 252, 0],
        &[],
    );
    assert_eq!(c.sense.unwrap().asc, ASC_INVALID_FIELD_IN_CDB);
    let c = run(&mut lu, &mut vol, &n, &[REQUEST_SENSE, 0, 0, 0, 8, 0], &[]);
    assert_eq!(c.data.len(), 8);
}

#[test]
fn capacity_change_raises_ua_for_every_nexus_once() {
    let (mut lu, mut vol) = setup();
    lu.set_capacity(BLOCKS * 2);
    for id in [1, 2] {
        let c = run(&mut lu, &mut vol, &nexus(id), &tur(), &[]);
        assert_eq!(
            sense_code(&c),
            Some((SenseKey::UnitAttention, ASC_CAPACITY_DATA_CHANGED))
        );
        good(&run(&mut lu, &mut vol, &nexus(id), &tur(), &[]));
    }
    let c = run(
        &mut lu,
        &mut vol,
        &nexus(1),
        &[READ_CAPACITY_10, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[],
    );
    assert_eq!(&c.data[..4], &(BLOCKS as u32 * 2 - 1).to_be_bytes());
}

#[test]
fn alua_standby_not_ready_but_identification_works() {
    let (mut lu, mut vol) = setup();
    assert!(lu.set_access_state(1, AccessState::Standby));
    let n = nexus(1);
    let c = run(&mut lu, &mut vol, &n, &tur(), &[]);
    assert_eq!(
        sense_code(&c),
        Some((SenseKey::UnitAttention, ASC_ASYMMETRIC_ACCESS_STATE_CHANGED))
    );
    let c = run(&mut lu, &mut vol, &n, &rw10(READ_10, 0, 1, 0), &[]);
    assert_eq!(
        sense_code(&c),
        Some((SenseKey::NotReady, ASC_LU_NOT_ACCESSIBLE_STANDBY))
    );
    let s = c.sense_bytes().unwrap();
    assert_eq!((s[2], s[12], s[13]), (0x02, 0x04, 0x0B));
    good(&run(&mut lu, &mut vol, &n, &[INQUIRY, 0, 0, 0, 96, 0], &[]));
    let mut rtpg = vec![
        MAINTENANCE_IN,
        0x20 | MI_REPORT_TARGET_PGS,
        0,
        0,
        0,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
    ];
    let c = run(&mut lu, &mut vol, &n, &rtpg, &[]);
    good(&c);
    assert_eq!(c.data[8] & 0x0F, 0x02);
    rtpg[1] = 0x40 | MI_REPORT_TARGET_PGS;
    let c = run(&mut lu, &mut vol, &n, &rtpg, &[]);
    assert_eq!(c.sense.unwrap().asc, ASC_INVALID_FIELD_IN_CDB);
    // transitioning and unavailable codes
    lu.set_access_state(1, AccessState::Transitioning);
    let _ = run(&mut lu, &mut vol, &n, &tur(), &[]);
    let c = run(&mut lu, &mut vol, &n, &tur(), &[]);
    assert_eq!(c.sense.unwrap().asc, ASC_LU_NOT_ACCESSIBLE_TRANSITIONING);
    lu.set_access_state(1, AccessState::Unavailable);
    let _ = run(&mut lu, &mut vol, &n, &tur(), &[]);
    let c = run(
        &mut lu,
        &mut vol,
        &n,
        &[MODE_SENSE_6, 0, 0x3F, 0, 255, 0],
        &[],
    );
    assert_eq!(c.sense.unwrap().asc, ASC_LU_NOT_ACCESSIBLE_UNAVAILABLE);
    // the volume reporting standby maps to the same NOT READY code
    lu.set_access_state(1, AccessState::Optimized);
    let _ = run(&mut lu, &mut vol, &n, &tur(), &[]);
    let Step::Io { task, .. } = lu.start(&n, &rw10(READ_10, 0, 1, 0), 0) else {
        panic!("expected io")
    };
    let c = lu.io_done(
        task,
        super::task::BlockResult::AccessState(AccessState::Standby),
    );
    assert_eq!(c.sense.unwrap().asc, ASC_LU_NOT_ACCESSIBLE_STANDBY);
}

#[test]
fn read_after_write_all_sizes() {
    let (mut lu, mut vol) = setup();
    let n = nexus(1);
    let d = pattern(1, 2);
    good(&run(&mut lu, &mut vol, &n, &rw10(WRITE_10, 3, 2, 0x08), &d));
    assert_eq!(read(&mut lu, &mut vol, 3, 2), d);
    let d16 = pattern(2, 3);
    good(&run(&mut lu, &mut vol, &n, &rw16(WRITE_16, 10, 3, 0), &d16));
    let c = run(&mut lu, &mut vol, &n, &rw16(READ_16, 10, 3, 0), &[]);
    assert_eq!(c.data, d16);
    let mut w12 = vec![WRITE_12, 0, 0, 0, 0, 20, 0, 0, 0, 1, 0, 0];
    good(&run(&mut lu, &mut vol, &n, &w12, &pattern(3, 1)));
    w12[0] = READ_12;
    assert_eq!(run(&mut lu, &mut vol, &n, &w12, &[]).data, pattern(3, 1));
    good(&run(
        &mut lu,
        &mut vol,
        &n,
        &[WRITE_6, 0, 0, 30, 1, 0],
        &pattern(4, 1),
    ));
    assert_eq!(
        run(&mut lu, &mut vol, &n, &[READ_6, 0, 0, 30, 1, 0], &[]).data,
        pattern(4, 1)
    );
}

#[test]
fn read6_zero_length_means_256_blocks() {
    let (mut lu, mut vol) = setup();
    // 256 blocks from LBA 0 exceed a 64-block LU
    let c = run(&mut lu, &mut vol, &nexus(1), &[READ_6, 0, 0, 0, 0, 0], &[]);
    assert_eq!(c.sense.unwrap().asc, ASC_LBA_OUT_OF_RANGE);
    // READ(10) with zero blocks is a no-op, but still range checked
    good(&run(
        &mut lu,
        &mut vol,
        &nexus(1),
        &rw10(READ_10, BLOCKS as u32, 0, 0),
        &[],
    ));
    let c = run(
        &mut lu,
        &mut vol,
        &nexus(1),
        &rw10(READ_10, BLOCKS as u32 + 1, 0, 0),
        &[],
    );
    assert_eq!(c.sense.unwrap().asc, ASC_LBA_OUT_OF_RANGE);
}

#[test]
fn out_of_range_and_protect_fields() {
    let (mut lu, mut vol) = setup();
    let n = nexus(1);
    for (lba, len) in [(BLOCKS - 1, 2u32), (u64::MAX, 1), (1 << 63, 1)] {
        let c = run(&mut lu, &mut vol, &n, &rw16(READ_16, lba, len, 0), &[]);
        let s = c.sense_bytes().unwrap();
        assert_eq!((s[2], s[12], s[13]), (0x05, 0x21, 0x00));
    }
    let c = run(&mut lu, &mut vol, &n, &rw10(READ_10, 0, 1, 0x20), &[]);
    let s = c.sense.unwrap();
    assert_eq!(s.asc, ASC_INVALID_FIELD_IN_CDB);
    assert_eq!(s.field.unwrap().byte, 1);
    let c = run(
        &mut lu,
        &mut vol,
        &n,
        &rw10(WRITE_10, 0, 1, 0x40),
        &pattern(0, 1),
    );
    assert_eq!(c.sense.unwrap().asc, ASC_INVALID_FIELD_IN_CDB);
}

#[test]
fn max_transfer_length_enforced() {
    let mut cfg = LuConfig::new(512, [0; 16]);
    cfg.max_transfer_blocks = 4;
    let mut lu = LogicalUnit::new(cfg, BLOCKS);
    let mut vol = MemVol::new(BS, BLOCKS as usize);
    let _ = run(&mut lu, &mut vol, &nexus(1), &tur(), &[]);
    let c = run(&mut lu, &mut vol, &nexus(1), &rw10(READ_10, 0, 5, 0), &[]);
    let s = c.sense.unwrap();
    assert_eq!(
        (s.asc, s.field.unwrap().byte),
        (ASC_INVALID_FIELD_IN_CDB, 7)
    );
}

#[test]
fn unknown_opcode_and_naca() {
    let (mut lu, mut vol) = setup();
    let c = run(
        &mut lu,
        &mut vol,
        &nexus(1),
        &[0xC5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[],
    );
    let s = c.sense_bytes().unwrap();
    assert_eq!((s[2], s[12], s[13]), (0x05, 0x20, 0x00));
    // SANITIZE (48h) is not supported
    let c = run(
        &mut lu,
        &mut vol,
        &nexus(1),
        &[0x48, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        &[],
    );
    assert_eq!(c.sense.unwrap().asc, ASC_INVALID_OPCODE);
}

#[test]
fn unmap_then_reads_zero_and_lba_status() {
    let (mut lu, mut vol) = setup();
    let n = nexus(1);
    good(&run(
        &mut lu,
        &mut vol,
        &n,
        &rw10(WRITE_10, 0, 8, 0),
        &pattern(9, 8),
    ));
    let mut list = vec![0u8; 24];
    list[0..2].copy_from_slice(&22u16.to_be_bytes());
    list[2..4].copy_from_slice(&16u16.to_be_bytes());
    list[8..16].copy_from_slice(&2u64.to_be_bytes());
    list[16..20].copy_from_slice(&3u32.to_be_bytes());
    let cdb = [UNMAP, 0, 0, 0, 0, 0, 0, 0, 24, 0];
    good(&run(&mut lu, &mut vol, &n, &cdb, &list));
    let d = read(&mut lu, &mut vol, 0, 8);
    assert!(d[2 * BS..5 * BS].iter().all(|b| *b == 0));
    assert_eq!(&d[..2 * BS], &pattern(9, 8)[..2 * BS]);
    let mut gls = rw16(SERVICE_ACTION_IN_16, 2, 0, SAI_GET_LBA_STATUS);
    gls[10..14].copy_from_slice(&4096u32.to_be_bytes());
    let c = run(&mut lu, &mut vol, &n, &gls, &[]);
    good(&c);
    assert_eq!(&c.data[8..16], &2u64.to_be_bytes());
    assert_eq!(&c.data[16..20], &3u32.to_be_bytes());
    assert_eq!(c.data[20] & 0x0F, 1, "deallocated");
    assert_eq!(&c.data[24..32], &5u64.to_be_bytes());
    assert_eq!(c.data[36] & 0x0F, 0, "mapped");
    // beyond end of LU
    let mut gls = rw16(SERVICE_ACTION_IN_16, BLOCKS, 0, SAI_GET_LBA_STATUS);
    gls[13] = 24;
    assert_eq!(
        run(&mut lu, &mut vol, &n, &gls, &[]).sense.unwrap().asc,
        ASC_LBA_OUT_OF_RANGE
    );
}

#[test]
fn unmap_parameter_errors() {
    let (mut lu, mut vol) = setup();
    let n = nexus(1);
    let cdb = |len: u16| {
        let mut c = vec![UNMAP, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        c[7..9].copy_from_slice(&len.to_be_bytes());
        c
    };
    good(&run(&mut lu, &mut vol, &n, &cdb(0), &[]));
    let c = run(&mut lu, &mut vol, &n, &cdb(4), &[0; 4]);
    assert_eq!(c.sense.unwrap().asc, ASC_PARAMETER_LIST_LENGTH_ERROR);
    // block descriptor data length larger than the list
    let mut list = vec![0u8; 24];
    list[2..4].copy_from_slice(&32u16.to_be_bytes());
    let c = run(&mut lu, &mut vol, &n, &cdb(24), &list);
    assert_eq!(c.sense.unwrap().asc, ASC_INVALID_FIELD_IN_PARAM_LIST);
    // descriptor beyond the end
    list[2..4].copy_from_slice(&16u16.to_be_bytes());
    list[8..16].copy_from_slice(&(BLOCKS - 1).to_be_bytes());
    list[16..20].copy_from_slice(&2u32.to_be_bytes());
    let c = run(&mut lu, &mut vol, &n, &cdb(24), &list);
    assert_eq!(c.sense.unwrap().asc, ASC_LBA_OUT_OF_RANGE);
    // ANCHOR not supported
    let mut a = cdb(24);
    a[1] = 1;
    assert_eq!(
        run(&mut lu, &mut vol, &n, &a, &list).sense.unwrap().asc,
        ASC_INVALID_FIELD_IN_CDB
    );
}

#[test]
fn write_same_pattern_zero_and_ndob() {
    let (mut lu, mut vol) = setup();
    let n = nexus(1);
    let block = pattern(5, 1);
    good(&run(
        &mut lu,
        &mut vol,
        &n,
        &rw10(WRITE_SAME_10, 4, 3, 0),
        &block,
    ));
    let d = read(&mut lu, &mut vol, 4, 3);
    for i in 0..3 {
        assert_eq!(&d[i * BS..(i + 1) * BS], &block[..]);
    }
    // zero pattern with UNMAP deallocates
    let Step::NeedDataOut { task, .. } = lu.start(&n, &rw10(WRITE_SAME_10, 4, 2, 0x08), 512) else {
        panic!()
    };
    let Step::Io { op, task } = lu.data_out(&n, task, Bytes::from(vec![0u8; BS])) else {
        panic!()
    };
    assert_eq!(
        op,
        BlockOp::WriteZeroes {
            lba: 4,
            blocks: 2,
            unmap: true
        }
    );
    good(&lu.io_done(task, vol.exec(op)));
    assert!(read(&mut lu, &mut vol, 4, 2).iter().all(|b| *b == 0));
    assert_eq!(&read(&mut lu, &mut vol, 6, 1)[..], &block[..]);
    // NDOB needs no data
    let Step::Io { op, .. } = lu.start(&n, &rw16(WRITE_SAME_16, 0, 8, 0x08 | 0x01), 0) else {
        panic!()
    };
    assert_eq!(
        op,
        BlockOp::WriteZeroes {
            lba: 0,
            blocks: 8,
            unmap: true
        }
    );
    // WSNZ: zero blocks rejected; beyond end rejected
    let c = run(&mut lu, &mut vol, &n, &rw10(WRITE_SAME_10, 0, 0, 0), &block);
    assert_eq!(c.sense.unwrap().asc, ASC_INVALID_FIELD_IN_CDB);
    let c = run(
        &mut lu,
        &mut vol,
        &n,
        &rw16(WRITE_SAME_16, BLOCKS, 1, 0),
        &block,
    );
    assert_eq!(c.sense.unwrap().asc, ASC_LBA_OUT_OF_RANGE);
}

fn caw(lba: u64, n: u8) -> Vec<u8> {
    let mut c = rw16(COMPARE_AND_WRITE, lba, 0, 0);
    c[13] = n;
    c
}

#[test]
fn compare_and_write_success_and_miscompare() {
    let (mut lu, mut vol) = setup();
    let n = nexus(1);
    let old = pattern(1, 1);
    let new = pattern(2, 1);
    good(&run(&mut lu, &mut vol, &n, &rw10(WRITE_10, 7, 1, 0), &old));
    let mut buf = old.clone();
    buf.extend_from_slice(&new);
    good(&run(&mut lu, &mut vol, &n, &caw(7, 1), &buf));
    assert_eq!(&read(&mut lu, &mut vol, 7, 1)[..], &new[..]);
    // now the compare half is stale
    let mut stale = new.clone();
    stale[100] ^= 0xFF;
    stale.extend_from_slice(&old);
    let c = run(&mut lu, &mut vol, &n, &caw(7, 1), &stale);
    assert_eq!(c.status, Status::CheckCondition);
    let s = c.sense_bytes().unwrap();
    assert_eq!(s[0], 0xF0, "VALID");
    assert_eq!((s[2], s[12], s[13]), (0x0E, 0x1D, 0x00));
    assert_eq!(&s[3..7], &100u32.to_be_bytes());
    assert_eq!(&read(&mut lu, &mut vol, 7, 1)[..], &new[..]);
    // more blocks than MAXIMUM COMPARE AND WRITE LENGTH
    let c = run(&mut lu, &mut vol, &n, &caw(0, 2), &[0; 4 * BS]);
    assert_eq!(c.sense.unwrap().field.unwrap().byte, 13);
    good(&run(&mut lu, &mut vol, &n, &caw(0, 0), &[]));
}

#[test]
fn verify_bytchk() {
    let (mut lu, mut vol) = setup();
    let n = nexus(1);
    let d = pattern(3, 2);
    good(&run(&mut lu, &mut vol, &n, &rw10(WRITE_10, 0, 2, 0), &d));
    good(&run(
        &mut lu,
        &mut vol,
        &n,
        &rw10(VERIFY_10, 0, 2, 0x02),
        &d,
    ));
    let mut bad = d.clone();
    bad[600] ^= 1;
    let c = run(&mut lu, &mut vol, &n, &rw10(VERIFY_10, 0, 2, 0x02), &bad);
    let s = c.sense.unwrap();
    assert_eq!(
        (s.key, s.asc, s.information),
        (
            SenseKey::Miscompare,
            ASC_MISCOMPARE_DURING_VERIFY,
            Some(600)
        )
    );
    good(&run(&mut lu, &mut vol, &n, &rw16(VERIFY_16, 0, 2, 0), &[]));
    let c = run(&mut lu, &mut vol, &n, &rw16(VERIFY_16, BLOCKS, 1, 0), &[]);
    assert_eq!(c.sense.unwrap().asc, ASC_LBA_OUT_OF_RANGE);
    let c = run(&mut lu, &mut vol, &n, &rw10(VERIFY_10, 0, 1, 0x04), &[]);
    assert_eq!(c.sense.unwrap().asc, ASC_INVALID_FIELD_IN_CDB);
}

#[test]
fn sync_cache_flushes() {
    let (mut lu, mut vol) = setup();
    good(&run(
        &mut lu,
        &mut vol,
        &nexus(1),
        &rw10(SYNC_CACHE_10, 0, 0, 0),
        &[],
    ));
    good(&run(
        &mut lu,
        &mut vol,
        &nexus(1),
        &rw16(SYNC_CACHE_16, 0, 0, 0),
        &[],
    ));
    assert_eq!(vol.flushes, 2);
    let c = run(
        &mut lu,
        &mut vol,
        &nexus(1),
        &rw10(SYNC_CACHE_10, 100, 0, 0),
        &[],
    );
    assert_eq!(c.sense.unwrap().asc, ASC_LBA_OUT_OF_RANGE);
}

#[test]
fn misc_commands_succeed() {
    let (mut lu, mut vol) = setup();
    let n = nexus(1);
    good(&run(
        &mut lu,
        &mut vol,
        &n,
        &[START_STOP_UNIT, 0, 0, 0, 1, 0],
        &[],
    ));
    good(&run(
        &mut lu,
        &mut vol,
        &n,
        &[PREVENT_ALLOW, 0, 0, 0, 1, 0],
        &[],
    ));
    let c = run(
        &mut lu,
        &mut vol,
        &n,
        &[REPORT_LUNS, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        &[],
    );
    assert_eq!(
        &c.data[..],
        &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    let mut rc16 = rw16(SERVICE_ACTION_IN_16, 0, 32, SAI_READ_CAPACITY_16);
    let c = run(&mut lu, &mut vol, &n, &rc16, &[]);
    assert_eq!(&c.data[..8], &(BLOCKS - 1).to_be_bytes());
    rc16[1] = 0x11; // unknown service action
    assert_eq!(
        run(&mut lu, &mut vol, &n, &rc16, &[]).sense.unwrap().asc,
        ASC_INVALID_FIELD_IN_CDB
    );
}

#[test]
fn mode_select_round_trip_through_lu() {
    let (mut lu, mut vol) = setup();
    let n = nexus(1);
    let c = run(
        &mut lu,
        &mut vol,
        &n,
        &[MODE_SENSE_6, 0x08, 0x08, 0, 255, 0],
        &[],
    );
    let mut page = c.data.to_vec();
    page[0] = 0;
    good(&run(
        &mut lu,
        &mut vol,
        &n,
        &[MODE_SELECT_6, 0x10, 0, 0, page.len() as u8, 0],
        &page,
    ));
    let c = run(
        &mut lu,
        &mut vol,
        &n,
        &[MODE_SELECT_6, 0x11, 0, 0, page.len() as u8, 0],
        &page,
    );
    assert_eq!(c.sense.unwrap().asc, ASC_INVALID_FIELD_IN_CDB);
}

#[test]
fn reserve6_conflicts_other_nexus_until_release() {
    let (mut lu, mut vol) = setup();
    let (a, b) = (nexus(1), nexus(2));
    good(&run(
        &mut lu,
        &mut vol,
        &a,
        &[RESERVE_6, 0, 0, 0, 0, 0],
        &[],
    ));
    let c = run(&mut lu, &mut vol, &b, &rw10(READ_10, 0, 1, 0), &[]);
    assert_eq!(c.status, Status::ReservationConflict);
    assert_eq!(
        run(&mut lu, &mut vol, &b, &[RESERVE_6, 0, 0, 0, 0, 0], &[]).status,
        Status::ReservationConflict
    );
    good(&run(&mut lu, &mut vol, &b, &[INQUIRY, 0, 0, 0, 36, 0], &[]));
    // RELEASE from a non-holder succeeds without releasing
    good(&run(
        &mut lu,
        &mut vol,
        &b,
        &[RELEASE_6, 0, 0, 0, 0, 0],
        &[],
    ));
    assert_eq!(
        run(&mut lu, &mut vol, &b, &tur(), &[]).status,
        Status::ReservationConflict
    );
    good(&run(&mut lu, &mut vol, &a, &rw10(READ_10, 0, 1, 0), &[]));
    good(&run(
        &mut lu,
        &mut vol,
        &a,
        &[RELEASE_6, 0, 0, 0, 0, 0],
        &[],
    ));
    good(&run(&mut lu, &mut vol, &b, &tur(), &[]));
    // nexus loss releases
    good(&run(
        &mut lu,
        &mut vol,
        &b,
        &[RESERVE_6, 0, 0, 0, 0, 0],
        &[],
    ));
    lu.nexus_lost(2);
    good(&run(&mut lu, &mut vol, &a, &tur(), &[]));
}

// ---- persistent reservations ----

fn prout(sa: u8, ty: u8, key: u64, sa_key: u64, aptpl: bool) -> (Vec<u8>, Vec<u8>) {
    let mut c = vec![PR_OUT, sa, ty, 0, 0, 0, 0, 0, 24, 0];
    c[1] = sa;
    let mut p = vec![0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[20] = u8::from(aptpl);
    (c, p)
}

fn pro(
    lu: &mut LogicalUnit,
    vol: &mut MemVol,
    n: &Nexus,
    sa: u8,
    ty: u8,
    key: u64,
    sa_key: u64,
) -> Completion {
    let (c, p) = prout(sa, ty, key, sa_key, false);
    run(lu, vol, n, &c, &p)
}

fn prin(lu: &mut LogicalUnit, vol: &mut MemVol, n: &Nexus, sa: u8) -> Bytes {
    let c = run(lu, vol, n, &[PR_IN, sa, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]);
    good(&c);
    c.data
}

#[test]
fn pr_register_reserve_conflict_release() {
    let (mut lu, mut vol) = setup();
    let (a, b) = (nexus(1), nexus(2));
    good(&pro(&mut lu, &mut vol, &a, 0, 0, 0, 0xA));
    good(&pro(&mut lu, &mut vol, &b, 0, 0, 0, 0xB));
    // wrong key on re-register
    assert_eq!(
        pro(&mut lu, &mut vol, &a, 0, 0, 0x99, 0xC).status,
        Status::ReservationConflict
    );
    let keys = prin(&mut lu, &mut vol, &a, 0);
    assert_eq!(&keys[0..4], &2u32.to_be_bytes(), "generation");
    assert_eq!(&keys[4..8], &16u32.to_be_bytes());
    assert_eq!(&keys[8..16], &0xAu64.to_be_bytes());
    assert_eq!(&keys[16..24], &0xBu64.to_be_bytes());
    // A reserves Write Exclusive
    good(&pro(&mut lu, &mut vol, &a, 1, 1, 0xA, 0));
    let r = prin(&mut lu, &mut vol, &b, 1);
    assert_eq!(&r[4..8], &16u32.to_be_bytes());
    assert_eq!(&r[8..16], &0xAu64.to_be_bytes());
    assert_eq!(r[21], 0x01);
    // B may read, not write
    good(&run(&mut lu, &mut vol, &b, &rw10(READ_10, 0, 1, 0), &[]));
    let c = run(
        &mut lu,
        &mut vol,
        &b,
        &rw10(WRITE_10, 0, 1, 0),
        &pattern(0, 1),
    );
    assert_eq!(c.status, Status::ReservationConflict);
    good(&run(
        &mut lu,
        &mut vol,
        &a,
        &rw10(WRITE_10, 0, 1, 0),
        &pattern(0, 1),
    ));
    // B cannot reserve; non-holder release is a no-op
    assert_eq!(
        pro(&mut lu, &mut vol, &b, 1, 1, 0xB, 0).status,
        Status::ReservationConflict
    );
    good(&pro(&mut lu, &mut vol, &b, 2, 1, 0xB, 0));
    assert_eq!(prin(&mut lu, &mut vol, &b, 1)[7], 16);
    // holder release with wrong type
    let c = pro(&mut lu, &mut vol, &a, 2, 3, 0xA, 0);
    assert_eq!(c.sense.unwrap().asc, super::pr_cmd::ASC_INVALID_RELEASE);
    good(&pro(&mut lu, &mut vol, &a, 2, 1, 0xA, 0));
    assert_eq!(prin(&mut lu, &mut vol, &b, 1)[7], 0);
    good(&run(
        &mut lu,
        &mut vol,
        &b,
        &rw10(WRITE_10, 0, 1, 0),
        &pattern(0, 1),
    ));
}

#[test]
fn pr_exclusive_access_blocks_reads() {
    let (mut lu, mut vol) = setup();
    let (a, b) = (nexus(1), nexus(2));
    good(&pro(&mut lu, &mut vol, &a, 0, 0, 0, 1));
    good(&pro(&mut lu, &mut vol, &a, 1, 3, 1, 0));
    assert_eq!(
        run(&mut lu, &mut vol, &b, &rw10(READ_10, 0, 1, 0), &[]).status,
        Status::ReservationConflict
    );
    // identification and PR IN stay allowed
    good(&run(&mut lu, &mut vol, &b, &[INQUIRY, 0, 0, 0, 36, 0], &[]));
    good(&run(&mut lu, &mut vol, &b, &tur(), &[]));
    let _ = prin(&mut lu, &mut vol, &b, 0);
}

#[test]
fn pr_registrants_only_and_unregister_releases() {
    let (mut lu, mut vol) = setup();
    let (a, b, c) = (nexus(1), nexus(2), nexus(3));
    let _ = run(&mut lu, &mut vol, &c, &tur(), &[]);
    good(&pro(&mut lu, &mut vol, &a, 0, 0, 0, 1));
    good(&pro(&mut lu, &mut vol, &b, 6, 0, 0, 2)); // register and ignore
    good(&pro(&mut lu, &mut vol, &a, 1, 5, 1, 0)); // WE-RO
    good(&run(
        &mut lu,
        &mut vol,
        &b,
        &rw10(WRITE_10, 0, 1, 0),
        &pattern(0, 1),
    ));
    assert_eq!(
        run(
            &mut lu,
            &mut vol,
            &c,
            &rw10(WRITE_10, 0, 1, 0),
            &pattern(0, 1)
        )
        .status,
        Status::ReservationConflict
    );
    good(&run(&mut lu, &mut vol, &c, &rw10(READ_10, 0, 1, 0), &[]));
    // holder unregisters: reservation released, B gets RESERVATIONS RELEASED
    good(&pro(&mut lu, &mut vol, &a, 0, 0, 1, 0));
    assert_eq!(prin(&mut lu, &mut vol, &c, 1)[7], 0);
    let s = run(&mut lu, &mut vol, &b, &tur(), &[]);
    assert_eq!(
        sense_code(&s),
        Some((SenseKey::UnitAttention, ASC_RESERVATIONS_RELEASED))
    );
}

#[test]
fn pr_all_registrants_every_registrant_holds() {
    let (mut lu, mut vol) = setup();
    let (a, b) = (nexus(1), nexus(2));
    good(&pro(&mut lu, &mut vol, &a, 0, 0, 0, 1));
    good(&pro(&mut lu, &mut vol, &b, 0, 0, 0, 2));
    good(&pro(&mut lu, &mut vol, &a, 1, 8, 1, 0)); // EA-AR
    let r = prin(&mut lu, &mut vol, &b, 1);
    assert_eq!(&r[8..16], &[0; 8], "all-registrants key is zero");
    assert_eq!(r[21], 8);
    good(&run(&mut lu, &mut vol, &b, &rw10(READ_10, 0, 1, 0), &[]));
    // full status marks both as holders
    let fs = prin(&mut lu, &mut vol, &a, 3);
    let first = 8;
    assert_eq!(fs[first + 12] & 1, 1);
    let tid_len = u32::from_be_bytes([
        fs[first + 20],
        fs[first + 21],
        fs[first + 22],
        fs[first + 23],
    ]) as usize;
    assert_eq!(fs[first + 24], 0x45, "iSCSI TransportID format 01b");
    assert_eq!(tid_len % 4, 0);
    let second = first + 24 + tid_len;
    assert_eq!(fs[second + 12] & 1, 1);
    assert_eq!(fs[second + 13], 8);
}

#[test]
fn pr_preempt_and_abort() {
    let (mut lu, mut vol) = setup();
    let (a, b) = (nexus(1), nexus(2));
    good(&pro(&mut lu, &mut vol, &a, 0, 0, 0, 1));
    good(&pro(&mut lu, &mut vol, &b, 0, 0, 0, 2));
    good(&pro(&mut lu, &mut vol, &a, 1, 1, 1, 0));
    // B preempts A's reservation and registration, switching to EA
    let c = pro(&mut lu, &mut vol, &b, 5, 3, 2, 1);
    good(&c);
    assert_eq!(c.abort_nexuses, vec![1]);
    let r = prin(&mut lu, &mut vol, &b, 1);
    assert_eq!(&r[8..16], &2u64.to_be_bytes());
    assert_eq!(r[21], 3);
    let s = run(&mut lu, &mut vol, &a, &tur(), &[]);
    assert_eq!(
        sense_code(&s),
        Some((SenseKey::UnitAttention, ASC_REGISTRATIONS_PREEMPTED))
    );
    assert_eq!(
        run(&mut lu, &mut vol, &a, &rw10(READ_10, 0, 1, 0), &[]).status,
        Status::ReservationConflict
    );
    // A is no longer registered
    assert_eq!(
        pro(&mut lu, &mut vol, &a, 1, 3, 1, 0).status,
        Status::ReservationConflict
    );
    // preempting a key nobody holds conflicts
    assert_eq!(
        pro(&mut lu, &mut vol, &b, 4, 3, 2, 0x77).status,
        Status::ReservationConflict
    );
}

#[test]
fn pr_clear_and_unregistered_actions() {
    let (mut lu, mut vol) = setup();
    let (a, b) = (nexus(1), nexus(2));
    assert_eq!(
        pro(&mut lu, &mut vol, &a, 1, 1, 0, 0).status,
        Status::ReservationConflict
    );
    assert_eq!(
        pro(&mut lu, &mut vol, &a, 3, 0, 0, 0).status,
        Status::ReservationConflict
    );
    good(&pro(&mut lu, &mut vol, &a, 0, 0, 0, 1));
    good(&pro(&mut lu, &mut vol, &b, 0, 0, 0, 2));
    good(&pro(&mut lu, &mut vol, &b, 1, 3, 2, 0));
    good(&pro(&mut lu, &mut vol, &a, 3, 0, 1, 0));
    let keys = prin(&mut lu, &mut vol, &a, 0);
    assert_eq!(&keys[4..8], &[0; 4]);
    let s = run(&mut lu, &mut vol, &b, &tur(), &[]);
    assert_eq!(
        sense_code(&s),
        Some((SenseKey::UnitAttention, ASC_RESERVATIONS_PREEMPTED))
    );
    good(&run(&mut lu, &mut vol, &b, &rw10(READ_10, 0, 1, 0), &[]));
}

#[test]
fn pr_cdb_and_parameter_errors() {
    let (mut lu, mut vol) = setup();
    let a = nexus(1);
    // wrong parameter list length
    let c = run(
        &mut lu,
        &mut vol,
        &a,
        &[PR_OUT, 0, 0, 0, 0, 0, 0, 0, 20, 0],
        &[0; 20],
    );
    assert_eq!(c.sense.unwrap().asc, ASC_PARAMETER_LIST_LENGTH_ERROR);
    // REGISTER AND MOVE unsupported
    let (cdb, p) = prout(7, 1, 0, 0, false);
    assert_eq!(
        run(&mut lu, &mut vol, &a, &cdb, &p).sense.unwrap().asc,
        ASC_INVALID_FIELD_IN_CDB
    );
    // ALL_TG_PT unsupported
    let (cdb, mut p) = prout(0, 0, 0, 5, false);
    p[20] = 0x04;
    assert_eq!(
        run(&mut lu, &mut vol, &a, &cdb, &p).sense.unwrap().asc,
        ASC_INVALID_FIELD_IN_PARAM_LIST
    );
    // invalid type on reserve
    good(&pro(&mut lu, &mut vol, &a, 0, 0, 0, 5));
    assert_eq!(
        pro(&mut lu, &mut vol, &a, 1, 2, 5, 0).sense.unwrap().asc,
        ASC_INVALID_FIELD_IN_CDB
    );
    // RESERVE(6) conflicts with existing registrations
    assert_eq!(
        run(&mut lu, &mut vol, &a, &[RESERVE_6, 0, 0, 0, 0, 0], &[]).status,
        Status::ReservationConflict
    );
    // REPORT CAPABILITIES layout
    let caps = prin(&mut lu, &mut vol, &a, 2);
    assert_eq!(&caps[0..2], &[0, 8]);
    assert_eq!(caps[3] & 0x80, 0x80, "TMV");
    assert_eq!(&caps[4..6], &[0xEA, 0x01]);
    // unknown PR IN service action
    let c = run(
        &mut lu,
        &mut vol,
        &a,
        &[PR_IN, 9, 0, 0, 0, 0, 0, 0, 255, 0],
        &[],
    );
    assert_eq!(c.sense.unwrap().asc, ASC_INVALID_FIELD_IN_CDB);
    // allocation length truncation on READ KEYS
    let c = run(
        &mut lu,
        &mut vol,
        &a,
        &[PR_IN, 0, 0, 0, 0, 0, 0, 0, 6, 0],
        &[],
    );
    assert_eq!(c.data.len(), 6);
}

#[test]
fn pr_state_persisted_before_completion_and_reloadable() {
    let (mut lu, _vol) = setup();
    let a = nexus(1);
    let (cdb, p) = prout(0, 0, 0, 0x1234, true);
    let Step::NeedDataOut { task, .. } = lu.start(&a, &cdb, 24) else {
        panic!()
    };
    let Step::Io {
        op: BlockOp::PersistReservations { bytes },
        task,
    } = lu.data_out(&a, task, Bytes::from(p))
    else {
        panic!("PR OUT must persist before completing")
    };
    let st = PrState::from_bytes(&bytes).unwrap();
    assert!(st.aptpl);
    assert_eq!(st.registrations[0].key, 0x1234);
    assert_eq!(&st, lu.pr_state());
    good(&lu.io_done(task, super::task::BlockResult::Ok));
    let mut other = LogicalUnit::new(LuConfig::new(512, [0x42; 16]), BLOCKS);
    other.load_pr_state(&bytes).unwrap();
    assert_eq!(other.pr_state(), lu.pr_state());
    // a failed persist fails the command
    let (cdb, p) = prout(0, 0, 0x1234, 0x5678, false);
    let Step::NeedDataOut { task, .. } = lu.start(&a, &cdb, 24) else {
        panic!()
    };
    let Step::Io { task, .. } = lu.data_out(&a, task, Bytes::from(p)) else {
        panic!()
    };
    let c = lu.io_done(task, super::task::BlockResult::Internal);
    assert_eq!(c.sense.unwrap().key, SenseKey::HardwareError);
}

#[test]
fn inflight_commands_are_independent() {
    let (mut lu, mut vol) = setup();
    let n = nexus(1);
    let Step::NeedDataOut { task: t1, .. } = lu.start(&n, &rw10(WRITE_10, 0, 1, 0), 512) else {
        panic!()
    };
    let Step::NeedDataOut { task: t2, .. } = lu.start(&n, &rw10(WRITE_10, 1, 1, 0), 512) else {
        panic!()
    };
    let Step::Io { op: o2, task: t2 } = lu.data_out(&n, t2, Bytes::from(pattern(2, 1))) else {
        panic!()
    };
    let Step::Io { op: o1, task: t1 } = lu.data_out(&n, t1, Bytes::from(pattern(1, 1))) else {
        panic!()
    };
    good(&lu.io_done(t2, vol.exec(o2)));
    good(&lu.io_done(t1, vol.exec(o1)));
    let d = read(&mut lu, &mut vol, 0, 2);
    assert_eq!(&d[..BS], &pattern(1, 1)[..]);
    assert_eq!(&d[BS..], &pattern(2, 1)[..]);
}

proptest! {
    #[test]
    fn random_cdbs_never_panic(
        cdb in proptest::collection::vec(any::<u8>(), 0..20),
        data in proptest::collection::vec(any::<u8>(), 0..2048),
        tpg in 0u16..3,
    ) {
        let mut lu = LogicalUnit::new(LuConfig::new(512, [3; 16]), 16);
        lu.set_port_groups(vec![
            super::alua::PortGroup { id: 1, state: AccessState::Optimized, preferred: true, relative_ports: vec![1] },
            super::alua::PortGroup { id: 2, state: AccessState::Standby, preferred: false, relative_ports: vec![2] },
        ]);
        let mut vol = MemVol::new(512, 16);
        let mut n = nexus(1);
        n.target_port_group = tpg;
        for _ in 0..2 {
            let c = run(&mut lu, &mut vol, &n, &cdb, &data);
            if c.status == Status::CheckCondition {
                prop_assert!(c.sense.is_some());
            }
        }
    }

    #[test]
    fn random_parameter_lists_never_panic(
        op in prop_oneof![Just(UNMAP), Just(PR_OUT), Just(MODE_SELECT_10)],
        sa in 0u8..8,
        data in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut lu = LogicalUnit::new(LuConfig::new(512, [3; 16]), 16);
        let mut vol = MemVol::new(512, 16);
        let n = nexus(1);
        let _ = run(&mut lu, &mut vol, &n, &tur(), &[]);
        let len = data.len() as u16;
        let mut cdb = vec![op, sa, 1, 0, 0, 0, 0, 0, 0, 0];
        if op == PR_OUT {
            cdb[8] = 24;
        } else {
            cdb[7..9].copy_from_slice(&len.to_be_bytes());
        }
        let _ = run(&mut lu, &mut vol, &n, &cdb, &data);
    }
}
