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

/// The host the fuzzed connection's Connects name; an association of it already exists
/// (controller [`FUZZ_CNTLID`]), so an input Connect for an I/O queue is admitted.
pub const FUZZ_HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:fuzz";
/// The subsystem the fuzzed connection serves.
pub const FUZZ_SUBNQN: &str = "nqn.2024-01.io.tandem:fuzz";
/// The host identifier of [`FUZZ_HOSTNQN`].
pub const FUZZ_HOST_ID: [u8; 16] = [0x42; 16];
/// The controller id of the association that exists before the input runs.
pub const FUZZ_CNTLID: u16 = 1;

/// Drives a target connection with `input` as host bytes (after a valid ICReq when the
/// first byte is even), admitting Connects (admin queues, and I/O queues of controller
/// [`FUZZ_CNTLID`], whose admin queue is elsewhere) and answering I/O synthetically, with the
/// clock moving on between chunks so keep-alive and other timers run too.
pub fn connection(input: &[u8]) {
    drive(input);
}

/// [`connection`], returning how many I/O commands reached the volume.
fn drive(input: &[u8]) -> usize {
    let mut ios = 0;
    let cfg = Arc::new(TargetConfig::default());
    let mut reg = Registry::new(1..=16);
    let mut s = Subsystem::new(FUZZ_SUBNQN, "fuzz");
    s.namespaces.push(Namespace {
        nsid: 1,
        volume_uuid: [1; 16],
        block_size: 512,
        blocks: 64,
        ana_group: 1,
        write_protected: false,
    });
    reg.set_subsystem(Arc::new(s));
    let _ = reg.admit(&crate::registry::ConnectRequest {
        connect: crate::fabrics::Connect {
            recfmt: 0,
            qid: 0,
            sqsize: 31,
            cattr: 0,
            kato_ms: 0,
            host_id: FUZZ_HOST_ID,
            cntlid: crate::fabrics::CNTLID_DYNAMIC,
            subnqn: FUZZ_SUBNQN.into(),
            hostnqn: FUZZ_HOSTNQN.into(),
        },
    });
    let mut conn = Connection::new(cfg);
    let mut now = Instant::now();
    if input.first().is_some_and(|b| b % 2 == 0) {
        let mut icreq = vec![0u8; 128];
        icreq[2] = 128;
        icreq[4] = 128;
        conn.receive(now, &icreq);
    }
    for chunk in input.chunks(97) {
        conn.receive(now, chunk);
        now += std::time::Duration::from_millis(u64::from(chunk[0]) * 40);
        if conn.poll_timeout().is_some_and(|t| t <= now) {
            conn.handle_timeout(now);
        }
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Connect(req) => {
                    let a = reg.admit(&req);
                    conn.connect_done(now, a);
                }
                Event::Io { tag, op, .. } => {
                    ios += 1;
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
                Event::Close(_) => return ios,
            }
        }
        let _ = conn.take_output();
    }
    ios
}

/// Inputs that reach past the framing, for the committed seed corpus of the `connection`
/// target: an admin queue that connects, enables the controller, identifies it and turns its
/// write cache off; and an I/O queue of [`FUZZ_CNTLID`] that writes (in capsule and by R2T),
/// reads, compares, zeroes and flushes.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::fabrics::{Connect, PropertyAccess, CNTLID_DYNAMIC};
    use crate::pdu::{encode_to_vec, CapsuleCmd, DataPdu, EncodeOptions, Pdu};
    use crate::sqe::{Sgl, Sqe, SGL_IN_CAPSULE, SGL_TRANSPORT};
    use bytes::Bytes;

    let opts = EncodeOptions::default();
    let capsule = |sqe: Sqe, data: &[u8]| {
        encode_to_vec(
            &Pdu::CapsuleCmd(CapsuleCmd {
                sqe,
                data: Bytes::copy_from_slice(data),
            }),
            &opts,
        )
    };
    let connect = |qid: u16, cntlid: u16| {
        let (sqe, data) = Connect {
            recfmt: 0,
            qid,
            sqsize: 31,
            cattr: 0,
            kato_ms: if qid == 0 { 5000 } else { 0 },
            host_id: FUZZ_HOST_ID,
            cntlid,
            subnqn: FUZZ_SUBNQN.into(),
            hostnqn: FUZZ_HOSTNQN.into(),
        }
        .encode(1);
        capsule(sqe, &data)
    };
    let rw = |opcode: u8, cid: u16, lba: u32, blocks: u32, ident: u8, fua: bool| {
        let mut sqe = Sqe::new(opcode, cid);
        sqe.set_nsid(1);
        sqe.set_cdw(10, lba);
        sqe.set_cdw(12, (blocks - 1) | if fua { 1 << 30 } else { 0 });
        sqe.set_sgl(Sgl {
            addr: 0,
            length: blocks * 512,
            ident,
        });
        sqe
    };
    let mut admin = connect(0, CNTLID_DYNAMIC);
    admin.extend(capsule(
        PropertyAccess {
            eight_bytes: false,
            offset: 0x14,
            value: 1,
        }
        .encode(2, true),
        &[],
    ));
    let mut identify = Sqe::new(0x06, 3);
    identify.set_cdw(10, 1);
    identify.set_sgl(Sgl {
        addr: 0,
        length: 4096,
        ident: SGL_TRANSPORT,
    });
    admin.extend(capsule(identify, &[]));
    let mut vwc = Sqe::new(0x09, 4);
    vwc.set_cdw(10, 0x06);
    admin.extend(capsule(vwc, &[]));
    admin.extend(capsule(Sqe::new(0x18, 5), &[]));

    let mut io = connect(1, FUZZ_CNTLID);
    io.extend(capsule(
        rw(0x01, 2, 0, 1, SGL_IN_CAPSULE, true),
        &[0x5A; 512],
    ));
    io.extend(capsule(rw(0x01, 3, 8, 2, SGL_TRANSPORT, false), &[]));
    io.extend(encode_to_vec(
        &Pdu::H2cData(DataPdu {
            cccid: 3,
            ttag: 1,
            offset: 0,
            last: true,
            success: false,
            data: Bytes::from(vec![0xA5; 1024]),
        }),
        &opts,
    ));
    io.extend(capsule(rw(0x02, 4, 0, 2, SGL_TRANSPORT, false), &[]));
    io.extend(capsule(
        rw(0x05, 5, 0, 1, SGL_IN_CAPSULE, false),
        &[0x5A; 512],
    ));
    let mut wz = rw(0x08, 6, 16, 4, 0, true);
    wz.set_cdw(12, 3 | (1 << 25) | (1 << 30));
    wz.set_sgl(Sgl {
        addr: 0,
        length: 0,
        ident: 0,
    });
    io.extend(capsule(wz, &[]));
    let mut flush = Sqe::new(0x00, 7);
    flush.set_nsid(1);
    io.extend(capsule(flush, &[]));
    vec![("admin", admin), ("io", io)]
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

    /// The seeds run clean, and `TANDEM_FUZZ_SEEDS=DIR cargo test -p proto-nvmeof seeds`
    /// writes them (the committed corpus in `fuzz/seeds/connection`).
    #[test]
    fn seeds_run_and_can_be_written() {
        for (name, bytes) in super::seeds() {
            assert_eq!(bytes[0] % 2, 0, "{name}: the harness sends its ICReq first");
            let ios = super::drive(&bytes);
            if name == "io" {
                assert!(ios >= 6, "the I/O seed reaches the volume: {ios} commands");
            }
            if let Some(dir) = std::env::var_os("TANDEM_FUZZ_SEEDS") {
                std::fs::write(std::path::Path::new(&dir).join(name), &bytes).unwrap();
            }
        }
    }

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
