//! Issue 14, items 2 and 3 over iSCSI against an in-process node: an aborted command really
//! stops (a new command reusing its tag gets its own result), PERSISTENT RESERVE OUT
//! PREEMPT AND ABORT aborts the preempted initiator's tasks, and a login with the ISID of a
//! live session closes that session first (session reinstatement).

mod nvme_common;
mod raw_iscsi;

use std::time::Duration;

use nvme_common::Node;
use proto_iscsi::pdu::{Pdu, TmfResponse};
use raw_iscsi::Raw;

const TARGET: &str = "iqn.2026-11.io.tandem:default";
const HOST_A: &str = "iqn.2026-01.io.tandem:host-a";
const HOST_B: &str = "iqn.2026-01.io.tandem:host-b";

async fn node() -> (Node, std::net::SocketAddr) {
    let node = Node::start(1, |c| {
        c.iscsi.enabled = true;
        c.iscsi.portals[0].listen = "127.0.0.1:0".parse().unwrap();
    })
    .await;
    let addr = node.fronts.as_ref().unwrap().iscsi.as_ref().unwrap().bound[0];
    (node, addr)
}

fn write10(lba: u32, blocks: u16, fua: bool) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    [
        0x2A,
        if fua { 0x08 } else { 0 },
        l[0],
        l[1],
        l[2],
        l[3],
        0,
        b[0],
        b[1],
        0,
    ]
}

fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    [0x28, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0]
}

/// PERSISTENT RESERVE OUT (service action `sa`, type Write Exclusive) with its parameters.
fn pr_out(sa: u8, key: u64, sa_key: u64) -> ([u8; 10], [u8; 24]) {
    let mut p = [0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    ([0x5F, sa, 0x01, 0, 0, 0, 0, 0, 24, 0], p)
}

/// ABORT TASK, then at once a new command with the aborted command's tag, all in one TCP
/// write: the new command must get its own result. (Before the fix the gateway ignored the
/// abort, the old command kept running and its CHECK CONDITION answered the new WRITE.)
#[tokio::test]
async fn a_tag_reused_after_abort_task_gets_its_own_result() {
    let (node, addr) = node().await;
    let mut s = Raw::login(addr, TARGET, HOST_A, [0x40, 0, 0, 0, 0, 1]).await;
    s.clear_unit_attentions(100).await;
    let bs = 512usize;
    let first_sn = s.cmd_sn;
    // A READ beyond the end of the volume (it fails at once with CHECK CONDITION).
    let old = s.command(5, &read10(0x7FFF_FFF0, 1), bs as u32, &[], 0);
    let abort = s.abort_task(6, 5, first_sn);
    let data = vec![0xA5u8; bs];
    let new = s.command(5, &write10(3, 1, true), 0, &data, bs as u32);
    s.send_all(&[old, abort, new]).await;
    let mut tmf = None;
    let mut status = None;
    while tmf.is_none() || status.is_none() {
        match s.recv_within(Duration::from_secs(10)).await {
            Ok(Some(Pdu::TaskMgmtResponse(t))) => tmf = Some(t.response),
            Ok(Some(Pdu::ScsiResponse(r))) if r.itt == 5 => {
                assert!(status.is_none(), "two answers for task 5");
                status = Some(r.status);
            }
            Ok(Some(_)) => {}
            other => panic!("no answer: {other:?}"),
        }
    }
    assert_eq!(tmf, Some(TmfResponse::Complete));
    assert_eq!(
        status,
        Some(0),
        "the new WRITE got another command's result"
    );
    let (st, back) = s.run(7, &read10(3, 1), bs as u32, &[]).await;
    assert_eq!((st, back), (0, data));
    drop(s);
    node.stop().await;
}

/// PREEMPT AND ABORT by B aborts A's task that waits for its data: A's Data-Out is then
/// swallowed and the task never answers. (Before the fix nothing was aborted: the write went
/// on to execute and answered RESERVATION CONFLICT.)
#[tokio::test]
async fn preempt_and_abort_aborts_the_preempted_initiators_tasks() {
    let (node, addr) = node().await;
    let mut a = Raw::login(addr, TARGET, HOST_A, [0x40, 0, 0, 0, 0, 1]).await;
    let mut b = Raw::login(addr, TARGET, HOST_B, [0x40, 0, 0, 0, 0, 2]).await;
    a.clear_unit_attentions(100).await;
    b.clear_unit_attentions(100).await;
    let (cdb, p) = pr_out(0x00, 0, 0xA);
    assert_eq!(a.run(1, &cdb, 0, &p).await.0, 0, "A registers");
    let (cdb, p) = pr_out(0x00, 0, 0xB);
    assert_eq!(b.run(1, &cdb, 0, &p).await.0, 0, "B registers");
    let (cdb, p) = pr_out(0x01, 0xA, 0);
    assert_eq!(a.run(2, &cdb, 0, &p).await.0, 0, "A reserves");
    // A starts an 8-block write with no immediate data: the target asks with an R2T.
    let w = a.command(3, &write10(40, 8, false), 0, &[], 8 * 512);
    a.send(&w).await;
    let ttt = loop {
        match a.recv_within(Duration::from_secs(10)).await {
            Ok(Some(Pdu::R2t(r))) if r.itt == 3 => break r.ttt,
            Ok(Some(_)) => {}
            other => panic!("no R2T: {other:?}"),
        }
    };
    let (cdb, p) = pr_out(0x05, 0xB, 0xA);
    assert_eq!(
        b.run(2, &cdb, 0, &p).await.0,
        0,
        "B preempts A and aborts its tasks"
    );
    // A's data arrives after the abort, then a TEST UNIT READY.
    let d = a.data_out(3, ttt, 0, &[0x77; 8 * 512]);
    let tur = a.command(4, &[0; 6], 0, &[], 0);
    a.send_all(&[d, tur]).await;
    loop {
        match a.recv_within(Duration::from_secs(10)).await {
            Ok(Some(Pdu::ScsiResponse(r))) if r.itt == 4 => break,
            Ok(Some(Pdu::ScsiResponse(r))) if r.itt == 3 => {
                panic!("the preempted task answered status {:#x}", r.status)
            }
            Ok(Some(_)) => {}
            other => panic!("no answer to TEST UNIT READY: {other:?}"),
        }
    }
    drop((a, b));
    node.stop().await;
}

/// A second login with the ISID and initiator name of a live session (what an initiator
/// does after losing its connection, and what dm-multipath failover relies on) closes the
/// old session before the new one is logged in: the old connection is dropped and its
/// pending write never executes. (Before the fix the old session stayed open.)
#[tokio::test]
async fn a_login_with_the_isid_of_a_live_session_reinstates_it() {
    let (node, addr) = node().await;
    let isid = [0x40, 0, 0, 0, 0, 9];
    let mut old = Raw::login(addr, TARGET, HOST_A, isid).await;
    old.clear_unit_attentions(100).await;
    let w = old.command(3, &write10(60, 8, false), 0, &[], 8 * 512);
    old.send(&w).await;
    let ttt = loop {
        match old.recv_within(Duration::from_secs(10)).await {
            Ok(Some(Pdu::R2t(r))) if r.itt == 3 => break r.ttt,
            Ok(Some(_)) => {}
            other => panic!("no R2T: {other:?}"),
        }
    };
    let mut new = Raw::login(addr, TARGET, HOST_A, isid).await;
    // The old connection is gone by the time the new login is answered.
    match old.recv_within(Duration::from_secs(2)).await {
        Ok(None) => {}
        other => panic!("the old session is still open: {other:?}"),
    }
    let d = old.data_out(3, ttt, 0, &[0x77; 8 * 512]);
    let _ = tokio::io::AsyncWriteExt::write_all(&mut old.s, &raw_iscsi::bytes(&d)).await;
    new.clear_unit_attentions(100).await;
    let (st, back) = new.run(5, &read10(60, 8), 8 * 512, &[]).await;
    assert_eq!(st, 0);
    assert!(
        back.iter().all(|&b| b == 0),
        "the old session's write executed"
    );
    drop((old, new));
    node.stop().await;
}
