//! Known-answer vectors derived from the definitions (computed independently of this code,
//! with Python's hmac/hashlib/zlib/pow over the same inputs), the two state machines against
//! each other, and the message codec under proptest.

use std::sync::Arc;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::secret::{self, DhchapSecret, HashId};
use super::wire::{self, AuthMessage};
use super::*;

const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001";
const SUBNQN: &str = "nqn.2026-11.io.tandem:kat";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256_hex(b: &[u8]) -> String {
    hex(&HashId::Sha256.digest(b))
}

fn key(range: std::ops::Range<u8>) -> Vec<u8> {
    range.collect()
}

#[test]
fn dhhc1_secrets_parse_print_and_check_their_crc() {
    let s =
        DhchapSecret::parse("DHHC-1:01:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:").unwrap();
    assert_eq!(s.transform, Some(HashId::Sha256));
    assert_eq!(s.key, key(0..32));
    assert_eq!(
        s.to_text(),
        "DHHC-1:01:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:"
    );
    let s64 = "DHHC-1:00:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P4zODhA=:";
    let s = DhchapSecret::parse(s64).unwrap();
    assert_eq!((s.transform, s.key.len()), (None, 64));
    assert_eq!(
        DhchapSecret::parse("DHHC-1:01:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaS:"),
        Err(SecretError::Crc)
    );
    // a 64-byte key cannot carry the SHA-256 indicator
    assert!(matches!(
        DhchapSecret::parse(&s64.replace(":00:", ":01:")),
        Err(SecretError::Length(64))
    ));
    assert!(matches!(
        DhchapSecret::parse(&s64.replace(":00:", ":07:")),
        Err(SecretError::HashIndicator(_))
    ));
    assert_eq!(
        DhchapSecret::parse("DHHC-2:00:abc:"),
        Err(SecretError::Format)
    );
    assert_eq!(
        DhchapSecret::parse("DHHC-1:00:!!!!:"),
        Err(SecretError::Base64)
    );
    assert!(
        !format!("{s:?}").contains("AAEC"),
        "Debug must not print the key"
    );
}

#[test]
fn key_transformation_known_answers() {
    let cases = [
        (HashId::Sha256, key(0..32), "6c7b81cb2a746f74454b1d7140f3153b51ca99459fcef7a86a17f27695b87cd8"),
        (HashId::Sha384, key(0..48), "c916f39d7bd438ac94ce98f12f22202c6bc43b1b1bf7f081a36fd76d11b4b1730726ff75f32576b5749cfa06d1a7b4f5"),
        (HashId::Sha512, key(0..64), "5da79d3888c5ddac507b097840c4c8af8c7099e3f32fbf216209d24103f54bcf22284e7034bb579a8997475f50aec0bff3ccad184563779e81f48c405071b970"),
    ];
    for (h, k, want) in cases {
        let s = DhchapSecret {
            transform: Some(h),
            key: k.clone(),
        };
        assert_eq!(hex(&s.transformed(HOSTNQN)), want, "{h:?}");
        // without a hash indicator the key is used as it is
        let plain = DhchapSecret {
            transform: None,
            key: k.clone(),
        };
        assert_eq!(plain.transformed(HOSTNQN), k);
    }
}

#[test]
fn response_and_augmented_challenge_known_answers() {
    let tk = DhchapSecret {
        transform: Some(HashId::Sha256),
        key: key(0..32),
    }
    .transformed(HOSTNQN);
    let r = secret::host_response(
        HashId::Sha256,
        &tk,
        &[0xA5; 32],
        0x0102_0304,
        0x0102,
        HOSTNQN,
        SUBNQN,
    );
    assert_eq!(
        hex(&r),
        "9368c8280f92f9d8f4bcffd2439bba9f92f7e08787e0f2423962d33745f35522"
    );
    let r = secret::controller_response(
        HashId::Sha256,
        &key(32..64),
        &[0x5A; 32],
        7,
        0x0102,
        HOSTNQN,
        SUBNQN,
    );
    assert_eq!(
        hex(&r),
        "45456e0290798f16d314b0fc9718a4ac01bbc42ab847766f008c5faad96aff98"
    );
    let session: Vec<u8> = (0..256u32).map(|i| i as u8).collect();
    let aug = secret::effective_challenge(HashId::Sha384, Some(&session), &[0xA5; 48]);
    assert_eq!(hex(&aug), "4ee534e829b1ceb87586d94578288b1e467b7b40cfee6f06f8e6e82ae23ba5d6a9d47b671821e86c6512c297119b1d6f");
    assert_eq!(
        secret::effective_challenge(HashId::Sha384, None, &[1, 2]),
        vec![1, 2]
    );
}

#[test]
fn ffdhe2048_known_answers() {
    let g = DhGroup::Ffdhe2048;
    let y = g.public_value(&[0x11; 64]);
    assert_eq!(
        sha256_hex(&y),
        "e9e21a424097073148c9248310b99206574755a4778e801b7b82feb1e7d51269"
    );
    let z = g
        .shared_secret(&[0x11; 64], &g.public_value(&[0x5A; 64]))
        .unwrap();
    assert_eq!(
        sha256_hex(&z),
        "6bc5a3f6c88c7a0415a34ed88a5082d6e7b5d44389eb48bc86f000a824d88e57"
    );
}

fn secret(fill: u8, transform: Option<HashId>) -> DhchapSecret {
    DhchapSecret {
        transform,
        key: vec![fill; transform.map_or(32, HashId::digest_len)],
    }
}

/// Runs one transaction between the two state machines; Ok(true) when both sides finished
/// authenticated, Err with the host's view otherwise (and whether the controller let the
/// queue through).
fn transact(
    policy: DhchapPolicy,
    host_secret: DhchapSecret,
    ctrl_secret: Option<DhchapSecret>,
    groups: &[DhGroup],
    seed: u64,
) -> (Result<(), HostAuthError>, bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = ControllerAuth::new(Arc::new(policy), HOSTNQN, SUBNQN);
    let mut h = HostAuth::new(HOSTNQN, SUBNQN, host_secret, ctrl_secret, 7);
    h.dhgroups = groups.iter().map(|g| g.id()).collect();
    assert_eq!(c.send(&h.negotiate()), SendOutcome::Continue);
    let challenge = c.receive(&mut rng);
    let reply = match h.on_challenge(&challenge, &mut rng) {
        Ok(r) => r,
        Err(e) => return (Err(e), c.authenticated()),
    };
    assert_eq!(c.send(&reply), SendOutcome::Continue);
    let s1 = c.receive(&mut rng);
    match h.on_success1(&s1) {
        Ok(Finish::Done) => (Ok(()), c.authenticated()),
        Ok(Finish::SendSuccess2(s2)) => {
            assert!(!c.authenticated(), "authenticated before Success2");
            assert_eq!(c.send(&s2), SendOutcome::Authenticated);
            (Ok(()), c.authenticated())
        }
        Err(e) => {
            let out = c.send(&h.failure2(failure_explanation(&e)));
            let refused_by_host = matches!(e, HostAuthError::ControllerNotAuthenticated);
            if refused_by_host {
                assert_eq!(out, SendOutcome::HostFailed);
            }
            (Err(e), c.authenticated())
        }
    }
}

#[test]
fn the_right_secret_authenticates_with_every_group_and_hash() {
    for (i, g) in DhGroup::ALL.into_iter().enumerate() {
        for h in HashId::ALL {
            if !g.is_null() && h != HashId::Sha256 && g != DhGroup::Ffdhe3072 {
                continue; // every group once, every hash with one DH group: keeps it quick
            }
            let mut p = DhchapPolicy::new(secret(1, Some(HashId::Sha384)), None);
            p.hashes = vec![h];
            p.dhgroups = vec![g];
            let (host, ctrl) = transact(p, secret(1, Some(HashId::Sha384)), None, &[g], i as u64);
            assert_eq!(host, Ok(()), "{g:?} {h:?}");
            assert!(ctrl, "{g:?} {h:?}");
        }
    }
}

#[test]
fn a_wrong_host_secret_is_refused_with_failure1() {
    let p = DhchapPolicy::new(secret(1, None), None);
    let (host, ctrl) = transact(p, secret(2, None), None, &[DhGroup::Ffdhe2048], 1);
    assert_eq!(
        host,
        Err(HostAuthError::Refused {
            reason: wire::REASON_FAILED,
            explanation: wire::explanation::FAILED
        })
    );
    assert!(!ctrl);
}

#[test]
fn bidirectional_authentication_checks_the_controller() {
    let p = || DhchapPolicy::new(secret(1, None), Some(secret(9, Some(HashId::Sha256))));
    // both secrets right
    let (host, ctrl) = transact(
        p(),
        secret(1, None),
        Some(secret(9, Some(HashId::Sha256))),
        &[DhGroup::Null],
        2,
    );
    assert_eq!(host, Ok(()));
    assert!(ctrl);
    // the host expects another controller secret: it refuses the controller
    let (host, ctrl) = transact(
        p(),
        secret(1, None),
        Some(secret(8, Some(HashId::Sha256))),
        &[DhGroup::Ffdhe2048],
        3,
    );
    assert_eq!(host, Err(HostAuthError::ControllerNotAuthenticated));
    assert!(!ctrl);
    // a controller without a controller secret cannot be authenticated: Failure1
    let no_ctrl = DhchapPolicy::new(secret(1, None), None);
    let (host, ctrl) = transact(
        no_ctrl,
        secret(1, None),
        Some(secret(9, None)),
        &[DhGroup::Null],
        4,
    );
    assert!(
        matches!(host, Err(HostAuthError::Refused { .. })),
        "{host:?}"
    );
    assert!(!ctrl);
}

#[test]
fn unusable_offers_and_out_of_sequence_messages_fail_cleanly() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut p = DhchapPolicy::new(secret(1, None), None);
    p.dhgroups = vec![DhGroup::Ffdhe8192];
    let mut c = ControllerAuth::new(Arc::new(p), HOSTNQN, SUBNQN);
    let mut h = HostAuth::new(HOSTNQN, SUBNQN, secret(1, None), None, 3);
    h.dhgroups = vec![0, 1];
    c.send(&h.negotiate());
    assert_eq!(
        h.on_challenge(&c.receive(&mut rng), &mut rng),
        Err(HostAuthError::Refused {
            reason: 1,
            explanation: wire::explanation::DHGROUP_UNUSABLE
        })
    );
    // a Success2 nobody asked for, garbage, then a reply before any challenge
    let mut c = ControllerAuth::new(
        Arc::new(DhchapPolicy::new(secret(1, None), None)),
        HOSTNQN,
        SUBNQN,
    );
    c.send(&AuthMessage::Success2 { tid: 1 }.encode());
    assert!(matches!(
        AuthMessage::decode(&c.receive(&mut rng)),
        Ok(AuthMessage::Failure1(_))
    ));
    c.send(&[0xFF; 3]);
    assert!(matches!(
        AuthMessage::decode(&c.receive(&mut rng)),
        Ok(AuthMessage::Failure1(_))
    ));
    assert!(!c.authenticated());
}

#[test]
fn commands_are_checked_for_the_dhchap_protocol() {
    let s = send_command(4, 100);
    assert_eq!(parse_command(&s), Ok(100));
    assert_eq!(s.fctype(), crate::fabrics::fctype::AUTH_SEND);
    let mut bad = receive_command(4, 100);
    bad.0[43] = 0xEA;
    assert_eq!(parse_command(&bad), Err(AuthCommandError::Protocol(43)));
    assert_eq!(
        parse_command(&receive_command(1, 0)),
        Err(AuthCommandError::Length(0))
    );
    assert_eq!(
        parse_command(&receive_command(1, 1 << 20)),
        Err(AuthCommandError::Length(1 << 20))
    );
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn message() -> impl Strategy<Value = AuthMessage> {
    let hl = prop_oneof![Just(32usize), Just(48), Just(64)];
    prop_oneof![
        (any::<u16>(), bytes(31), bytes(31)).prop_map(|(tid, hashes, dhgroups)| {
            AuthMessage::Negotiate(wire::Negotiate {
                tid,
                sc_c: 0,
                hashes: hashes[..hashes.len().min(30)].to_vec(),
                dhgroups: dhgroups[..dhgroups.len().min(30)].to_vec(),
            })
        }),
        (
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
            any::<u32>(),
            hl.clone(),
            bytes(1100)
        )
            .prop_map(
                |(tid, hash, dhgroup, seqnum, hl, dh_value)| AuthMessage::Challenge(
                    wire::Challenge {
                        tid,
                        hash,
                        dhgroup,
                        seqnum,
                        challenge: vec![0xC1; hl],
                        dh_value,
                    }
                )
            ),
        (
            any::<u16>(),
            any::<u32>(),
            hl.clone(),
            any::<bool>(),
            bytes(1100)
        )
            .prop_map(|(tid, seqnum, hl, cvalid, dh_value)| AuthMessage::Reply(
                wire::Reply {
                    tid,
                    seqnum,
                    response: vec![0x71; hl],
                    challenge: cvalid.then(|| vec![0xC2; hl]),
                    dh_value,
                }
            )),
        (any::<u16>(), hl, any::<bool>()).prop_map(|(tid, hl, rvalid)| {
            AuthMessage::Success1(wire::Success1 {
                tid,
                hash_len: hl as u8,
                response: rvalid.then(|| vec![0x72; hl]),
            })
        }),
        any::<u16>().prop_map(|tid| AuthMessage::Success2 { tid }),
        (any::<u16>(), any::<u8>(), any::<u8>(), any::<bool>()).prop_map(
            |(tid, reason, explanation, one)| {
                let f = wire::Failure {
                    tid,
                    reason,
                    explanation,
                };
                if one {
                    AuthMessage::Failure1(f)
                } else {
                    AuthMessage::Failure2(f)
                }
            }
        ),
    ]
}

proptest! {
    #[test]
    fn messages_round_trip(m in message(), pad in bytes(64)) {
        let mut enc = m.encode();
        prop_assert_eq!(AuthMessage::decode(&enc), Ok(m.clone()));
        // an AUTH_Receive buffer larger than the message: the padding is ignored
        enc.extend_from_slice(&pad);
        prop_assert_eq!(AuthMessage::decode(&enc), Ok(m.clone()));
        // any truncation of the fixed part or the declared lengths is a typed error
        let cut = m.encode();
        for n in 0..cut.len() {
            if let Ok(d) = AuthMessage::decode(&cut[..n]) {
                prop_assert!(d != m, "a truncation decoded to the same message");
            }
        }
    }

    #[test]
    fn hostile_bytes_never_panic(input in bytes(2048)) {
        crate::fuzz::auth_messages(&input);
    }
}
