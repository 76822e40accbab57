//! A namespace grows (its volume was resized online): the Namespace Attribute Changed event,
//! the Changed Namespace List log page, Identify Namespace and the I/O range all follow the
//! new snapshot the driver hands every controller.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use proto_nvmeof::logpage::{lid, LogRequest};
use proto_nvmeof::pdu::{Digests, Pdu};
use proto_nvmeof::{Sqe, Status, Subsystem, TargetConfig};

/// Namespace Attribute Changed: notice (type 2), information 00h, log page 04h.
const AEN_NS_ATTR: u32 = 0x0004_0002;

fn changed_ns_log(h: &mut Host, t: &mut Target, rae: bool) -> Vec<u32> {
    let cid = h.cid();
    let sqe = LogRequest {
        lid: lid::CHANGED_NS,
        lsp: 0,
        rae,
        len: 4096,
        offset: 0,
        csi: 0,
    }
    .encode(cid, 0);
    let (data, cqe) = h.read_cmd(t, sqe, 4096);
    assert!(cqe.unwrap().status.is_success());
    assert_eq!(data.len(), 4096);
    data.chunks(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .take_while(|&n| n != 0)
        .collect()
}

fn send_aer(h: &mut Host, t: &mut Target) -> (u16, Vec<Pdu>) {
    let cid = h.cid();
    (cid, h.command(t, Sqe::new(0x0C, cid), &[]))
}

fn grown(blocks: u64) -> Arc<Subsystem> {
    let mut s = subsystem();
    assert!(s.set_namespace_blocks(1, blocks));
    assert!(
        !s.set_namespace_blocks(1, blocks),
        "the same size is no change"
    );
    assert!(!s.set_namespace_blocks(9, blocks), "no such namespace");
    Arc::new(s)
}

#[test]
fn identify_controller_advertises_namespace_attribute_notices() {
    let mut t = Target::new(TargetConfig::default());
    let (mut admin, _) = admin_host(&mut t, Instant::now());
    let (id, cqe) = admin.admin(&mut t, 0x06, 0, 1, 0);
    assert!(cqe.unwrap().status.is_success());
    assert_ne!(le32(&id, 92) & (1 << 8), 0, "OAES bit 8");
}

#[test]
fn a_grown_namespace_raises_the_event_lists_itself_and_identifies_with_the_new_size() {
    let mut t = Target::new(TargetConfig::default());
    let now = Instant::now();
    let (mut admin, cntlid) = admin_host(&mut t, now);
    let mut io = io_host(&mut t, now, cntlid, 1, Digests::default(), 0);
    // Asynchronous Event Configuration: Namespace Attribute Notices (bit 8).
    assert!(admin
        .admin_nodata(&mut t, 0x09, 0x0B, 1 << 8)
        .status
        .is_success());
    let (aer, pdus) = send_aer(&mut admin, &mut t);
    assert!(pdus.is_empty(), "the AER is held");
    assert!(changed_ns_log(&mut admin, &mut t, true).is_empty());

    // Past the end before the resize.
    let cid = io.cid();
    let cqe = single_cqe(&io.command(&mut t, rw_sqe(0x02, cid, 1, 2048, 1, false), &[]));
    assert_eq!(cqe.status, Status::LBA_OUT_OF_RANGE.dnr());

    let snap = grown(4096);
    t.volumes.get_mut(&1).unwrap().resize(4096 * BS, 0);
    t.reg.set_subsystem(Arc::clone(&snap));
    admin.conn.update_subsystem(Arc::clone(&snap));
    io.conn.update_subsystem(Arc::clone(&snap));
    let cqe = single_cqe(&admin.recv());
    assert_eq!((cqe.cid, cqe.dw0()), (aer, AEN_NS_ATTR));

    // Identify Namespace: NSZE, NCAP, NUSE.
    let (id, cqe) = admin.admin(&mut t, 0x06, 1, 0, 0);
    assert!(cqe.unwrap().status.is_success());
    assert_eq!(
        (le64(&id, 0), le64(&id, 8), le64(&id, 16)),
        (4096, 4096, 4096)
    );
    // The new blocks serve I/O.
    let cid = io.cid();
    let (data, cqe) = collect_read(&io.command(&mut t, rw_sqe(0x02, cid, 1, 4095, 1, false), &[]));
    assert!(cqe.unwrap().status.is_success());
    assert_eq!(data.len(), BS);

    // The log lists the namespace until read without RAE.
    assert_eq!(changed_ns_log(&mut admin, &mut t, true), vec![1]);
    assert_eq!(changed_ns_log(&mut admin, &mut t, false), vec![1]);
    assert!(changed_ns_log(&mut admin, &mut t, false).is_empty());

    // A second resize is reported again (the log was read, so the event is unmasked).
    let (aer2, pdus) = send_aer(&mut admin, &mut t);
    assert!(pdus.is_empty());
    let snap = grown(8192);
    admin.conn.update_subsystem(Arc::clone(&snap));
    let cqe = single_cqe(&admin.recv());
    assert_eq!((cqe.cid, cqe.dw0()), (aer2, AEN_NS_ATTR));
    assert_eq!(changed_ns_log(&mut admin, &mut t, false), vec![1]);
}

#[test]
fn without_the_notice_enabled_no_event_but_the_log_lists_the_namespace() {
    let mut t = Target::new(TargetConfig::default());
    let (mut admin, _) = admin_host(&mut t, Instant::now());
    let (_, pdus) = send_aer(&mut admin, &mut t);
    assert!(pdus.is_empty());
    admin.conn.update_subsystem(grown(4096));
    assert!(admin.recv().is_empty(), "no AEN unless the host enabled it");
    assert_eq!(changed_ns_log(&mut admin, &mut t, false), vec![1]);
}

#[test]
fn an_unchanged_snapshot_raises_nothing() {
    let mut t = Target::new(TargetConfig::default());
    let (mut admin, _) = admin_host(&mut t, Instant::now());
    assert!(admin
        .admin_nodata(&mut t, 0x09, 0x0B, 1 << 8)
        .status
        .is_success());
    let (_, pdus) = send_aer(&mut admin, &mut t);
    assert!(pdus.is_empty());
    admin.conn.update_subsystem(Arc::new(subsystem()));
    assert!(admin.recv().is_empty());
    assert!(changed_ns_log(&mut admin, &mut t, false).is_empty());
}
