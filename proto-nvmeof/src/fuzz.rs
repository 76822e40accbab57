//! Entry points for fuzz targets, kept in the library so `cargo test` runs them under
//! proptest too. A fuzz target is a one-line call into one of these.

use std::sync::Arc;
use std::time::Instant;

use crate::io::IoResult;
use crate::pdu::{decode, Decoded, DecoderConfig, Digests};
use crate::registry::Registry;
use crate::subsystem::{Namespace, Subsystem, TargetConfig};
use crate::transport::{Connection, Event};

/// Decodes `input` as a stream of PDUs under every digest setting.
pub fn pdu_decode(input: &[u8]) {
    for (header, data) in [(false, false), (true, false), (false, true), (true, true)] {
        let cfg = DecoderConfig {
            digests: Digests { header, data },
            max_plen: 1 << 20,
        };
        let mut rest = input;
        while let Ok(Decoded::Pdu { consumed, .. }) = decode(rest, &cfg) {
            rest = rest.get(consumed.max(1)..).unwrap_or_default();
        }
    }
}

/// Drives a target connection with `input` as host bytes (after a valid ICReq when the
/// first byte is even), admitting Connects and answering I/O synthetically.
pub fn connection(input: &[u8]) {
    let cfg = Arc::new(TargetConfig::default());
    let mut reg = Registry::new(1..=16);
    let mut s = Subsystem::new("nqn.2024-01.io.tandem:fuzz", "fuzz");
    s.namespaces.push(Namespace {
        nsid: 1,
        volume_uuid: [1; 16],
        block_size: 512,
        blocks: 64,
        ana_group: 1,
    });
    reg.set_subsystem(Arc::new(s));
    let mut conn = Connection::new(cfg);
    let now = Instant::now();
    if input.first().is_some_and(|b| b % 2 == 0) {
        let mut icreq = vec![0u8; 128];
        icreq[2] = 128;
        icreq[4] = 128;
        conn.receive(now, &icreq);
    }
    for chunk in input.chunks(97) {
        conn.receive(now, chunk);
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Connect(req) => {
                    let a = reg.admit(&req);
                    conn.connect_done(now, a);
                }
                Event::Io { tag, op, .. } => {
                    let result = match op {
                        crate::io::IoOp::Block(block_core::BlockOp::Read { blocks, .. }) => {
                            block_core::BlockResult::Data(bytes::Bytes::from(vec![
                                0u8;
                                blocks as usize
                                    * 512
                            ]))
                        }
                        _ => block_core::BlockResult::Ok,
                    };
                    let result = IoResult::Block(result);
                    conn.io_done(tag, result);
                }
                Event::PathRefused { .. } => {}
                Event::Close(_) => return,
            }
        }
        let _ = conn.take_output();
    }
}

/// Decodes `input` as an authentication message, then drives a controller-side DH-HMAC-CHAP
/// transaction with pieces of it as AUTH_Send payloads (each piece's length from its first
/// byte), reading the controller's answer after each.
pub fn auth_messages(input: &[u8]) {
    use crate::auth::{AuthMessage, ControllerAuth, DhchapPolicy, DhchapSecret};
    use rand::SeedableRng;
    if let Ok(m) = AuthMessage::decode(input) {
        let _ = AuthMessage::decode(&m.encode());
    }
    let secret = DhchapSecret {
        transform: None,
        key: vec![7; 32],
    };
    let policy = Arc::new(DhchapPolicy::new(secret.clone(), Some(secret)));
    let mut c = ControllerAuth::new(
        policy,
        "nqn.2024-01.io.tandem:host",
        "nqn.2024-01.io.tandem:fuzz",
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut rest = input;
    while let Some((&n, tail)) = rest.split_first() {
        let n = (usize::from(n) * 8).min(tail.len());
        let (piece, tail) = tail.split_at(n);
        c.send(piece);
        let _ = AuthMessage::decode(&c.receive(&mut rng));
        rest = tail;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pdu_decode_never_panics(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            super::pdu_decode(&input);
        }

        #[test]
        fn connection_never_panics(input in proptest::collection::vec(any::<u8>(), 0..1200)) {
            super::connection(&input);
        }
    }
}
