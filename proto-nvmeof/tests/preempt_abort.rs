//! Issue 14, item 2: a host preempted with Preempt and Abort has its commands on the
//! namespace aborted: each completes with Command Aborted due to Preempt and Abort (0x1B), a
//! write still receiving data stops, and data already on its way is dropped quietly.

mod common;

use std::time::Instant;

use common::*;
use proto_nvmeof::pdu::{Digests, Pdu};
use proto_nvmeof::{Status, TargetConfig};

#[test]
fn preempted_commands_complete_aborted_and_late_data_is_dropped() {
    let mut t = Target::new(TargetConfig::default());
    let now = Instant::now();
    let (_admin, cntlid) = admin_host(&mut t, now);
    let mut io = io_host(&mut t, now, cntlid, 1, Digests::default(), 0);
    // Two R2T writes: the first gets its R2T, both wait for data.
    let r = io.command(&mut t, rw_sqe(0x01, 7, 1, 0, 8, false), &[]);
    let Some(Pdu::R2t(r2t)) = r.first() else {
        panic!("{r:?}")
    };
    let ttag = r2t.ttag;
    io.command(&mut t, rw_sqe(0x01, 8, 1, 8, 8, false), &[]);
    assert_eq!(io.conn.in_flight(), 2);
    let executing = io.conn.abort_commands(1);
    assert!(executing.is_empty(), "{executing:?}");
    let mut cqes: Vec<_> = io
        .recv()
        .into_iter()
        .filter_map(|p| match p {
            Pdu::CapsuleResp(c) => Some((c.cid, c.status)),
            _ => None,
        })
        .collect();
    cqes.sort_by_key(|c| c.0);
    assert_eq!(
        cqes,
        vec![(7, Status::ABORTED_PREEMPT), (8, Status::ABORTED_PREEMPT)]
    );
    assert_eq!(io.conn.in_flight(), 0);
    // Data for the aborted write that was already sent does not end the connection.
    io.send(&mut t, &h2c(7, ttag, 0, &[1; 8 * BS], true));
    assert!(!io.conn.is_closed() && io.closed.is_none());
    assert!(t.ops.iter().all(|op| !matches!(
        op,
        proto_nvmeof::IoOp::Block(block_core::BlockOp::Write { .. })
    )));
    // The queue still works.
    let (data, cqe) = io.read_cmd(&mut t, rw_sqe(0x02, 9, 1, 0, 1, false), BS as u32);
    assert_eq!(
        (data.len(), cqe.map(|c| c.status)),
        (BS, Some(Status::SUCCESS))
    );
}
