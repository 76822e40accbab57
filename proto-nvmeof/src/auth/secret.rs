//! DH-HMAC-CHAP secrets and the values computed from them (NVMe base 2.0 section 8.13.5):
//! the `DHHC-1:hh:<base64(key || CRC-32)>:` secret representation nvme-cli's `gen-dhchap-key`
//! writes, the key transformation its hash indicator selects, and the HMACs of the protocol
//! (host and controller responses, the augmented challenge of a DH exchange).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha384, Sha512};

/// A hash function of DH-HMAC-CHAP (HashID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashId {
    /// SHA-256 (HashID 1).
    Sha256,
    /// SHA-384 (HashID 2).
    Sha384,
    /// SHA-512 (HashID 3).
    Sha512,
}

impl HashId {
    /// Every hash function, by identifier.
    pub const ALL: [HashId; 3] = [HashId::Sha256, HashId::Sha384, HashId::Sha512];

    /// The HashID.
    pub fn id(self) -> u8 {
        match self {
            HashId::Sha256 => 1,
            HashId::Sha384 => 2,
            HashId::Sha512 => 3,
        }
    }

    /// The hash function with identifier `id`.
    pub fn from_id(id: u8) -> Option<HashId> {
        HashId::ALL.into_iter().find(|h| h.id() == id)
    }

    /// The name nvme-cli and the kernel use (`sha256`, `sha384`, `sha512`).
    pub fn name(self) -> &'static str {
        match self {
            HashId::Sha256 => "sha256",
            HashId::Sha384 => "sha384",
            HashId::Sha512 => "sha512",
        }
    }

    /// The hash function named `name` (also accepts `hmac(sha256)` as the kernel writes it).
    pub fn from_name(name: &str) -> Option<HashId> {
        let n = name
            .strip_prefix("hmac(")
            .and_then(|n| n.strip_suffix(')'))
            .unwrap_or(name);
        HashId::ALL.into_iter().find(|h| h.name() == n)
    }

    /// Digest length in bytes (the HL of the messages).
    pub fn digest_len(self) -> usize {
        match self {
            HashId::Sha256 => 32,
            HashId::Sha384 => 48,
            HashId::Sha512 => 64,
        }
    }

    /// H(data).
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashId::Sha256 => Sha256::digest(data).to_vec(),
            HashId::Sha384 => Sha384::digest(data).to_vec(),
            HashId::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// HMAC-H(key, parts concatenated).
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            // HMAC takes keys of any length, so new_from_slice cannot fail.
            let Ok(mut m) = <M as hmac::digest::KeyInit>::new_from_slice(key) else {
                return Vec::new();
            };
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }
        match self {
            HashId::Sha256 => run::<Hmac<Sha256>>(key, parts),
            HashId::Sha384 => run::<Hmac<Sha384>>(key, parts),
            HashId::Sha512 => run::<Hmac<Sha512>>(key, parts),
        }
    }
}

/// Why a `DHHC-1` secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Not of the form `DHHC-1:hh:base64:`.
    #[error("not a DH-HMAC-CHAP secret (expected DHHC-1:<00..03>:<base64>:)")]
    Format,
    /// The hash indicator is not 00, 01, 02 or 03.
    #[error("unknown key hash indicator {0:?} (00 none, 01 SHA-256, 02 SHA-384, 03 SHA-512)")]
    HashIndicator(String),
    /// The base64 part does not decode.
    #[error("the key is not valid base64")]
    Base64,
    /// The key is not 32, 48 or 64 bytes, or does not fit its hash indicator.
    #[error("key length {0} bytes is not 32, 48 or 64 (or does not match the hash indicator)")]
    Length(usize),
    /// The CRC-32 trailer does not match the key.
    #[error("the key's CRC-32 does not match (a mistyped secret?)")]
    Crc,
}

/// A DH-HMAC-CHAP secret: the key and the hash its hash indicator names for the key
/// transformation (`None`: the key is used as it is).
#[derive(Clone, PartialEq, Eq)]
pub struct DhchapSecret {
    /// The hash of the key transformation (indicator 01..03), or none (00).
    pub transform: Option<HashId>,
    /// The key (32, 48 or 64 bytes).
    pub key: Vec<u8>,
}

impl std::fmt::Debug for DhchapSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("DhchapSecret")
            .field("transform", &self.transform)
            .field("key_len", &self.key.len())
            .finish()
    }
}

impl DhchapSecret {
    /// Parses the `DHHC-1:hh:<base64(key || le32 CRC-32(key))>:` representation.
    pub fn parse(text: &str) -> Result<DhchapSecret, SecretError> {
        let rest = text
            .trim()
            .strip_prefix("DHHC-1:")
            .ok_or(SecretError::Format)?;
        let (hh, rest) = rest.split_once(':').ok_or(SecretError::Format)?;
        let b64 = rest.strip_suffix(':').unwrap_or(rest);
        if b64.contains(':') {
            return Err(SecretError::Format);
        }
        let transform = match hh {
            "00" => None,
            "01" => Some(HashId::Sha256),
            "02" => Some(HashId::Sha384),
            "03" => Some(HashId::Sha512),
            other => return Err(SecretError::HashIndicator(other.to_string())),
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| SecretError::Base64)?;
        let key_len = raw.len().saturating_sub(4);
        let ok_len = match transform {
            None => matches!(key_len, 32 | 48 | 64),
            Some(h) => key_len == h.digest_len(),
        };
        if raw.len() < 4 || !ok_len {
            return Err(SecretError::Length(key_len));
        }
        let (key, crc) = raw.split_at(key_len);
        if crc32fast::hash(key).to_le_bytes() != crc {
            return Err(SecretError::Crc);
        }
        Ok(DhchapSecret {
            transform,
            key: key.to_vec(),
        })
    }

    /// The `DHHC-1` representation (what nvme-cli's `gen-dhchap-key` prints).
    pub fn to_text(&self) -> String {
        let mut raw = self.key.clone();
        raw.extend_from_slice(&crc32fast::hash(&self.key).to_le_bytes());
        format!(
            "DHHC-1:{:02}:{}:",
            self.transform.map_or(0, HashId::id),
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// The key the responses are keyed with: the key itself, or HMAC-H(key, NQN ||
    /// "NVMe-over-Fabrics") with the indicator's hash (the host's NQN for the host's secret,
    /// the subsystem's for the controller's).
    pub fn transformed(&self, nqn: &str) -> Vec<u8> {
        match self.transform {
            None => self.key.clone(),
            Some(h) => h.hmac(&self.key, &[nqn.as_bytes(), b"NVMe-over-Fabrics"]),
        }
    }
}

/// The challenge a response is computed over: C itself without a DH exchange, or, with one,
/// the augmented challenge HMAC-H(H(session key), C).
pub fn effective_challenge(hash: HashId, session_key: Option<&[u8]>, c: &[u8]) -> Vec<u8> {
    match session_key {
        None => c.to_vec(),
        Some(k) => hash.hmac(&hash.digest(k), &[c]),
    }
}

/// The host's response: HMAC-H(Kh', C1' || le32 S1 || le16 T_ID || 00h || "HostHost" ||
/// host NQN || 00h || subsystem NQN).
pub fn host_response(
    hash: HashId,
    key: &[u8],
    challenge: &[u8],
    seqnum: u32,
    tid: u16,
    hostnqn: &str,
    subnqn: &str,
) -> Vec<u8> {
    hash.hmac(
        key,
        &[
            challenge,
            &seqnum.to_le_bytes(),
            &tid.to_le_bytes(),
            &[0],
            b"HostHost",
            hostnqn.as_bytes(),
            &[0],
            subnqn.as_bytes(),
        ],
    )
}

/// The controller's response: HMAC-H(Kc', C2' || le32 S2 || le16 T_ID || 00h ||
/// "Controller" || subsystem NQN || 00h || host NQN).
pub fn controller_response(
    hash: HashId,
    key: &[u8],
    challenge: &[u8],
    seqnum: u32,
    tid: u16,
    hostnqn: &str,
    subnqn: &str,
) -> Vec<u8> {
    hash.hmac(
        key,
        &[
            challenge,
            &seqnum.to_le_bytes(),
            &tid.to_le_bytes(),
            &[0],
            b"Controller",
            subnqn.as_bytes(),
            &[0],
            hostnqn.as_bytes(),
        ],
    )
}

/// Compares two responses in time independent of where they differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(a.ct_eq(b))
}
