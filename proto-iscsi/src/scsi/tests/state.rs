//! Unit attentions, ALUA states, RESERVE(6), misc commands and no-panic proptests.

use bytes::Bytes;

use super::*;
use crate::scsi::alua::AccessState;
use crate::scsi::config::LuConfig;
use crate::scsi::task::{Status, Step};
use crate::scsi::testvol::{run, MemVol};
use crate::scsi::unit::LogicalUnit;
use proptest::prelude::*;

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

/// A resize reaches every I_T nexus the unit knows once (not twice for two resizes before the
/// host looked, nothing for a "resize" to the same size), is also reported by REQUEST SENSE,
/// and READ CAPACITY (16) and the media range follow the new size.
#[test]
fn capacity_change_is_reported_once_per_nexus_and_the_new_blocks_serve() {
    let (mut lu, mut vol) = setup();
    good(&run(
        &mut lu,
        &mut vol,
        &nexus(3),
        &[INQUIRY, 0, 0, 0, 36, 0],
        &[],
    ));
    let c = run(&mut lu, &mut vol, &nexus(3), &tur(), &[]);
    assert_eq!(c.sense.unwrap().asc, ASC_POWER_ON_RESET);
    lu.set_capacity(BLOCKS);
    good(&run(&mut lu, &mut vol, &nexus(1), &tur(), &[]));
    vol = MemVol::new(BS, BLOCKS as usize * 4);
    lu.set_capacity(BLOCKS * 2);
    lu.set_capacity(BLOCKS * 4);
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
        &nexus(3),
        &[REQUEST_SENSE, 0, 0, 0, 252, 0],
        &[],
    );
    assert_eq!((c.data[2], c.data[12], c.data[13]), (0x06, 0x2A, 0x09));
    good(&run(&mut lu, &mut vol, &nexus(3), &tur(), &[]));
    let mut rc16 = vec![0u8; 16];
    rc16[0] = 0x9E;
    rc16[1] = 0x10;
    rc16[13] = 32;
    let c = run(&mut lu, &mut vol, &nexus(1), &rc16, &[]);
    good(&c);
    assert_eq!(&c.data[..8], &(BLOCKS * 4 - 1).to_be_bytes());
    let last = BLOCKS as u32 * 4 - 1;
    good(&run(
        &mut lu,
        &mut vol,
        &nexus(2),
        &rw10(READ_10, last, 1, 0),
        &[],
    ));
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
        crate::scsi::task::BlockResult::AccessState(AccessState::Standby),
    );
    assert_eq!(c.sense.unwrap().asc, ASC_LU_NOT_ACCESSIBLE_STANDBY);
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
            crate::scsi::alua::PortGroup { id: 1, state: AccessState::Optimized, preferred: true, relative_ports: vec![1] },
            crate::scsi::alua::PortGroup { id: 2, state: AccessState::Standby, preferred: false, relative_ports: vec![2] },
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

#[test]
fn reported_luns_change_is_a_unit_attention_of_the_nexus_told_cleared_by_report_luns() {
    let (mut lu, mut vol) = setup();
    lu.reported_luns_changed(1);
    lu.reported_luns_changed(1);
    lu.reported_luns_changed(9); // a nexus that never used the unit: nothing to do
    let c = run(&mut lu, &mut vol, &nexus(1), &tur(), &[]);
    assert_eq!(
        sense_code(&c),
        Some((SenseKey::UnitAttention, ASC_REPORTED_LUNS_DATA_CHANGED))
    );
    good(&run(&mut lu, &mut vol, &nexus(1), &tur(), &[]));
    good(&run(&mut lu, &mut vol, &nexus(2), &tur(), &[]));
    // REPORT LUNS reads the new inventory and clears the pending condition.
    lu.reported_luns_changed(2);
    let mut rl = vec![0u8; 12];
    rl[0] = REPORT_LUNS;
    rl[9] = 64;
    good(&run(&mut lu, &mut vol, &nexus(2), &rl, &[]));
    good(&run(&mut lu, &mut vol, &nexus(2), &tur(), &[]));
}
