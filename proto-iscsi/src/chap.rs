//! CHAP authentication as an iSCSI target performs it (RFC 1994, RFC 7143 section 12.1.3).
//!
//! The exchange is: the initiator offers `CHAP_A=<list>`; the target picks one and sends
//! `CHAP_A`, `CHAP_I` (identifier) and `CHAP_C` (challenge); the initiator answers `CHAP_N`
//! (user) and `CHAP_R` = H(identifier || secret || challenge), optionally adding its own
//! `CHAP_I`/`CHAP_C` to authenticate the target (mutual CHAP), which the target then answers with
//! its own `CHAP_N`/`CHAP_R`.
//!
//! Algorithm numbers: 5 is MD5 (RFC 1994). 6 (SHA-1), 7 (SHA-256) and 8 (SHA3-256) come from the
//! PPP authentication algorithm numbering that open-iscsi, the Linux target and SCST all use; RFC
//! 7143 itself only requires MD5.
//!
//! This module owns no randomness: challenges are filled by a caller-supplied function.

use md5::Md5;
use sha1::Sha1;
use sha2::Sha256;
use sha3::{Digest, Sha3_256};
use thiserror::Error;

use crate::text::{self, KeyValue, SpecialValue};

/// A CHAP hash algorithm with its `CHAP_A` number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChapAlgorithm {
    /// MD5, `CHAP_A=5` (the only one RFC 7143 mandates; weak).
    Md5,
    /// SHA-1, `CHAP_A=6`.
    Sha1,
    /// SHA-256, `CHAP_A=7`.
    Sha256,
    /// SHA3-256, `CHAP_A=8`.
    Sha3_256,
}

impl ChapAlgorithm {
    /// The target's default preference: strongest first. Selection still follows the
    /// initiator's order; this list only says what is allowed.
    pub const DEFAULT_ALLOWED: [ChapAlgorithm; 4] = [
        ChapAlgorithm::Sha3_256,
        ChapAlgorithm::Sha256,
        ChapAlgorithm::Sha1,
        ChapAlgorithm::Md5,
    ];

    /// The `CHAP_A` number.
    pub fn code(self) -> u8 {
        match self {
            ChapAlgorithm::Md5 => 5,
            ChapAlgorithm::Sha1 => 6,
            ChapAlgorithm::Sha256 => 7,
            ChapAlgorithm::Sha3_256 => 8,
        }
    }

    /// Maps a `CHAP_A` number back to an algorithm.
    pub fn from_code(code: u64) -> Option<Self> {
        match code {
            5 => Some(ChapAlgorithm::Md5),
            6 => Some(ChapAlgorithm::Sha1),
            7 => Some(ChapAlgorithm::Sha256),
            8 => Some(ChapAlgorithm::Sha3_256),
            _ => None,
        }
    }

    /// Digest length in bytes; also the length of the challenges we generate.
    pub fn digest_len(self) -> usize {
        match self {
            ChapAlgorithm::Md5 => 16,
            ChapAlgorithm::Sha1 => 20,
            ChapAlgorithm::Sha256 | ChapAlgorithm::Sha3_256 => 32,
        }
    }

    /// The CHAP response H(id || secret || challenge) (RFC 1994 section 4.1).
    pub fn response(self, id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
        fn run<D: Digest>(id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
            let mut d = D::new();
            d.update([id]);
            d.update(secret);
            d.update(challenge);
            d.finalize().to_vec()
        }
        match self {
            ChapAlgorithm::Md5 => run::<Md5>(id, secret, challenge),
            ChapAlgorithm::Sha1 => run::<Sha1>(id, secret, challenge),
            ChapAlgorithm::Sha256 => run::<Sha256>(id, secret, challenge),
            ChapAlgorithm::Sha3_256 => run::<Sha3_256>(id, secret, challenge),
        }
    }
}

/// A CHAP user name and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ChapUser {
    /// The name sent as `CHAP_N`.
    pub name: String,
    /// The shared secret.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for ChapUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapUser")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// What a target needs to run CHAP: which initiator users it accepts, the optional identity it
/// proves itself with for mutual CHAP, and which algorithms it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChapConfig {
    /// Initiator credentials accepted for this target (matched on `CHAP_N`).
    pub initiator_users: Vec<ChapUser>,
    /// The target's own credentials for mutual CHAP; `None` refuses mutual CHAP.
    pub target_user: Option<ChapUser>,
    /// Algorithms the target allows (e.g. drop MD5 to forbid it).
    pub allowed: Vec<ChapAlgorithm>,
}

impl ChapConfig {
    /// One-way CHAP with a single initiator user and the default algorithm set.
    pub fn one_way(user: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        ChapConfig {
            initiator_users: vec![ChapUser {
                name: user.into(),
                secret: secret.into(),
            }],
            target_user: None,
            allowed: ChapAlgorithm::DEFAULT_ALLOWED.to_vec(),
        }
    }
}

/// Why CHAP failed. Every variant ends the login with "authentication failure" except
/// [`ChapError::IdenticalSecrets`], which is a target configuration error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChapError {
    /// None of the initiator's `CHAP_A` values is allowed by the target.
    #[error("no acceptable CHAP algorithm offered")]
    NoAcceptableAlgorithm,
    /// `CHAP_N` or `CHAP_R` missing from the initiator's response.
    #[error("CHAP response incomplete")]
    MissingResponse,
    /// Only one of `CHAP_I`/`CHAP_C` sent for mutual CHAP.
    #[error("mutual CHAP request incomplete")]
    IncompleteMutual,
    /// A CHAP value failed to decode.
    #[error("malformed CHAP value for {0}")]
    Malformed(&'static str),
    /// `CHAP_N` names no configured user.
    #[error("unknown CHAP user")]
    UnknownUser,
    /// `CHAP_R` does not match the expected response.
    #[error("CHAP response mismatch")]
    BadResponse,
    /// The initiator's challenge repeats ours (reflection attack, RFC 7143 section 12.1.3).
    #[error("initiator reflected the target's challenge")]
    ReflectedChallenge,
    /// Mutual CHAP requested but the target has no credentials of its own.
    #[error("mutual CHAP requested but not configured")]
    MutualNotConfigured,
    /// The target's secret equals the initiator user's secret; RFC 7143 forbids using one
    /// secret for both directions and open-iscsi refuses it.
    #[error("target and initiator CHAP secrets are identical")]
    IdenticalSecrets,
}

/// Result of a successful CHAP verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChapSuccess {
    /// The authenticated initiator user (`CHAP_N`).
    pub user: String,
    /// Algorithm used.
    pub algorithm: ChapAlgorithm,
    /// Keys to send back: the target's `CHAP_N`/`CHAP_R` for mutual CHAP, else empty.
    pub response_keys: Vec<KeyValue>,
    /// Whether the target authenticated itself too.
    pub mutual: bool,
}

/// Picks the first algorithm of the initiator's `CHAP_A` list that `allowed` contains.
pub fn select_algorithm(offer: &str, allowed: &[ChapAlgorithm]) -> Option<ChapAlgorithm> {
    text::split_list(offer)
        .filter_map(|v| text::parse_number(v).ok())
        .filter_map(ChapAlgorithm::from_code)
        .find(|a| allowed.contains(a))
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The target's half of one CHAP exchange after it has sent its challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChapChallenge {
    /// Algorithm selected from the initiator's list.
    pub algorithm: ChapAlgorithm,
    /// The identifier sent as `CHAP_I`.
    pub id: u8,
    /// The challenge sent as `CHAP_C`.
    pub challenge: Vec<u8>,
}

impl ChapChallenge {
    /// Answers the initiator's `CHAP_A` offer: selects an algorithm and draws identifier and
    /// challenge (digest-length bytes) from `random`.
    pub fn start(
        offer: &str,
        allowed: &[ChapAlgorithm],
        random: &mut dyn FnMut(&mut [u8]),
    ) -> Result<Self, ChapError> {
        let algorithm = select_algorithm(offer, allowed).ok_or(ChapError::NoAcceptableAlgorithm)?;
        let mut id = [0u8; 1];
        random(&mut id);
        let mut challenge = vec![0u8; algorithm.digest_len()];
        random(&mut challenge);
        Ok(ChapChallenge {
            algorithm,
            id: id[0],
            challenge,
        })
    }

    /// The keys the target sends: `CHAP_A`, `CHAP_I`, `CHAP_C`.
    pub fn keys(&self) -> Vec<KeyValue> {
        vec![
            KeyValue::new("CHAP_A", self.algorithm.code().to_string()),
            KeyValue::new("CHAP_I", self.id.to_string()),
            KeyValue::new("CHAP_C", text::encode_hex(&self.challenge)),
        ]
    }

    /// Verifies the initiator's `CHAP_N`/`CHAP_R` (and answers a mutual `CHAP_I`/`CHAP_C`).
    ///
    /// `get` looks a key up in the initiator's request.
    pub fn verify<'a>(
        &self,
        get: impl Fn(&str) -> Option<&'a str>,
        config: &ChapConfig,
    ) -> Result<ChapSuccess, ChapError> {
        let name = get("CHAP_N").ok_or(ChapError::MissingResponse)?;
        let r = get("CHAP_R").ok_or(ChapError::MissingResponse)?;
        if SpecialValue::parse(name).is_some() || SpecialValue::parse(r).is_some() {
            return Err(ChapError::MissingResponse);
        }
        let r = text::parse_large_binary(r).map_err(|_| ChapError::Malformed("CHAP_R"))?;
        // Always compute the expected value so a wrong user costs the same as a wrong secret.
        let user = config.initiator_users.iter().find(|u| u.name == name);
        let secret = user.map(|u| u.secret.as_slice()).unwrap_or_default();
        let expected = self.algorithm.response(self.id, secret, &self.challenge);
        let matches = constant_time_eq(&expected, &r);
        let user = user.ok_or(ChapError::UnknownUser)?;
        if !matches {
            return Err(ChapError::BadResponse);
        }
        let mutual_i = get("CHAP_I");
        let mutual_c = get("CHAP_C");
        let response_keys = match (mutual_i, mutual_c) {
            (None, None) => Vec::new(),
            (Some(i), Some(c)) => {
                let target = config
                    .target_user
                    .as_ref()
                    .ok_or(ChapError::MutualNotConfigured)?;
                let id = text::parse_number(i)
                    .ok()
                    .and_then(|v| u8::try_from(v).ok())
                    .ok_or(ChapError::Malformed("CHAP_I"))?;
                let c = text::parse_large_binary(c).map_err(|_| ChapError::Malformed("CHAP_C"))?;
                if constant_time_eq(&c, &self.challenge) {
                    return Err(ChapError::ReflectedChallenge);
                }
                if constant_time_eq(&target.secret, &user.secret) {
                    return Err(ChapError::IdenticalSecrets);
                }
                let resp = self.algorithm.response(id, &target.secret, &c);
                vec![
                    KeyValue::new("CHAP_N", target.name.clone()),
                    KeyValue::new("CHAP_R", text::encode_hex(&resp)),
                ]
            }
            _ => return Err(ChapError::IncompleteMutual),
        };
        Ok(ChapSuccess {
            user: user.name.clone(),
            algorithm: self.algorithm,
            mutual: !response_keys.is_empty(),
            response_keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> impl FnMut(&mut [u8]) {
        let mut n = 0u8;
        move |buf: &mut [u8]| {
            for b in buf {
                *b = n;
                n = n.wrapping_add(1);
            }
        }
    }

    #[test]
    fn rfc1994_md5_response_matches_reference_digest() {
        // MD5 of the bytes 0x01 "secret" 0x00..0x0f, computed independently of `response`.
        let challenge: Vec<u8> = (0u8..16).collect();
        let mut input = vec![1u8];
        input.extend_from_slice(b"secret");
        input.extend_from_slice(&challenge);
        let expected = Md5::digest(&input).to_vec();
        assert_eq!(
            ChapAlgorithm::Md5.response(1, b"secret", &challenge),
            expected
        );
        // Known MD5 vector (RFC 1321): MD5("abc").
        assert_eq!(
            hex::encode(ChapAlgorithm::Md5.response(b'a', b"b", b"c")),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        // FIPS 180 vector: SHA-256("abc").
        assert_eq!(
            hex::encode(ChapAlgorithm::Sha256.response(b'a', b"b", b"c")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // FIPS 202 vector: SHA3-256("abc").
        assert_eq!(
            hex::encode(ChapAlgorithm::Sha3_256.response(b'a', b"b", b"c")),
            "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"
        );
        // FIPS 180 vector: SHA-1("abc").
        assert_eq!(
            hex::encode(ChapAlgorithm::Sha1.response(b'a', b"b", b"c")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn selection_follows_initiator_order_within_allowed() {
        let all = ChapAlgorithm::DEFAULT_ALLOWED;
        assert_eq!(select_algorithm("5", &all), Some(ChapAlgorithm::Md5));
        assert_eq!(
            select_algorithm("8,7,6,5", &all),
            Some(ChapAlgorithm::Sha3_256)
        );
        assert_eq!(select_algorithm("7,5", &all), Some(ChapAlgorithm::Sha256));
        let no_md5 = [ChapAlgorithm::Sha256];
        assert_eq!(select_algorithm("5", &no_md5), None);
        assert_eq!(
            select_algorithm("99,junk,7", &no_md5),
            Some(ChapAlgorithm::Sha256)
        );
    }

    #[test]
    fn one_way_and_mutual_exchange() {
        let mut cfg = ChapConfig::one_way("alice", b"alice-secret-12".to_vec());
        let ch = ChapChallenge::start("7", &cfg.allowed, &mut counter()).unwrap();
        assert_eq!(ch.id, 0);
        assert_eq!(ch.challenge, (1u8..33).collect::<Vec<_>>());
        let keys = ch.keys();
        assert_eq!(keys[0], KeyValue::new("CHAP_A", "7"));
        assert_eq!(keys[2].value, text::encode_hex(&ch.challenge));

        let mut input = vec![ch.id];
        input.extend_from_slice(b"alice-secret-12");
        input.extend_from_slice(&ch.challenge);
        let good = text::encode_hex(&Sha256::digest(&input));
        let req = |pairs: &[(&str, &str)]| -> Vec<KeyValue> {
            pairs.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect()
        };
        let run = |pairs: Vec<KeyValue>, cfg: &ChapConfig| {
            ch.verify(
                |k| pairs.iter().find(|p| p.key == k).map(|p| p.value.as_str()),
                cfg,
            )
        };
        let ok = run(req(&[("CHAP_N", "alice"), ("CHAP_R", &good)]), &cfg).unwrap();
        assert!(!ok.mutual);
        assert_eq!(ok.user, "alice");
        assert_eq!(
            run(req(&[("CHAP_N", "bob"), ("CHAP_R", &good)]), &cfg),
            Err(ChapError::UnknownUser)
        );
        let bad = text::encode_hex(&[0u8; 32]);
        assert_eq!(
            run(req(&[("CHAP_N", "alice"), ("CHAP_R", &bad)]), &cfg),
            Err(ChapError::BadResponse)
        );
        assert_eq!(
            run(req(&[("CHAP_N", "alice")]), &cfg),
            Err(ChapError::MissingResponse)
        );

        let mutual = |c: &str| {
            req(&[
                ("CHAP_N", "alice"),
                ("CHAP_R", &good),
                ("CHAP_I", "9"),
                ("CHAP_C", c),
            ])
        };
        assert_eq!(
            run(mutual("0x0102"), &cfg),
            Err(ChapError::MutualNotConfigured)
        );
        cfg.target_user = Some(ChapUser {
            name: "target".into(),
            secret: b"target-secret-1".to_vec(),
        });
        let reflected = text::encode_hex(&ch.challenge);
        assert_eq!(
            run(mutual(&reflected), &cfg),
            Err(ChapError::ReflectedChallenge)
        );
        let ok = run(mutual("0bAQI="), &cfg).unwrap();
        assert!(ok.mutual);
        let mut input = vec![9u8];
        input.extend_from_slice(b"target-secret-1");
        input.extend_from_slice(&[1, 2]);
        assert_eq!(
            ok.response_keys,
            vec![
                KeyValue::new("CHAP_N", "target"),
                KeyValue::new("CHAP_R", text::encode_hex(&Sha256::digest(&input))),
            ]
        );
        cfg.target_user = Some(ChapUser {
            name: "target".into(),
            secret: b"alice-secret-12".to_vec(),
        });
        assert_eq!(
            run(mutual("0x0102"), &cfg),
            Err(ChapError::IdenticalSecrets)
        );
    }

    #[test]
    fn constant_time_eq_basics() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
