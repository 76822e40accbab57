//! A scripted NVMe/TCP host and an in-memory volume driving a target `Connection`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use block_core::{BlockOp, BlockResult};
use bytes::Bytes;
use proto_nvmeof::fabrics::{Connect, PropertyAccess, CNTLID_DYNAMIC};
use proto_nvmeof::pdu::{
    decode, encode_to_vec, CapsuleCmd, DataPdu, Decoded, DecoderConfig, Digests, EncodeOptions,
    IcReq, Pdu,
};
use proto_nvmeof::sqe::{Sgl, SGL_IN_CAPSULE, SGL_TRANSPORT};
use proto_nvmeof::{
    CloseReason, Connection, Cqe, Event, IoOp, IoResult, Namespace, Registry, Sqe, Subsystem,
    TargetConfig,
};

pub const SUBNQN: &str = "nqn.2024-01.io.tandem:vol1";
pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:host-a";
pub const BS: usize = 512;

/// Volumes by NSID plus the registry, shared by every connection of a test.
pub struct Target {
    pub cfg: Arc<TargetConfig>,
    pub reg: Registry,
    pub volumes: HashMap<u32, Vec<u8>>,
    pub ops: Vec<IoOp>,
}

impl Target {
    pub fn new(cfg: TargetConfig) -> Self {
        let mut reg = Registry::new(0x10..=0x1F);
        reg.set_subsystem(Arc::new(subsystem()));
        let mut volumes = HashMap::new();
        volumes.insert(1, vec![0u8; 2048 * BS]);
        Target {
            cfg: Arc::new(cfg),
            reg,
            volumes,
            ops: Vec::new(),
        }
    }

    fn run(&mut self, nsid: u32, op: IoOp) -> IoResult {
        self.ops.push(op.clone());
        let Some(vol) = self.volumes.get_mut(&nsid) else {
            return IoResult::Block(BlockResult::Internal);
        };
        let IoOp::Block(op) = op else {
            return IoResult::Block(BlockResult::Internal);
        };
        IoResult::Block(match op {
            BlockOp::Read { lba, blocks } => {
                let s = lba as usize * BS;
                BlockResult::Data(Bytes::copy_from_slice(&vol[s..s + blocks as usize * BS]))
            }
            BlockOp::Write { lba, data, .. } => {
                let s = lba as usize * BS;
                vol[s..s + data.len()].copy_from_slice(&data);
                BlockResult::Ok
            }
            BlockOp::WriteZeroes { lba, blocks, .. } => {
                let s = lba as usize * BS;
                vol[s..s + blocks as usize * BS].fill(0);
                BlockResult::Ok
            }
            BlockOp::Deallocate { ranges } => {
                for (lba, blocks) in ranges {
                    let s = lba as usize * BS;
                    vol[s..s + blocks as usize * BS].fill(0);
                }
                BlockResult::Ok
            }
            BlockOp::Flush => BlockResult::Ok,
            _ => BlockResult::Internal,
        })
    }
}

pub fn subsystem() -> Subsystem {
    let mut s = Subsystem::new(SUBNQN, "TANDEM0001");
    s.namespaces.push(Namespace {
        nsid: 1,
        volume_uuid: *b"0123456789abcdef",
        block_size: BS as u32,
        blocks: 2048,
        ana_group: 1,
        write_protected: false,
    });
    s
}

/// One host-side queue connection.
pub struct Host {
    pub conn: Connection,
    pub digests: Digests,
    pub now: Instant,
    pub closed: Option<CloseReason>,
    /// (NSID, status) of every I/O command the core refused for its ANA state.
    pub path_refused: Vec<(u32, proto_nvmeof::Status)>,
    inbox: Vec<u8>,
    next_cid: u16,
}

impl Host {
    pub fn new(t: &Target, now: Instant) -> Self {
        Host {
            conn: Connection::new(Arc::clone(&t.cfg)),
            digests: Digests::default(),
            now,
            closed: None,
            path_refused: Vec::new(),
            inbox: Vec::new(),
            next_cid: 0,
        }
    }

    pub fn cid(&mut self) -> u16 {
        self.next_cid += 1;
        self.next_cid
    }

    fn opts(&self) -> EncodeOptions {
        EncodeOptions {
            digests: self.digests,
            pda: 0,
        }
    }

    pub fn send_raw(&mut self, t: &mut Target, bytes: &[u8]) {
        self.conn.receive(self.now, bytes);
        self.pump(t);
    }

    pub fn send(&mut self, t: &mut Target, pdu: &Pdu) {
        let b = encode_to_vec(pdu, &self.opts());
        self.send_raw(t, &b);
    }

    /// Handles target events like the gateway would.
    pub fn pump(&mut self, t: &mut Target) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                Event::Connect(req) => {
                    let a = t.reg.admit(&req);
                    self.conn.connect_done(self.now, a);
                }
                Event::Io { tag, nsid, op } => {
                    let r = t.run(nsid, op);
                    assert!(self.conn.io_done(tag, r));
                }
                Event::PathRefused { nsid, status } => self.path_refused.push((nsid, status)),
                Event::Close(reason) => self.closed = Some(reason),
            }
        }
    }

    /// Every PDU the target sent since the last call.
    pub fn recv(&mut self) -> Vec<Pdu> {
        self.inbox.extend(self.conn.take_output());
        let mut out = Vec::new();
        loop {
            let cfg = DecoderConfig {
                digests: self.digests,
                max_plen: 1 << 24,
            };
            match decode(&self.inbox, &cfg).expect("target sent a valid PDU") {
                Decoded::Pdu { pdu, consumed } => {
                    // the ICResp switches digests on for everything after it
                    if let Pdu::IcResp(r) = &pdu {
                        self.digests = r.digests;
                    }
                    out.push(pdu);
                    self.inbox.drain(..consumed);
                }
                Decoded::NeedMore { .. } => break,
            }
        }
        out
    }

    pub fn icreq(&mut self, t: &mut Target, digests: Digests) -> Pdu {
        self.send(
            t,
            &Pdu::IcReq(IcReq {
                pfv: 0,
                hpda: 0,
                digests,
                maxr2t: 0,
            }),
        );
        let mut r = self.recv();
        assert_eq!(r.len(), 1);
        r.remove(0)
    }

    /// Sends a command; returns what came back (data PDUs, R2Ts, response).
    pub fn command(&mut self, t: &mut Target, sqe: Sqe, data: &[u8]) -> Vec<Pdu> {
        self.send(
            t,
            &Pdu::CapsuleCmd(CapsuleCmd {
                sqe,
                data: Bytes::copy_from_slice(data),
            }),
        );
        self.recv()
    }

    pub fn connect(
        &mut self,
        t: &mut Target,
        qid: u16,
        cntlid: u16,
        subnqn: &str,
        cattr: u8,
    ) -> Cqe {
        let c = Connect {
            recfmt: 0,
            qid,
            sqsize: if qid == 0 { 31 } else { 127 },
            cattr,
            kato_ms: if qid == 0 { 5000 } else { 0 },
            host_id: [0x42; 16],
            cntlid,
            subnqn: subnqn.into(),
            hostnqn: HOSTNQN.into(),
        };
        let cid = self.cid();
        let (sqe, data) = c.encode(cid);
        let r = self.command(t, sqe, &data);
        single_cqe(&r)
    }

    pub fn admin_connect(&mut self, t: &mut Target) -> u16 {
        let cqe = self.connect(t, 0, CNTLID_DYNAMIC, SUBNQN, 0);
        assert!(cqe.status.is_success(), "{cqe:?}");
        cqe.dw0() as u16
    }

    pub fn prop_get(&mut self, t: &mut Target, offset: u32, eight: bool) -> Cqe {
        let cid = self.cid();
        let sqe = PropertyAccess {
            eight_bytes: eight,
            offset,
            value: 0,
        }
        .encode(cid, false);
        single_cqe(&self.command(t, sqe, &[]))
    }

    pub fn prop_set(&mut self, t: &mut Target, offset: u32, value: u64) -> Cqe {
        let cid = self.cid();
        let sqe = PropertyAccess {
            eight_bytes: false,
            offset,
            value,
        }
        .encode(cid, true);
        single_cqe(&self.command(t, sqe, &[]))
    }

    pub fn enable(&mut self, t: &mut Target) {
        let cqe = self.prop_set(t, 0x14, 1 | (6 << 16) | (4 << 20));
        assert!(cqe.status.is_success());
    }

    /// A controller-to-host command with a transport SGL of `len` bytes; returns the
    /// reassembled data and the CQE (None when the data carried SUCCESS).
    pub fn read_cmd(&mut self, t: &mut Target, mut sqe: Sqe, len: u32) -> (Vec<u8>, Option<Cqe>) {
        sqe.set_sgl(Sgl {
            addr: 0,
            length: len,
            ident: SGL_TRANSPORT,
        });
        let pdus = self.command(t, sqe, &[]);
        collect_read(&pdus)
    }

    pub fn admin(
        &mut self,
        t: &mut Target,
        opcode: u8,
        nsid: u32,
        cdw10: u32,
        cdw11: u32,
    ) -> (Vec<u8>, Option<Cqe>) {
        let cid = self.cid();
        let mut sqe = Sqe::new(opcode, cid);
        sqe.set_nsid(nsid);
        sqe.set_cdw(10, cdw10);
        sqe.set_cdw(11, cdw11);
        self.read_cmd(t, sqe, 4096)
    }

    /// An admin command without data (Set Features, Keep Alive, ...).
    pub fn admin_nodata(&mut self, t: &mut Target, opcode: u8, cdw10: u32, cdw11: u32) -> Cqe {
        let cid = self.cid();
        let mut sqe = Sqe::new(opcode, cid);
        sqe.set_cdw(10, cdw10);
        sqe.set_cdw(11, cdw11);
        single_cqe(&self.command(t, sqe, &[]))
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }
}

pub fn collect_read(pdus: &[Pdu]) -> (Vec<u8>, Option<Cqe>) {
    let mut data = Vec::new();
    let mut cqe = None;
    for p in pdus {
        match p {
            Pdu::C2hData(d) => {
                assert_eq!(
                    d.offset as usize,
                    data.len(),
                    "C2HData offsets are contiguous"
                );
                data.extend_from_slice(&d.data);
            }
            Pdu::CapsuleResp(c) => cqe = Some(*c),
            other => panic!("unexpected {other:?}"),
        }
    }
    (data, cqe)
}

pub fn single_cqe(pdus: &[Pdu]) -> Cqe {
    match pdus {
        [Pdu::CapsuleResp(c)] => *c,
        other => panic!("expected one response capsule, got {other:?}"),
    }
}

pub fn rw_sqe(opcode: u8, cid: u16, nsid: u32, lba: u64, blocks: u32, in_capsule: bool) -> Sqe {
    let mut sqe = Sqe::new(opcode, cid);
    sqe.set_nsid(nsid);
    sqe.set_cdw(10, lba as u32);
    sqe.set_cdw(11, (lba >> 32) as u32);
    sqe.set_cdw(12, blocks - 1);
    sqe.set_sgl(Sgl {
        addr: 0,
        length: blocks * BS as u32,
        ident: if in_capsule {
            SGL_IN_CAPSULE
        } else {
            SGL_TRANSPORT
        },
    });
    sqe
}

pub fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

pub fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

pub fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

pub fn h2c(cccid: u16, ttag: u16, offset: u32, data: &[u8], last: bool) -> Pdu {
    Pdu::H2cData(DataPdu {
        cccid,
        ttag,
        offset,
        last,
        success: false,
        data: Bytes::copy_from_slice(data),
    })
}

/// A host connected and enabled on the admin queue.
pub fn admin_host(t: &mut Target, now: Instant) -> (Host, u16) {
    let mut h = Host::new(t, now);
    h.icreq(t, Digests::default());
    let cntlid = h.admin_connect(t);
    h.enable(t);
    (h, cntlid)
}

/// A host I/O queue `qid` of controller `cntlid`.
pub fn io_host(
    t: &mut Target,
    now: Instant,
    cntlid: u16,
    qid: u16,
    digests: Digests,
    cattr: u8,
) -> Host {
    let mut h = Host::new(t, now);
    h.icreq(t, digests);
    let cqe = h.connect(t, qid, cntlid, SUBNQN, cattr);
    assert!(cqe.status.is_success(), "{cqe:?}");
    h
}
