//! Persistent reservation scenarios across two or three nexuses.

use bytes::Bytes;

use super::*;
use crate::scsi::config::LuConfig;
use crate::scsi::task::Completion;
use crate::scsi::task::Nexus;
use crate::scsi::task::{BlockOp, Status, Step};
use crate::scsi::testvol::{run, MemVol};
use crate::scsi::unit::LogicalUnit;
use block_core::reservation::ReservationState as PrState;

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
    assert_eq!(
        c.sense.unwrap().asc,
        crate::scsi::pr_cmd::ASC_INVALID_RELEASE
    );
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
        op: BlockOp::PersistReservations,
        task,
    } = lu.data_out(&a, task, Bytes::from(p))
    else {
        panic!("PR OUT must persist before completing")
    };
    // What the gateway stores when it carries out the persist step.
    let bytes = lu.reservations().lock().state().to_bytes();
    let st = PrState::from_bytes(&bytes).unwrap();
    assert!(st.aptpl);
    assert_eq!(st.registrations[0].key, 0x1234);
    assert_eq!(&st, lu.reservations().lock().state());
    good(&lu.io_done(task, crate::scsi::task::BlockResult::Ok));
    let other = LogicalUnit::new(LuConfig::new(512, [0x42; 16]), BLOCKS);
    other
        .reservations()
        .lock()
        .restore(PrState::from_bytes(&bytes).unwrap());
    assert_eq!(
        other.reservations().lock().state(),
        lu.reservations().lock().state()
    );
    // a failed persist fails the command
    let (cdb, p) = prout(0, 0, 0x1234, 0x5678, false);
    let Step::NeedDataOut { task, .. } = lu.start(&a, &cdb, 24) else {
        panic!()
    };
    let Step::Io { task, .. } = lu.data_out(&a, task, Bytes::from(p)) else {
        panic!()
    };
    let c = lu.io_done(task, crate::scsi::task::BlockResult::Internal);
    assert_eq!(c.sense.unwrap().key, SenseKey::HardwareError);
}
