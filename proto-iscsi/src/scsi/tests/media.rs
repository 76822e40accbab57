//! Media-access commands end to end: read/write, UNMAP, WRITE SAME, COMPARE AND WRITE, VERIFY.

use bytes::Bytes;

use super::*;
use crate::scsi::config::LuConfig;
use crate::scsi::task::{BlockOp, Status, Step};
use crate::scsi::testvol::{run, MemVol};
use crate::scsi::unit::LogicalUnit;

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
            deallocate: true,
            fua: false
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
            deallocate: true,
            fua: false
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
fn the_thin_provisioning_soft_threshold_is_a_unit_attention_on_every_nexus() {
    let (mut lu, mut vol) = setup();
    lu.soft_threshold_reached();
    for id in [1, 2] {
        let c = run(&mut lu, &mut vol, &nexus(id), &tur(), &[]);
        assert_eq!(
            sense_code(&c),
            Some((
                SenseKey::UnitAttention,
                crate::scsi::sense::ASC_THIN_PROVISIONING_SOFT_THRESHOLD
            ))
        );
        good(&run(&mut lu, &mut vol, &nexus(id), &tur(), &[]));
    }
}

#[test]
fn write_protected_unit_refuses_every_change_and_reports_wp() {
    let mut cfg = LuConfig::new(512, [0; 16]);
    cfg.write_protected = true;
    let mut lu = LogicalUnit::new(cfg, BLOCKS);
    let mut vol = MemVol::new(BS, BLOCKS as usize);
    let n = nexus(1);
    let _ = run(&mut lu, &mut vol, &n, &tur(), &[]);
    let mut unmap = vec![0u8; 24];
    unmap[0..2].copy_from_slice(&22u16.to_be_bytes());
    unmap[2..4].copy_from_slice(&16u16.to_be_bytes());
    unmap[16..20].copy_from_slice(&1u32.to_be_bytes());
    let mut caw = rw16(COMPARE_AND_WRITE, 0, 0, 0);
    caw[13] = 1;
    let changes: [(Vec<u8>, Vec<u8>); 7] = [
        (vec![WRITE_6, 0, 0, 1, 1, 0], pattern(1, 1)),
        (rw10(WRITE_10, 1, 1, 0), pattern(1, 1)),
        (rw16(WRITE_16, 1, 1, 0x08), pattern(1, 1)),
        (rw10(WRITE_SAME_10, 0, 4, 0), pattern(1, 1)),
        (rw16(WRITE_SAME_16, 0, 4, 0x08), pattern(0, 1)),
        (vec![UNMAP, 0, 0, 0, 0, 0, 0, 0, 24, 0], unmap),
        (caw, pattern(0, 2)),
    ];
    for (cdb, data) in &changes {
        let c = run(&mut lu, &mut vol, &n, cdb, data);
        assert_eq!(
            sense_code(&c),
            Some((SenseKey::DataProtect, ASC_WRITE_PROTECTED)),
            "opcode {:#04x}",
            cdb[0]
        );
    }
    assert!(vol.data.iter().all(|b| *b == 0), "nothing was written");
    // Reads and cache flushes go on.
    good(&run(&mut lu, &mut vol, &n, &rw10(READ_10, 0, 2, 0), &[]));
    good(&run(
        &mut lu,
        &mut vol,
        &n,
        &rw10(SYNC_CACHE_10, 0, 0, 0),
        &[],
    ));
    // MODE SENSE(6) and (10): WP (bit 7 of the device-specific parameter) set.
    let c = run(
        &mut lu,
        &mut vol,
        &n,
        &[MODE_SENSE_6, 0x08, 0x3F, 0, 255, 0],
        &[],
    );
    good(&c);
    assert_eq!(c.data[2] & 0x80, 0x80);
    let c = run(
        &mut lu,
        &mut vol,
        &n,
        &[MODE_SENSE_10, 0x08, 0x3F, 0, 0, 0, 0, 1, 0, 0],
        &[],
    );
    good(&c);
    assert_eq!(c.data[3] & 0x80, 0x80);
    // A writable unit does not report WP.
    let (mut lu, mut vol) = setup();
    let c = run(
        &mut lu,
        &mut vol,
        &n,
        &[MODE_SENSE_6, 0x08, 0x3F, 0, 255, 0],
        &[],
    );
    assert_eq!(c.data[2] & 0x80, 0);
}
