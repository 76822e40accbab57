//! Issue 14, item 2 over NVMe/TCP against an in-process node: a Reservation Acquire with
//! Preempt and Abort by host B aborts host A's command on the namespace: A's write waiting
//! for its data completes at once with Command Aborted due to Preempt and Abort (0x1B).
//! (Before the fix nothing was aborted: the write waited for its data.)

mod nvme_common;

use std::time::Duration;

use bytes::Bytes;
use gateway::nvme::config::DEFAULT_NQN;
use nvme_common::{Node, HOST_A, HOST_B};
use nvme_initiator::{Controller, Data, HostOptions};
use proto_nvmeof::fabrics::Connect;
use proto_nvmeof::pdu::{
    decode, encode_to_vec, CapsuleCmd, Decoded, DecoderConfig, Digests, EncodeOptions, IcReq, Pdu,
};
use proto_nvmeof::sqe::{Sgl, SGL_TRANSPORT};
use proto_nvmeof::{Sqe, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ID_A: [u8; 16] = [0xA0; 16];
const ID_B: [u8; 16] = [0xB0; 16];

fn host(nqn: &str, id: [u8; 16]) -> HostOptions {
    HostOptions {
        hostnqn: nqn.into(),
        host_id: id,
        ..HostOptions::default()
    }
}

fn keys(a: u64, b: u64) -> Data {
    let mut d = a.to_le_bytes().to_vec();
    d.extend_from_slice(&b.to_le_bytes());
    Data::Write(Bytes::from(d))
}

/// A reservation command (Register 0x0D, Acquire 0x11) on namespace 1.
async fn resv(c: &Controller, opcode: u8, cdw10: u32, data: Data) {
    let mut sqe = Sqe::new(opcode, 0);
    sqe.set_nsid(1);
    sqe.set_cdw(10, cdw10);
    c.io_command(0, sqe, data).await.unwrap();
}

/// A bare NVMe/TCP queue: PDUs in and out, nothing sent unless the test says so.
struct RawQueue {
    s: TcpStream,
    rx: Vec<u8>,
}

impl RawQueue {
    async fn send(&mut self, pdu: &Pdu) {
        let b = encode_to_vec(pdu, &EncodeOptions::default());
        self.s.write_all(&b).await.unwrap();
    }

    async fn recv(&mut self) -> Pdu {
        let cfg = DecoderConfig {
            digests: Digests::default(),
            max_plen: 1 << 24,
        };
        loop {
            if let Decoded::Pdu { pdu, consumed } = decode(&self.rx, &cfg).unwrap() {
                self.rx.drain(..consumed);
                return pdu;
            }
            let mut buf = [0u8; 65536];
            let n = self.s.read(&mut buf).await.unwrap();
            assert!(n > 0, "target closed the queue");
            self.rx.extend_from_slice(&buf[..n]);
        }
    }

    /// I/O queue `qid` of controller `cntlid` for HOST_A.
    async fn connect(addr: std::net::SocketAddr, cntlid: u16, qid: u16) -> RawQueue {
        let mut q = RawQueue {
            s: TcpStream::connect(addr).await.unwrap(),
            rx: Vec::new(),
        };
        q.send(&Pdu::IcReq(IcReq {
            pfv: 0,
            hpda: 0,
            digests: Digests::default(),
            maxr2t: 0,
        }))
        .await;
        assert!(matches!(q.recv().await, Pdu::IcResp(_)));
        let c = Connect {
            recfmt: 0,
            qid,
            sqsize: 31,
            cattr: 0,
            kato_ms: 0,
            host_id: ID_A,
            cntlid,
            subnqn: DEFAULT_NQN.into(),
            hostnqn: HOST_A.into(),
        };
        let (sqe, data) = c.encode(1);
        q.send(&Pdu::CapsuleCmd(CapsuleCmd {
            sqe,
            data: Bytes::from(data),
        }))
        .await;
        match q.recv().await {
            Pdu::CapsuleResp(c) => assert!(c.status.is_success(), "{c:?}"),
            other => panic!("{other:?}"),
        }
        q
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preempt_and_abort_aborts_the_preempted_hosts_commands() {
    let node = Node::start(1, |_| {}).await;
    let a = Controller::connect(node.io[0], DEFAULT_NQN, &host(HOST_A, ID_A))
        .await
        .unwrap();
    let b = Controller::connect(node.io[0], DEFAULT_NQN, &host(HOST_B, ID_B))
        .await
        .unwrap();
    let bs = a.identify_namespace(1).await.unwrap().block_size;
    resv(&a, 0x0D, 0, keys(0, 0xA)).await; // A registers
    resv(&a, 0x11, 1 << 8, keys(0xA, 0)).await; // A acquires Write Exclusive
    resv(&b, 0x0D, 0, keys(0, 0xB)).await; // B registers

    // A second I/O queue of A's controller, where a write waits for its data (R2T).
    let mut q = RawQueue::connect(node.io[0], a.cntlid, 2).await;
    let mut sqe = Sqe::new(0x01, 9);
    sqe.set_nsid(1);
    sqe.set_cdw(10, 64);
    sqe.set_cdw(12, 7);
    sqe.set_sgl(Sgl {
        addr: 0,
        length: 8 * bs,
        ident: SGL_TRANSPORT,
    });
    q.send(&Pdu::CapsuleCmd(CapsuleCmd {
        sqe,
        data: Bytes::new(),
    }))
    .await;
    assert!(matches!(q.recv().await, Pdu::R2t(r) if r.cccid == 9));

    // B preempts A and aborts its commands (RACQA 2, Write Exclusive).
    resv(&b, 0x11, 2 | (1 << 8), keys(0xB, 0xA)).await;
    match tokio::time::timeout(Duration::from_secs(5), q.recv()).await {
        Ok(Pdu::CapsuleResp(c)) => {
            assert_eq!(c.cid, 9);
            assert_eq!(c.status.code(), Status::ABORTED_PREEMPT.code(), "{c:?}");
        }
        Ok(other) => panic!("{other:?}"),
        Err(_) => panic!("the preempted host's write was not aborted"),
    }
    // The data nobody wants any more is dropped quietly; the queue goes on.
    drop((q, a, b));
    node.stop().await;
}
