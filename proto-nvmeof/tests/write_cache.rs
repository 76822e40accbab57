//! The volatile write cache feature is honest: once a host turns it off (Set Features VWC=0 on
//! the admin queue), every write on every I/O queue of that controller is durable before it
//! completes, as if it carried FUA; other controllers keep their own setting.

mod common;

use std::time::Instant;

use block_core::BlockOp;
use common::*;
use proto_nvmeof::pdu::Digests;
use proto_nvmeof::{IoOp, TargetConfig};

const SET_FEATURES: u8 = 0x09;
const GET_FEATURES: u8 = 0x0A;
const VWC: u32 = 0x06;

/// The FUA flag of the last write-like op the target executed.
fn last_fua(t: &Target) -> bool {
    match t.ops.last() {
        Some(IoOp::Block(BlockOp::Write { fua, .. }))
        | Some(IoOp::Block(BlockOp::WriteZeroes { fua, .. })) => *fua,
        other => panic!("expected a write, got {other:?}"),
    }
}

fn write(io: &mut Host, t: &mut Target) -> bool {
    let cid = io.cid();
    let sqe = rw_sqe(0x01, cid, 1, 4, 1, true);
    let cqe = single_cqe(&io.command(t, sqe, &[0x5A; BS]));
    assert!(cqe.status.is_success(), "{cqe:?}");
    last_fua(t)
}

fn write_zeroes(io: &mut Host, t: &mut Target, deallocate: bool) -> bool {
    let cid = io.cid();
    let mut sqe = rw_sqe(0x08, cid, 1, 8, 2, false);
    sqe.set_cdw(12, 1 | if deallocate { 1 << 25 } else { 0 });
    sqe.set_sgl(proto_nvmeof::sqe::Sgl {
        addr: 0,
        length: 0,
        ident: 0,
    });
    let cqe = single_cqe(&io.command(t, sqe, &[]));
    assert!(cqe.status.is_success(), "{cqe:?}");
    last_fua(t)
}

#[test]
fn turning_the_write_cache_off_makes_every_write_of_the_controller_durable() {
    let mut t = Target::new(TargetConfig::default());
    let now = Instant::now();
    let (mut admin, cntlid) = admin_host(&mut t, now);
    let mut io = io_host(&mut t, now, cntlid, 1, Digests::default(), 0);
    let (_other_admin, other) = admin_host(&mut t, now);
    let mut other_io = io_host(&mut t, now, other, 1, Digests::default(), 0);
    assert!(
        !write(&mut io, &mut t),
        "cache on: a plain write is not FUA"
    );
    assert_eq!(admin.admin_nodata(&mut t, GET_FEATURES, VWC, 0).dw0(), 1);

    let cqe = admin.admin_nodata(&mut t, SET_FEATURES, VWC, 0);
    assert!(cqe.status.is_success(), "{cqe:?}");
    assert_eq!(admin.admin_nodata(&mut t, GET_FEATURES, VWC, 0).dw0(), 0);
    assert!(
        write(&mut io, &mut t),
        "cache off: a write completes durable"
    );
    assert!(write_zeroes(&mut io, &mut t, false));
    assert!(write_zeroes(&mut io, &mut t, true));
    // A queue connected after the change follows it too.
    let mut io2 = io_host(&mut t, now, cntlid, 2, Digests::default(), 0);
    assert!(write(&mut io2, &mut t));
    // Another controller keeps its own (enabled) cache.
    assert!(!write(&mut other_io, &mut t));

    let cqe = admin.admin_nodata(&mut t, SET_FEATURES, VWC, 1);
    assert!(cqe.status.is_success(), "{cqe:?}");
    assert!(!write(&mut io, &mut t), "cache back on");
}
