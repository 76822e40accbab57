//! One NVMe/TCP queue (one TCP connection): the ICReq/ICResp exchange, then any number of
//! commands in flight, each completed through its own channel.
//!
//! A writer task sends encoded PDUs (batched into one write when several are queued); a
//! reader task decodes the target's PDUs with `proto_nvmeof::pdu::decode`, gathers C2HData,
//! answers R2Ts with H2CData from the command's held write data, and completes commands on
//! their response capsule (or on a C2HData carrying SUCCESS).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Buf, Bytes, BytesMut};
use proto_nvmeof::pdu::{
    decode, encode, encode_to_vec, CapsuleCmd, DataPdu, Decoded, DecoderConfig, Digests,
    EncodeOptions, IcReq, Pdu, R2t, IC_PDU_LEN, PFV_1_0,
};
use proto_nvmeof::sqe::{Sgl, SGL_IN_CAPSULE, SGL_TRANSPORT};
use proto_nvmeof::{Cqe, Sqe, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::{Error, Result};

/// How a command's data travels.
#[derive(Debug, Clone)]
pub enum Data {
    /// No data.
    None,
    /// Host-to-controller data that must travel inside the capsule (Connect).
    InCapsule(Bytes),
    /// Host-to-controller data: in the capsule when it fits the queue's in-capsule size,
    /// else by R2T/H2CData.
    Write(Bytes),
    /// Controller-to-host data of this many bytes (C2HData).
    Read(u32),
}

/// A completed command: its completion entry and any data the controller returned.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The completion queue entry.
    pub cqe: Cqe,
    /// Controller-to-host data.
    pub data: Bytes,
}

impl Completion {
    /// The completion, or [`Error::Status`] when the command failed.
    pub fn ok(self) -> Result<Self> {
        if self.cqe.status.is_success() {
            Ok(self)
        } else {
            Err(Error::Status {
                status: self.cqe.status,
                dw0: self.cqe.dw0(),
            })
        }
    }
}

struct Pending {
    tx: oneshot::Sender<Result<Completion>>,
    data: Vec<u8>,
    write: Option<Bytes>,
}

#[derive(Default)]
struct State {
    pending: HashMap<u16, Pending>,
    free: Vec<u16>,
    closed: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    writer: mpsc::UnboundedSender<Vec<u8>>,
    opts: EncodeOptions,
    maxh2cdata: u32,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail_all(&self, why: String) {
        let mut st = self.lock();
        st.closed.get_or_insert(why.clone());
        for (_, p) in st.pending.drain() {
            let _ = p.tx.send(Err(Error::Closed(why.clone())));
        }
    }
}

/// One queue of a controller (admin queue: qid 0).
pub struct Queue {
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    in_capsule: std::sync::atomic::AtomicU32,
    digests: Digests,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("digests", &self.digests)
            .finish_non_exhaustive()
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Largest PDU the reader accepts (a 1 MiB C2HData chunk with headers and digests).
const MAX_PLEN: u32 = (8 << 20) + 4096;

impl Queue {
    /// Opens a TCP connection to `addr` and exchanges ICReq/ICResp asking for `digests`;
    /// `depth` commands may be in flight at once.
    pub async fn open(addr: SocketAddr, digests: Digests, depth: u16) -> Result<Queue> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let icreq = Pdu::IcReq(IcReq {
            pfv: PFV_1_0,
            hpda: 0,
            digests,
            maxr2t: 0,
        });
        stream
            .write_all(&encode_to_vec(&icreq, &EncodeOptions::default()))
            .await?;
        let mut buf = [0u8; IC_PDU_LEN];
        stream.read_exact(&mut buf).await?;
        let cfg = DecoderConfig {
            digests: Digests::default(),
            max_plen: IC_PDU_LEN as u32,
        };
        let resp = match decode(&buf, &cfg)? {
            Decoded::Pdu {
                pdu: Pdu::IcResp(r),
                ..
            } => r,
            other => return Err(Error::Unexpected(format!("instead of ICResp: {other:?}"))),
        };
        if resp.digests != digests || resp.pfv != PFV_1_0 || resp.maxh2cdata < 4096 {
            return Err(Error::Unexpected(format!("unusable ICResp {resp:?}")));
        }
        let (rd, wr) = stream.into_split();
        let (wtx, wrx) = mpsc::unbounded_channel();
        let depth = depth.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                free: (0..depth).rev().collect(),
                ..State::default()
            }),
            writer: wtx,
            opts: EncodeOptions {
                digests,
                pda: resp.cpda,
            },
            maxh2cdata: resp.maxh2cdata,
        });
        let tasks = vec![
            tokio::spawn(write_loop(wr, wrx, Arc::clone(&shared))),
            tokio::spawn(read_loop(rd, Arc::clone(&shared), digests)),
        ];
        Ok(Queue {
            shared,
            slots: Arc::new(Semaphore::new(usize::from(depth))),
            in_capsule: std::sync::atomic::AtomicU32::new(8192),
            digests,
            tasks,
        })
    }

    /// Sets how many write bytes may travel inside a command capsule (IOCCSZ * 16 - 64 for
    /// I/O queues, from Identify Controller).
    pub fn set_in_capsule(&self, bytes: u32) {
        self.in_capsule
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Digests in force on this queue.
    pub fn digests(&self) -> Digests {
        self.digests
    }

    /// Whether the connection is gone (the target closed it or a protocol error occurred);
    /// returns why.
    pub fn closed(&self) -> Option<String> {
        self.shared.lock().closed.clone()
    }

    /// Submits `sqe` (its CID and data pointer are filled in here) and waits for completion.
    pub async fn submit(&self, mut sqe: Sqe, data: Data) -> Result<Completion> {
        let _permit = self
            .slots
            .acquire()
            .await
            .map_err(|_| Error::Closed("queue dropped".into()))?;
        let (tx, rx) = oneshot::channel();
        let in_capsule = self.in_capsule.load(std::sync::atomic::Ordering::Relaxed) as usize;
        let (sgl, capsule, held) = match data {
            Data::None => (None, Bytes::new(), None),
            Data::InCapsule(d) => (Some((SGL_IN_CAPSULE, d.len())), d, None),
            Data::Write(d) if d.len() <= in_capsule => (Some((SGL_IN_CAPSULE, d.len())), d, None),
            Data::Write(d) => (Some((SGL_TRANSPORT, d.len())), Bytes::new(), Some(d)),
            Data::Read(n) => (Some((SGL_TRANSPORT, n as usize)), Bytes::new(), None),
        };
        if let Some((ident, len)) = sgl {
            sqe.set_sgl(Sgl {
                addr: 0,
                length: len as u32,
                ident,
            });
        }
        {
            let mut st = self.shared.lock();
            if let Some(why) = &st.closed {
                return Err(Error::Closed(why.clone()));
            }
            let cid = st
                .free
                .pop()
                .ok_or_else(|| Error::Unexpected("no free command id".into()))?;
            sqe.set_cid(cid);
            st.pending.insert(
                cid,
                Pending {
                    tx,
                    data: Vec::new(),
                    write: held,
                },
            );
        }
        let pdu = Pdu::CapsuleCmd(CapsuleCmd { sqe, data: capsule });
        let _ = self
            .shared
            .writer
            .send(encode_to_vec(&pdu, &self.shared.opts));
        rx.await
            .map_err(|_| Error::Closed("connection task ended".into()))?
    }
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    while let Some(mut buf) = rx.recv().await {
        while buf.len() < (1 << 20) {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = wr.write_all(&buf).await {
            shared.fail_all(format!("write failed: {e}"));
            return;
        }
    }
    let _ = wr.shutdown().await;
}

async fn read_loop(mut rd: OwnedReadHalf, shared: Arc<Shared>, digests: Digests) {
    let cfg = DecoderConfig {
        digests,
        max_plen: MAX_PLEN,
    };
    let mut buf = BytesMut::with_capacity(1 << 20);
    loop {
        loop {
            match decode(&buf, &cfg) {
                Ok(Decoded::NeedMore { total }) => {
                    buf.reserve(total.saturating_sub(buf.len()).max(64 * 1024));
                    break;
                }
                Ok(Decoded::Pdu { pdu, consumed }) => {
                    buf.advance(consumed);
                    if let Err(why) = on_pdu(&shared, pdu) {
                        shared.fail_all(why);
                        return;
                    }
                }
                Err(e) => {
                    shared.fail_all(format!("bad PDU from the target: {e}"));
                    return;
                }
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                shared.fail_all("target closed the connection".into());
                return;
            }
            Ok(_) => {}
            Err(e) => {
                shared.fail_all(format!("read failed: {e}"));
                return;
            }
        }
    }
}

fn complete(shared: &Shared, cid: u16, cqe: Cqe) -> std::result::Result<(), String> {
    let mut st = shared.lock();
    let p = st
        .pending
        .remove(&cid)
        .ok_or_else(|| format!("completion for unknown command {cid}"))?;
    st.free.push(cid);
    drop(st);
    let _ = p.tx.send(Ok(Completion {
        cqe,
        data: Bytes::from(p.data),
    }));
    Ok(())
}

fn on_pdu(shared: &Shared, pdu: Pdu) -> std::result::Result<(), String> {
    match pdu {
        Pdu::CapsuleResp(cqe) => complete(shared, cqe.cid, cqe),
        Pdu::C2hData(d) => {
            {
                let mut st = shared.lock();
                let p = st
                    .pending
                    .get_mut(&d.cccid)
                    .ok_or_else(|| format!("C2HData for unknown command {}", d.cccid))?;
                if d.offset as usize != p.data.len() {
                    return Err(format!("C2HData out of order for command {}", d.cccid));
                }
                p.data.extend_from_slice(&d.data);
            }
            if d.success {
                let cqe = Cqe {
                    cid: d.cccid,
                    status: Status::SUCCESS,
                    ..Cqe::default()
                };
                complete(shared, d.cccid, cqe)?;
            }
            Ok(())
        }
        Pdu::R2t(r) => send_h2c(shared, r),
        Pdu::C2hTermReq(t) => Err(format!(
            "target terminated the connection (FES {:#x}, FEI {:#x})",
            t.fes, t.fei
        )),
        other => Err(format!("unexpected PDU type {:#04x}", other.type_code())),
    }
}

/// Answers an R2T with H2CData PDUs of at most MAXH2CDATA bytes each.
fn send_h2c(shared: &Shared, r: R2t) -> std::result::Result<(), String> {
    let data = {
        let st = shared.lock();
        let p = st
            .pending
            .get(&r.cccid)
            .ok_or_else(|| format!("R2T for unknown command {}", r.cccid))?;
        let w = p
            .write
            .as_ref()
            .ok_or_else(|| format!("R2T for command {} without write data", r.cccid))?;
        let (start, len) = (r.offset as usize, r.length as usize);
        if start.checked_add(len).is_none_or(|end| end > w.len()) || len == 0 {
            return Err(format!("R2T outside command {}'s data", r.cccid));
        }
        w.slice(start..start + len)
    };
    let chunk = (shared.maxh2cdata as usize).max(4096);
    let mut out = Vec::with_capacity(data.len() + 64 * (data.len() / chunk + 1));
    let mut off = 0;
    while off < data.len() {
        let end = (off + chunk).min(data.len());
        let pdu = Pdu::H2cData(DataPdu {
            cccid: r.cccid,
            ttag: r.ttag,
            offset: r.offset + off as u32,
            last: end == data.len(),
            success: false,
            data: data.slice(off..end),
        });
        encode(&pdu, &shared.opts, &mut out);
        off = end;
    }
    let _ = shared.writer.send(out);
    Ok(())
}
