//! Login transcripts and per-key rule tests. Expected CHAP responses are computed here from the
//! RFC 1994 definition (hash of identifier, secret, challenge), not by the code under test.

use proptest::prelude::*;
use sha2::{Digest as _, Sha256};

use super::*;
use crate::chap::{ChapAlgorithm, ChapConfig, ChapUser};
use crate::text::{encode_text, parse_text, KeyValue};

const INITIATOR: &str = "iqn.2004-10.com.ubuntu:01:deadbeef";
const OPEN: &str = "iqn.2024-01.org.example:open";
const CHAP: &str = "iqn.2024-01.org.example:chap";
const MUTUAL: &str = "iqn.2024-01.org.example:mutual";

struct Ctx {
    counter: u8,
    tsih: u16,
    deny: bool,
}

fn chap_cfg(mutual: bool) -> ChapConfig {
    let mut cfg = ChapConfig::one_way("user1", b"initiator-secret".to_vec());
    if mutual {
        cfg.target_user = Some(ChapUser {
            name: "tgtuser".into(),
            secret: b"target-secret-42".to_vec(),
        });
    }
    cfg
}

impl LoginContext for Ctx {
    fn target_auth(&self, name: &str) -> Option<TargetAuth> {
        match name {
            OPEN => Some(TargetAuth::None),
            CHAP => Some(TargetAuth::Chap(chap_cfg(false))),
            MUTUAL => Some(TargetAuth::Chap(chap_cfg(true))),
            _ => None,
        }
    }
    fn initiator_allowed(&self, _t: &str, _i: &str) -> bool {
        !self.deny
    }
    fn fill_random(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.counter;
            self.counter = self.counter.wrapping_add(7);
        }
    }
    fn allocate_tsih(&mut self) -> Option<u16> {
        self.tsih += 1;
        Some(self.tsih)
    }
}

fn ctx() -> Ctx {
    Ctx {
        counter: 3,
        tsih: 0x10,
        deny: false,
    }
}

fn txt(pairs: &[(&str, &str)]) -> Vec<u8> {
    encode_text(
        &pairs
            .iter()
            .map(|(k, v)| KeyValue::new(*k, *v))
            .collect::<Vec<_>>(),
    )
}

fn req(transit: bool, csg: u8, nsg: u8, data: &[u8]) -> LoginRequest<'_> {
    LoginRequest {
        transit,
        cont: false,
        csg,
        nsg,
        version_max: 0,
        version_min: 0,
        isid: [0x00, 0x02, 0x3d, 0x00, 0x00, 0x01],
        tsih: 0,
        cid: 0,
        data,
    }
}

fn pairs(step: &LoginStep) -> Vec<(String, String)> {
    parse_text(&step.response.data)
        .unwrap()
        .into_iter()
        .map(|p| (p.key, p.value))
        .collect()
}

fn get(step: &LoginStep, key: &str) -> Option<String> {
    pairs(step)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn failed(step: &LoginStep, code: u16) {
    assert_eq!(step.response.status.code(), code, "{:?}", step.outcome);
    assert!(matches!(step.outcome, LoginOutcome::Failed(_)));
    assert!(!step.response.transit);
    assert!(step.response.data.is_empty());
}

fn success(step: LoginStep) -> LoginSuccess {
    match step.outcome {
        LoginOutcome::FullFeature(s) => *s,
        other => panic!("expected full feature, got {other:?}"),
    }
}

/// What open-iscsi sends in the operational stage with its default iscsid.conf.
fn open_iscsi_operational() -> Vec<u8> {
    txt(&[
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "0"),
        ("IFMarker", "No"),
        ("OFMarker", "No"),
        ("ErrorRecoveryLevel", "0"),
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("MaxBurstLength", "16776192"),
        ("FirstBurstLength", "262144"),
        ("MaxConnections", "1"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
        ("MaxOutstandingR2T", "1"),
        ("MaxRecvDataSegmentLength", "262144"),
    ])
}

fn sha256_chap(id: u8, secret: &[u8], challenge: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    format!("0x{}", hex::encode(h.finalize()))
}

#[test]
fn discovery_without_auth() {
    let mut c = ctx();
    let mut conn = LoginConnection::new(TargetConfig::default(), 1);
    let first = txt(&[
        ("InitiatorName", INITIATOR),
        ("SessionType", "Discovery"),
        ("AuthMethod", "None"),
    ]);
    let s = conn.step(&req(true, 0, 1, &first), &mut c);
    assert!(s.response.status.is_success());
    assert!(s.response.transit);
    assert_eq!((s.response.csg, s.response.nsg, s.response.tsih), (0, 1, 0));
    assert_eq!(pairs(&s), vec![("AuthMethod".into(), "None".into())]);

    let op = txt(&[
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("MaxBurstLength", "16776192"),
        ("MaxRecvDataSegmentLength", "32768"),
    ]);
    let s = conn.step(&req(true, 1, 3, &op), &mut c);
    assert_eq!((s.response.csg, s.response.nsg), (1, 3));
    assert!(s.response.transit);
    assert_eq!(s.response.tsih, 0x11);
    assert_eq!(get(&s, "MaxBurstLength").as_deref(), Some("Irrelevant"));
    assert_eq!(
        get(&s, "MaxRecvDataSegmentLength").as_deref(),
        Some("262144")
    );
    let ok = success(s);
    assert_eq!(ok.tsih, 0x11);
    assert_eq!(ok.params.session_type, SessionType::Discovery);
    assert_eq!(ok.params.initiator_name, INITIATOR);
    assert_eq!(ok.params.initiator_max_recv_data_segment_length, 32768);
    assert_eq!(ok.params.target_max_recv_data_segment_length, 262144);
    assert_eq!(
        ok.params.max_burst_length, 262_144,
        "irrelevant key keeps its default"
    );
    assert_eq!(ok.params.auth, AuthOutcome::None);
}

/// Runs the security stage of a CHAP login up to the challenge; returns (id, challenge).
fn chap_until_challenge(conn: &mut LoginConnection, c: &mut Ctx, target: &str) -> (u8, Vec<u8>) {
    let first = txt(&[
        ("InitiatorName", INITIATOR),
        ("InitiatorAlias", "host1"),
        ("TargetName", target),
        ("SessionType", "Normal"),
        ("AuthMethod", "CHAP,None"),
    ]);
    let s = conn.step(&req(true, 0, 1, &first), c);
    assert!(!s.response.transit, "must not leave security before CHAP");
    assert_eq!(
        pairs(&s),
        vec![
            ("TargetPortalGroupTag".into(), "7".into()),
            ("AuthMethod".into(), "CHAP".into())
        ]
    );
    let s = conn.step(&req(false, 0, 0, &txt(&[("CHAP_A", "8,7,5")])), c);
    assert_eq!(s.outcome, LoginOutcome::Continue);
    assert_eq!(get(&s, "CHAP_A").as_deref(), Some("8"));
    let id: u8 = get(&s, "CHAP_I").unwrap().parse().unwrap();
    let chal = hex::decode(get(&s, "CHAP_C").unwrap().strip_prefix("0x").unwrap()).unwrap();
    assert_eq!(chal.len(), 32);
    (id, chal)
}

#[test]
fn normal_session_one_way_chap_sha256() {
    let mut c = ctx();
    let mut conn = LoginConnection::new(TargetConfig::default(), 7);
    let first = txt(&[
        ("InitiatorName", INITIATOR),
        ("TargetName", CHAP),
        ("AuthMethod", "CHAP"),
    ]);
    let s = conn.step(&req(false, 0, 0, &first), &mut c);
    assert_eq!(get(&s, "TargetPortalGroupTag").as_deref(), Some("7"));
    let s = conn.step(&req(false, 0, 0, &txt(&[("CHAP_A", "7,5")])), &mut c);
    assert_eq!(get(&s, "CHAP_A").as_deref(), Some("7"));
    let id: u8 = get(&s, "CHAP_I").unwrap().parse().unwrap();
    let chal = hex::decode(&get(&s, "CHAP_C").unwrap()[2..]).unwrap();
    let r = sha256_chap(id, b"initiator-secret", &chal);
    let s = conn.step(
        &req(true, 0, 1, &txt(&[("CHAP_N", "user1"), ("CHAP_R", &r)])),
        &mut c,
    );
    assert!(s.response.transit);
    assert_eq!((s.response.csg, s.response.nsg), (0, 1));
    assert!(s.response.data.is_empty());
    let s = conn.step(&req(true, 1, 3, &open_iscsi_operational()), &mut c);
    assert!(s.response.transit);
    let ok = success(s);
    assert_eq!(ok.params.target_name.as_deref(), Some(CHAP));
    assert_eq!(
        ok.params.auth,
        AuthOutcome::Chap {
            user: "user1".into(),
            algorithm: ChapAlgorithm::Sha256,
            mutual: false
        }
    );
}

#[test]
fn mutual_chap_sha3() {
    let mut c = ctx();
    let mut conn = LoginConnection::new(TargetConfig::default(), 7);
    let (id, chal) = chap_until_challenge(&mut conn, &mut c, MUTUAL);
    let mut h = sha3::Sha3_256::new();
    h.update([id]);
    h.update(b"initiator-secret");
    h.update(&chal);
    let r = format!("0x{}", hex::encode(h.finalize()));
    let ichal = [0x55u8; 32];
    let s = conn.step(
        &req(
            true,
            0,
            1,
            &txt(&[
                ("CHAP_N", "user1"),
                ("CHAP_R", &r),
                ("CHAP_I", "77"),
                ("CHAP_C", &format!("0x{}", hex::encode(ichal))),
            ]),
        ),
        &mut c,
    );
    assert!(s.response.transit);
    let mut h = sha3::Sha3_256::new();
    h.update([77u8]);
    h.update(b"target-secret-42");
    h.update(ichal);
    let expected = format!("0x{}", hex::encode(h.finalize()));
    assert_eq!(
        pairs(&s),
        vec![
            ("CHAP_N".into(), "tgtuser".into()),
            ("CHAP_R".into(), expected)
        ]
    );
}

#[test]
fn mutual_chap_reflected_challenge_fails() {
    let mut c = ctx();
    let mut conn = LoginConnection::new(TargetConfig::default(), 7);
    let (id, chal) = chap_until_challenge(&mut conn, &mut c, MUTUAL);
    let _ = id;
    let s = conn.step(
        &req(
            true,
            0,
            1,
            &txt(&[
                ("CHAP_N", "user1"),
                ("CHAP_R", "0x00"),
                ("CHAP_I", "1"),
                ("CHAP_C", &format!("0x{}", hex::encode(&chal))),
            ]),
        ),
        &mut c,
    );
    failed(&s, 0x0201);
}

#[test]
fn wrong_secret_is_authentication_failure() {
    let mut c = ctx();
    let mut conn = LoginConnection::new(TargetConfig::default(), 7);
    let (id, chal) = chap_until_challenge(&mut conn, &mut c, CHAP);
    let mut h = sha3::Sha3_256::new();
    h.update([id]);
    h.update(b"wrong-secret");
    h.update(&chal);
    let r = format!("0x{}", hex::encode(h.finalize()));
    let s = conn.step(
        &req(true, 0, 1, &txt(&[("CHAP_N", "user1"), ("CHAP_R", &r)])),
        &mut c,
    );
    failed(&s, 0x0201);
    // The connection is dead afterwards.
    let again = conn.step(&req(true, 1, 3, b""), &mut c);
    assert!(matches!(
        again.outcome,
        LoginOutcome::Failed(LoginError::Finished)
    ));
}

#[test]
fn unknown_target_is_not_found() {
    let first = txt(&[("InitiatorName", INITIATOR), ("TargetName", "iqn.nope:x")]);
    let s =
        LoginConnection::new(TargetConfig::default(), 1).step(&req(true, 0, 1, &first), &mut ctx());
    failed(&s, 0x0203);
}

#[test]
fn open_iscsi_defaults_without_auth() {
    let mut c = ctx();
    let mut conn = LoginConnection::new(TargetConfig::default(), 1);
    let first = txt(&[
        ("InitiatorName", INITIATOR),
        ("InitiatorAlias", "host1"),
        ("TargetName", OPEN),
        ("SessionType", "Normal"),
        ("AuthMethod", "None"),
    ]);
    let s = conn.step(&req(true, 0, 1, &first), &mut c);
    assert!(s.response.transit);
    assert_eq!(
        pairs(&s),
        vec![
            ("TargetPortalGroupTag".into(), "1".into()),
            ("AuthMethod".into(), "None".into())
        ]
    );
    let s = conn.step(&req(true, 1, 3, &open_iscsi_operational()), &mut c);
    let expected: Vec<(String, String)> = [
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "0"),
        ("IFMarker", "No"),
        ("OFMarker", "No"),
        ("ErrorRecoveryLevel", "0"),
        ("InitialR2T", "Yes"),
        ("ImmediateData", "Yes"),
        ("MaxBurstLength", "1048576"),
        ("FirstBurstLength", "262144"),
        ("MaxConnections", "1"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
        ("MaxOutstandingR2T", "1"),
        ("MaxRecvDataSegmentLength", "262144"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(pairs(&s), expected);
    let p = success(s).params;
    assert_eq!(p.initiator_alias.as_deref(), Some("host1"));
    assert_eq!(p.header_digest, Digest::None);
    assert!(p.initial_r2t && p.immediate_data);
    assert_eq!(p.max_burst_length, 1_048_576);
    assert_eq!(p.first_burst_length, 262_144);
    assert_eq!(p.default_time2retain, 0);
    assert_eq!(p.initiator_max_recv_data_segment_length, 262_144);
    assert_eq!(p.target_max_recv_data_segment_length, 262_144);
}

#[test]
fn header_and_flag_rules() {
    let first = txt(&[("InitiatorName", INITIATOR), ("TargetName", OPEN)]);
    let fresh = || LoginConnection::new(TargetConfig::default(), 1);
    let mut r = req(true, 0, 1, &first);
    r.cont = true;
    failed(&fresh().step(&r, &mut ctx()), 0x0200);
    failed(&fresh().step(&req(true, 0, 2, &first), &mut ctx()), 0x0200);
    failed(&fresh().step(&req(true, 1, 1, &first), &mut ctx()), 0x0200);
    failed(&fresh().step(&req(false, 3, 0, &first), &mut ctx()), 0x0200);
    let mut r = req(true, 0, 1, &first);
    r.version_min = 1;
    r.version_max = 1;
    failed(&fresh().step(&r, &mut ctx()), 0x0205);
    let mut r = req(true, 0, 1, &first);
    r.tsih = 5;
    failed(&fresh().step(&r, &mut ctx()), 0x020a);
    failed(
        &fresh().step(&req(true, 0, 1, &txt(&[("TargetName", OPEN)])), &mut ctx()),
        0x0207,
    );
    failed(
        &fresh().step(
            &req(true, 0, 1, &txt(&[("InitiatorName", INITIATOR)])),
            &mut ctx(),
        ),
        0x0207,
    );
    let bad_type = txt(&[("InitiatorName", INITIATOR), ("SessionType", "Boot")]);
    failed(
        &fresh().step(&req(true, 0, 1, &bad_type), &mut ctx()),
        0x0209,
    );
    let mut deny = ctx();
    deny.deny = true;
    failed(&fresh().step(&req(true, 0, 1, &first), &mut deny), 0x0202);
    failed(
        &fresh().step(&req(true, 0, 1, b"garbage"), &mut ctx()),
        0x0200,
    );
}

#[test]
fn chap_target_cannot_be_skipped() {
    let first = txt(&[("InitiatorName", INITIATOR), ("TargetName", CHAP)]);
    let s =
        LoginConnection::new(TargetConfig::default(), 1).step(&req(true, 1, 3, &first), &mut ctx());
    failed(&s, 0x0201);
    let none = txt(&[
        ("InitiatorName", INITIATOR),
        ("TargetName", CHAP),
        ("AuthMethod", "None"),
    ]);
    let s =
        LoginConnection::new(TargetConfig::default(), 1).step(&req(true, 0, 1, &none), &mut ctx());
    failed(&s, 0x0201);
    // CHAP_N before any challenge is a protocol error.
    let mut c = ctx();
    let mut conn = LoginConnection::new(TargetConfig::default(), 1);
    let s = conn.step(
        &req(
            false,
            0,
            0,
            &txt(&[
                ("InitiatorName", INITIATOR),
                ("TargetName", CHAP),
                ("AuthMethod", "CHAP"),
            ]),
        ),
        &mut c,
    );
    assert_eq!(s.outcome, LoginOutcome::Continue);
    failed(
        &conn.step(
            &req(true, 0, 1, &txt(&[("CHAP_N", "user1"), ("CHAP_R", "0x00")])),
            &mut c,
        ),
        0x0200,
    );
}

#[test]
fn md5_forbidden_by_config() {
    struct NoMd5(Ctx);
    impl LoginContext for NoMd5 {
        fn target_auth(&self, _: &str) -> Option<TargetAuth> {
            let mut cfg = chap_cfg(false);
            cfg.allowed.retain(|a| *a != ChapAlgorithm::Md5);
            Some(TargetAuth::Chap(cfg))
        }
        fn fill_random(&mut self, b: &mut [u8]) {
            self.0.fill_random(b)
        }
        fn allocate_tsih(&mut self) -> Option<u16> {
            self.0.allocate_tsih()
        }
    }
    let mut c = NoMd5(ctx());
    let mut conn = LoginConnection::new(TargetConfig::default(), 1);
    let first = txt(&[
        ("InitiatorName", INITIATOR),
        ("TargetName", CHAP),
        ("AuthMethod", "CHAP"),
    ]);
    conn.step(&req(false, 0, 0, &first), &mut c);
    failed(
        &conn.step(&req(false, 0, 0, &txt(&[("CHAP_A", "5")])), &mut c),
        0x0201,
    );
}

#[test]
fn continuation_pdus_are_reassembled() {
    let mut c = ctx();
    let mut conn = LoginConnection::new(TargetConfig::default(), 1);
    let first = txt(&[
        ("InitiatorName", INITIATOR),
        ("TargetName", OPEN),
        ("AuthMethod", "None"),
    ]);
    let (a, b) = first.split_at(20);
    let mut r = req(false, 0, 0, a);
    r.cont = true;
    let s = conn.step(&r, &mut c);
    assert_eq!(s.outcome, LoginOutcome::Continue);
    assert!(s.response.data.is_empty() && !s.response.transit);
    let mut other_isid = req(true, 0, 1, b);
    other_isid.isid[5] = 9;
    let mut probe = conn.clone();
    failed(&probe.step(&other_isid, &mut ctx()), 0x0200);
    let s = conn.step(&req(true, 0, 1, b), &mut c);
    assert!(s.response.transit);
    assert_eq!(get(&s, "AuthMethod").as_deref(), Some("None"));
}

#[test]
fn changed_identifiers_and_redeclaration_fail() {
    let mut c = ctx();
    let mut conn = LoginConnection::new(TargetConfig::default(), 1);
    let first = txt(&[("InitiatorName", INITIATOR), ("TargetName", OPEN)]);
    conn.step(&req(false, 0, 0, &first), &mut c);
    let mut r = req(false, 0, 0, b"");
    r.cid = 9;
    failed(&conn.step(&r, &mut c), 0x0200);

    let mut conn = LoginConnection::new(TargetConfig::default(), 1);
    conn.step(&req(true, 0, 1, &first), &mut c);
    let s = conn.step(
        &req(false, 1, 0, &txt(&[("MaxBurstLength", "65536")])),
        &mut c,
    );
    assert_eq!(get(&s, "MaxBurstLength").as_deref(), Some("65536"));
    failed(
        &conn.step(
            &req(false, 1, 0, &txt(&[("MaxBurstLength", "65536")])),
            &mut c,
        ),
        0x0200,
    );
}

#[test]
fn target_offers_when_default_exceeds_its_limit() {
    let mut c = ctx();
    let cfg = TargetConfig {
        max_burst_length: 65536,
        immediate_data: false,
        ..TargetConfig::default()
    };
    let mut conn = LoginConnection::new(cfg, 1);
    let first = txt(&[("InitiatorName", INITIATOR), ("TargetName", OPEN)]);
    let s = conn.step(&req(true, 0, 3, &first), &mut c);
    assert!(!s.response.transit);
    assert_eq!(get(&s, "MaxBurstLength").as_deref(), Some("65536"));
    assert_eq!(get(&s, "ImmediateData").as_deref(), Some("No"));
    let answer = txt(&[("MaxBurstLength", "32768"), ("ImmediateData", "No")]);
    let s = conn.step(&req(true, 0, 3, &answer), &mut c);
    // The default FirstBurstLength (65536) now exceeds the agreed MaxBurstLength: offer it too.
    assert!(!s.response.transit);
    assert_eq!(pairs(&s), vec![("FirstBurstLength".into(), "32768".into())]);
    let s = conn.step(
        &req(true, 0, 3, &txt(&[("FirstBurstLength", "16384")])),
        &mut c,
    );
    let p = success(s).params;
    assert_eq!(p.max_burst_length, 32768);
    assert_eq!(p.first_burst_length, 16384);
    assert!(!p.immediate_data);

    let mut conn = LoginConnection::new(
        TargetConfig {
            max_burst_length: 65536,
            ..TargetConfig::default()
        },
        1,
    );
    conn.step(&req(true, 0, 3, &first), &mut c);
    failed(
        &conn.step(
            &req(true, 0, 3, &txt(&[("MaxBurstLength", "131072")])),
            &mut c,
        ),
        0x0200,
    );
}

fn negotiate(cfg: TargetConfig, discovery: bool, offer: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut n = Negotiator::new(cfg);
    if discovery {
        n.params_mut().session_type = SessionType::Discovery;
    }
    let kv: Vec<KeyValue> = offer.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect();
    n.negotiate(&kv)
        .unwrap()
        .into_iter()
        .map(|p| (p.key, p.value))
        .collect()
}

fn one(cfg: TargetConfig, key: &str, value: &str) -> String {
    negotiate(cfg, false, &[(key, value)])
        .pop()
        .map(|(_, v)| v)
        .unwrap_or_default()
}

#[test]
fn key_rules() {
    let d = TargetConfig::default;
    // Minimum (RFC 7143 13.13-13.17, 13.20).
    assert_eq!(one(d(), "MaxBurstLength", "16776192"), "1048576");
    assert_eq!(one(d(), "MaxBurstLength", "0x10000"), "65536");
    assert_eq!(one(d(), "MaxBurstLength", "511"), "Reject");
    assert_eq!(one(d(), "MaxBurstLength", "16777216"), "Reject");
    assert_eq!(one(d(), "ErrorRecoveryLevel", "2"), "0");
    assert_eq!(one(d(), "ErrorRecoveryLevel", "3"), "Reject");
    assert_eq!(one(d(), "MaxConnections", "8"), "1");
    assert_eq!(one(d(), "MaxConnections", "0"), "Reject");
    assert_eq!(one(d(), "DefaultTime2Retain", "3600"), "20");
    assert_eq!(one(d(), "MaxOutstandingR2T", "16"), "1");
    // Maximum (13.15).
    assert_eq!(one(d(), "DefaultTime2Wait", "0"), "2");
    assert_eq!(one(d(), "DefaultTime2Wait", "10"), "10");
    assert_eq!(one(d(), "DefaultTime2Wait", "3601"), "Reject");
    // AND / OR.
    let no_imm = TargetConfig {
        immediate_data: false,
        initial_r2t: false,
        data_pdu_in_order: false,
        ..d()
    };
    assert_eq!(one(d(), "ImmediateData", "Yes"), "Yes");
    assert_eq!(one(no_imm.clone(), "ImmediateData", "Yes"), "No");
    assert_eq!(one(d(), "InitialR2T", "No"), "Yes");
    assert_eq!(one(no_imm.clone(), "InitialR2T", "No"), "No");
    assert_eq!(one(no_imm.clone(), "InitialR2T", "Yes"), "Yes");
    assert_eq!(one(no_imm.clone(), "DataPDUInOrder", "No"), "No");
    assert_eq!(one(d(), "DataSequenceInOrder", "No"), "Yes");
    assert_eq!(one(d(), "ImmediateData", "yes"), "Reject");
    // Markers are obsolete: No for IFMarker/OFMarker, Reject for the intervals.
    assert_eq!(one(d(), "IFMarker", "Yes"), "No");
    assert_eq!(one(d(), "OFMarkInt", "2048"), "Reject");
    // Lists.
    assert_eq!(one(d(), "HeaderDigest", "CRC32C,None"), "CRC32C");
    assert_eq!(one(d(), "DataDigest", "Y-com.example.fast,None"), "None");
    assert_eq!(one(d(), "DataDigest", "Y-com.example.fast"), "Reject");
    let crc_only = TargetConfig {
        header_digests: vec![Digest::Crc32c],
        ..d()
    };
    assert_eq!(one(crc_only, "HeaderDigest", "None"), "Reject");
    // Unknown and out-of-place keys.
    assert_eq!(one(d(), "X-com.example.Feature", "1"), "NotUnderstood");
    assert_eq!(one(d(), "SendTargets", "All"), "Irrelevant");
    assert_eq!(one(d(), "MaxRecvDataSegmentLength", "100"), "Reject");
    assert_eq!(one(d(), "MaxRecvDataSegmentLength", "4096"), "");
    let disc = negotiate(
        d(),
        true,
        &[
            ("ImmediateData", "Yes"),
            ("MaxOutstandingR2T", "1"),
            ("ErrorRecoveryLevel", "0"),
        ],
    );
    assert_eq!(disc[0].1, "Irrelevant");
    assert_eq!(disc[1].1, "Irrelevant");
    assert_eq!(disc[2].1, "0");
}

#[test]
fn first_burst_is_capped_by_max_burst_in_any_order() {
    let r = negotiate(
        TargetConfig::default(),
        false,
        &[
            ("FirstBurstLength", "1048576"),
            ("MaxBurstLength", "131072"),
        ],
    );
    assert_eq!(
        r,
        vec![
            ("FirstBurstLength".into(), "131072".into()),
            ("MaxBurstLength".into(), "131072".into())
        ]
    );
}

#[test]
fn target_only_and_security_keys_are_errors_in_negotiation() {
    let mut n = Negotiator::new(TargetConfig::default());
    assert_eq!(
        n.negotiate(&[KeyValue::new("TargetPortalGroupTag", "1")]),
        Err(NegotiationError::TargetOnlyKey("TargetPortalGroupTag"))
    );
    assert!(matches!(
        n.negotiate(&[KeyValue::new("CHAP_A", "5")]),
        Err(NegotiationError::SecurityKeyOutOfStage(_))
    ));
}

fn arb_pairs() -> impl Strategy<Value = Vec<KeyValue>> {
    let names: Vec<&'static str> = Key::ALL.iter().map(|k| k.name()).collect();
    let key = prop_oneof![
        proptest::sample::select(names).prop_map(str::to_string),
        "[A-Z][A-Za-z0-9_.-]{0,20}",
    ];
    let value = prop_oneof![
        "[0-9]{1,12}",
        "0x[0-9a-f]{0,20}",
        "(Yes|No|None|CRC32C|Reject|Irrelevant|NotUnderstood|Discovery|Normal)(,(None|CRC32C|CHAP|5|7))*",
        "[ -~]{0,40}",
    ];
    proptest::collection::btree_map(key, value, 0..24)
        .prop_map(|m| m.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect())
}

proptest! {
    #[test]
    fn negotiation_never_panics(batches in proptest::collection::vec(arb_pairs(), 1..4), discovery: bool) {
        let mut n = Negotiator::new(TargetConfig::default());
        if discovery {
            n.params_mut().session_type = SessionType::Discovery;
        }
        for b in &batches {
            if n.negotiate(b).is_err() {
                break;
            }
        }
        let _ = n.target_offers();
        let p = n.finish();
        prop_assert!(p.first_burst_length <= p.max_burst_length);
        prop_assert!(p.max_burst_length <= 1_048_576);
        prop_assert_eq!(p.error_recovery_level, 0);
    }

    #[test]
    fn login_never_panics_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz_login_negotiate(&data);
    }

    #[test]
    fn login_never_panics_on_text_requests(
        reqs in proptest::collection::vec((any::<u8>(), arb_pairs()), 1..6),
        target in proptest::sample::select(vec![OPEN, CHAP, MUTUAL, "iqn.x:y"]),
    ) {
        let mut c = ctx();
        let mut conn = LoginConnection::new(TargetConfig::default(), 1);
        let first = txt(&[("InitiatorName", INITIATOR), ("TargetName", target), ("AuthMethod", "CHAP,None")]);
        conn.step(&req(false, 0, 0, &first), &mut c);
        for (flags, kv) in &reqs {
            let data = encode_text(kv);
            let r = LoginRequest { transit: flags & 0x80 != 0, cont: flags & 0x40 != 0, csg: flags & 3, nsg: (flags >> 2) & 3, ..req(false, 0, 0, &data) };
            let s = conn.step(&r, &mut c);
            if s.response.transit {
                prop_assert!(r.transit);
            }
            if !matches!(s.outcome, LoginOutcome::Continue) {
                break;
            }
        }
    }
}
