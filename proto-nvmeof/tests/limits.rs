//! Issue 14, item 1: what a hostile or careless host can hold on the NVMe/TCP side (a
//! connection that never connects, an association nobody keeps alive, discovery controllers
//! taking this node's controller ids) is bounded.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use proto_nvmeof::fabrics::CNTLID_DYNAMIC;
use proto_nvmeof::pdu::Digests;
use proto_nvmeof::{CloseReason, Connection, TargetConfig, DISCOVERY_NQN};

#[test]
fn a_connection_without_icreq_or_connect_is_dropped_at_its_deadline() {
    let cfg = Arc::new(TargetConfig {
        connect_timeout_ms: 3000,
        ..TargetConfig::default()
    });
    let t0 = Instant::now();
    let mut c = Connection::new_at(Arc::clone(&cfg), t0);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(3)));
    // Half an ICReq, then silence.
    c.receive(t0 + Duration::from_secs(1), &[0x00, 0x00, 128, 0]);
    c.handle_timeout(t0 + Duration::from_millis(2999));
    assert!(!c.is_closed());
    c.handle_timeout(t0 + Duration::from_secs(3));
    assert_eq!(c.close_reason(), Some(&CloseReason::ConnectTimeout));

    // ICReq but no Connect: the same deadline.
    let mut t = Target::new(TargetConfig {
        connect_timeout_ms: 3000,
        ..TargetConfig::default()
    });
    let mut h = Host::new(&t, t0);
    h.icreq(&mut t, Digests::default());
    assert_eq!(h.conn.poll_timeout(), Some(t0 + Duration::from_secs(3)));
    h.conn.handle_timeout(t0 + Duration::from_secs(3));
    assert_eq!(h.conn.close_reason(), Some(&CloseReason::ConnectTimeout));

    // Once connected the deadline is gone (the keep-alive timer takes over).
    let (admin, _) = admin_host(&mut t, t0);
    assert_eq!(admin.conn.poll_timeout(), admin.conn.kato_deadline());
}

#[test]
fn an_io_controller_without_kato_still_expires() {
    let mut t = Target::new(TargetConfig {
        io_kato_default_ms: 60_000,
        ..TargetConfig::default()
    });
    let t0 = Instant::now();
    let mut h = Host::new(&t, t0);
    h.icreq(&mut t, Digests::default());
    let c = proto_nvmeof::fabrics::Connect {
        recfmt: 0,
        qid: 0,
        sqsize: 31,
        cattr: 0,
        kato_ms: 0,
        host_id: [0x42; 16],
        cntlid: CNTLID_DYNAMIC,
        subnqn: SUBNQN.into(),
        hostnqn: HOSTNQN.into(),
    };
    let cid = h.cid();
    let (sqe, data) = c.encode(cid);
    let cqe = single_cqe(&h.command(&mut t, sqe, &data));
    assert!(cqe.status.is_success(), "{cqe:?}");
    assert_eq!(h.conn.kato_deadline(), Some(t0 + Duration::from_secs(60)));
    assert!(h.conn.handle_timeout(t0 + Duration::from_secs(60)));
    assert_eq!(h.conn.close_reason(), Some(&CloseReason::KeepAliveExpired));
}

#[test]
fn discovery_controllers_are_capped_and_io_controllers_still_get_ids() {
    let mut t = Target::new(TargetConfig::default());
    t.reg.set_discovery_limit(3);
    let now = Instant::now();
    let mut hosts = Vec::new();
    for i in 0..5 {
        let mut h = Host::new(&t, now);
        h.icreq(&mut t, Digests::default());
        let cqe = h.connect(&mut t, 0, CNTLID_DYNAMIC, DISCOVERY_NQN, 0);
        assert_eq!(
            cqe.status.is_success(),
            i < 3,
            "discovery connect {i}: {cqe:?}"
        );
        hosts.push(h);
    }
    // The I/O subsystem still admits controllers.
    let (_admin, cntlid) = admin_host(&mut t, now);
    assert!(t.reg.association(cntlid).is_some());
}

/// Before ICReq only an ICReq (128 bytes) is accepted, and before the Connect only a PDU of a
/// Connect's size: a peer announcing a large PDU is closed instead of being buffered.
#[test]
fn a_large_pdu_before_connect_is_refused_not_buffered() {
    let t0 = Instant::now();
    let cfg = Arc::new(TargetConfig::default());
    for icreq_first in [false, true] {
        let mut t = Target::new(TargetConfig::default());
        let mut h = Host::new(&t, t0);
        if icreq_first {
            h.icreq(&mut t, Digests::default());
        }
        // A command capsule header announcing a 1 MB PDU, then 64 KiB of it.
        let mut hdr = vec![0x04, 0x00, 72, 72];
        hdr.extend_from_slice(&1_000_000u32.to_le_bytes());
        hdr.resize(72, 0);
        h.conn.receive(t0, &hdr);
        h.conn.receive(t0, &vec![0u8; 64 << 10]);
        assert!(
            h.conn.is_closed(),
            "icreq_first={icreq_first}: still buffering"
        );
    }
    let _ = cfg;
}
