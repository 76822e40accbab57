//! In-band authentication through the transport, sans-IO: a Connect for a host that must
//! authenticate gets ATR, every other command is refused with Authentication Required until
//! the DH-HMAC-CHAP transaction (the host side of `proto_nvmeof::auth`) carried over
//! Authentication Send / Receive capsules has succeeded; a wrong secret leaves the queue
//! refusing; an unseeded connection cannot authenticate anyone.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use proto_nvmeof::auth::{self, DhchapPolicy, DhchapSecret, Finish, HostAuth, CONNECT_ATR};
use proto_nvmeof::pdu::Digests;
use proto_nvmeof::{Status, TargetConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn secret(fill: u8) -> DhchapSecret {
    DhchapSecret {
        transform: None,
        key: vec![fill; 32],
    }
}

fn target() -> Target {
    let mut t = Target::new(TargetConfig::default());
    let mut s = subsystem();
    s.dhchap.insert(
        HOSTNQN.into(),
        Arc::new(DhchapPolicy::new(secret(1), Some(secret(2)))),
    );
    t.reg.set_subsystem(Arc::new(s));
    t
}

fn auth_send(h: &mut Host, t: &mut Target, payload: &[u8]) -> Status {
    let cid = h.cid();
    let mut sqe = auth::send_command(cid, payload.len() as u32);
    sqe.set_sgl(proto_nvmeof::sqe::Sgl {
        addr: 0,
        length: payload.len() as u32,
        ident: proto_nvmeof::sqe::SGL_IN_CAPSULE,
    });
    single_cqe(&h.command(t, sqe, payload)).status
}

fn auth_receive(h: &mut Host, t: &mut Target) -> Vec<u8> {
    let cid = h.cid();
    let (data, cqe) = h.read_cmd(t, auth::receive_command(cid, 4096), 4096);
    if let Some(c) = cqe {
        assert!(c.status.is_success(), "{c:?}");
    }
    data
}

/// Runs the host side; Ok(()) when the host finished authenticated.
fn authenticate(
    h: &mut Host,
    t: &mut Target,
    tx: &mut HostAuth,
) -> Result<(), auth::HostAuthError> {
    let mut rng = StdRng::seed_from_u64(11);
    assert!(auth_send(h, t, &tx.negotiate()).is_success());
    let challenge = auth_receive(h, t);
    let reply = tx.on_challenge(&challenge, &mut rng)?;
    assert!(auth_send(h, t, &reply).is_success());
    let s1 = auth_receive(h, t);
    match tx.on_success1(&s1)? {
        Finish::Done => Ok(()),
        Finish::SendSuccess2(s2) => {
            assert!(auth_send(h, t, &s2).is_success());
            Ok(())
        }
    }
}

fn connected(t: &mut Target, seed: bool) -> Host {
    let mut h = Host::new(t, Instant::now());
    if seed {
        h.conn.seed_auth([7; 32]);
    }
    h.icreq(t, Digests::default());
    let cqe = h.connect(t, 0, proto_nvmeof::fabrics::CNTLID_DYNAMIC, SUBNQN, 0);
    assert!(cqe.status.is_success(), "{cqe:?}");
    assert_ne!(
        cqe.dw0() & CONNECT_ATR,
        0,
        "ATR not set for a host with a secret"
    );
    h
}

#[test]
fn commands_wait_for_a_successful_transaction() {
    let mut t = target();
    let mut h = connected(&mut t, true);
    assert_eq!(
        h.prop_get(&mut t, 0x00, true).status,
        Status::AUTH_REQUIRED.dnr()
    );
    let mut tx = HostAuth::new(HOSTNQN, SUBNQN, secret(1), Some(secret(2)), 1);
    authenticate(&mut h, &mut t, &mut tx).unwrap();
    assert!(!h.conn.auth_pending());
    assert!(h.prop_get(&mut t, 0x00, true).status.is_success());
}

#[test]
fn a_wrong_secret_leaves_the_queue_refusing() {
    let mut t = target();
    let mut h = connected(&mut t, true);
    let mut tx = HostAuth::new(HOSTNQN, SUBNQN, secret(3), None, 1);
    assert!(matches!(
        authenticate(&mut h, &mut t, &mut tx),
        Err(auth::HostAuthError::Refused { .. })
    ));
    assert!(h.conn.auth_pending());
    assert_eq!(
        h.prop_get(&mut t, 0x00, true).status,
        Status::AUTH_REQUIRED.dnr()
    );
}

#[test]
fn an_unseeded_connection_authenticates_nobody() {
    let mut t = target();
    let mut h = connected(&mut t, false);
    let mut tx = HostAuth::new(HOSTNQN, SUBNQN, secret(1), None, 1);
    assert!(authenticate(&mut h, &mut t, &mut tx).is_err());
    assert_eq!(
        h.prop_get(&mut t, 0x00, true).status,
        Status::AUTH_REQUIRED.dnr()
    );
}

#[test]
fn hosts_without_a_secret_and_bad_commands() {
    let mut t = Target::new(TargetConfig::default());
    let mut h = Host::new(&t, Instant::now());
    h.icreq(&mut t, Digests::default());
    let cqe = h.connect(&mut t, 0, proto_nvmeof::fabrics::CNTLID_DYNAMIC, SUBNQN, 0);
    assert_eq!(cqe.dw0() & CONNECT_ATR, 0);
    // nothing to authenticate: a sequence error, not a transaction
    let st = auth_send(
        &mut h,
        &mut t,
        &HostAuth::new(HOSTNQN, SUBNQN, secret(1), None, 1).negotiate(),
    );
    assert_eq!(st, Status::COMMAND_SEQUENCE_ERROR.dnr());
    // a foreign security protocol is an invalid field
    let mut t = target();
    let mut h = connected(&mut t, true);
    let cid = h.cid();
    let mut sqe = auth::send_command(cid, 8);
    sqe.set_sgl(proto_nvmeof::sqe::Sgl {
        addr: 0,
        length: 8,
        ident: proto_nvmeof::sqe::SGL_IN_CAPSULE,
    });
    sqe.0[43] = 0xEA;
    assert_eq!(
        single_cqe(&h.command(&mut t, sqe, &[0; 8])).status,
        Status::INVALID_FIELD.dnr()
    );
}
