//! A controller association as a host sets it up: admin queue Connect, CC.EN through
//! Property Set, Identify, I/O queue Connects, keep-alive, and the admin and I/O commands a
//! test or benchmark needs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto_nvmeof::fabrics::{property, Connect, PropertyAccess, CNTLID_DYNAMIC};
use proto_nvmeof::logpage::LogRequest;
use proto_nvmeof::pdu::Digests;
use proto_nvmeof::Sqe;

use crate::error::{Error, Result};
use crate::identify::{parse_ns_descriptors, AnaLog, IdentifyController, IdentifyNamespace};
use crate::queue::{Completion, Data, Queue};

/// How the host connects.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Host NQN presented in Connect.
    pub hostnqn: String,
    /// Host identifier presented in Connect.
    pub host_id: [u8; 16],
    /// Keep-alive timeout asked for in the admin Connect (milliseconds; 0: none).
    pub kato_ms: u32,
    /// Send Keep Alive every KATO/2 (turn off to test the target's timer).
    pub keep_alive: bool,
    /// Header and data digests.
    pub digests: Digests,
    /// Number of I/O queues to connect (0 for a discovery controller).
    pub io_queues: u16,
    /// Commands in flight per I/O queue.
    pub queue_depth: u16,
    /// The host's DH-HMAC-CHAP secret (`DHHC-1:...`, as `nvme connect --dhchap-secret`):
    /// used when the controller asks for authentication.
    pub dhchap_secret: Option<String>,
    /// The controller's DH-HMAC-CHAP secret (`--dhchap-ctrl-secret`): with it the host also
    /// authenticates the controller (bidirectional).
    pub dhchap_ctrl_secret: Option<String>,
    /// DH group ids to offer (empty: every group, as Linux does).
    pub dhchap_dhgroups: Vec<u8>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            hostnqn: "nqn.2014-08.org.nvmexpress:uuid:7a3e5c10-0000-4000-8000-000000000001".into(),
            host_id: *b"tandem-initiatr1",
            kato_ms: 5000,
            keep_alive: true,
            digests: Digests::default(),
            io_queues: 1,
            queue_depth: 32,
            dhchap_secret: None,
            dhchap_ctrl_secret: None,
            dhchap_dhgroups: Vec::new(),
        }
    }
}

/// Admin opcodes the host uses.
mod admin {
    pub const IDENTIFY: u8 = 0x06;
    pub const SET_FEATURES: u8 = 0x09;
    pub const KEEP_ALIVE: u8 = 0x18;
}

/// NVM I/O opcodes the host uses.
pub mod io {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// Dataset Management.
    pub const DSM: u8 = 0x09;
}

/// A connected controller: its admin queue and I/O queues.
#[derive(Debug)]
pub struct Controller {
    /// The admin queue.
    pub admin: Arc<Queue>,
    /// The I/O queues (qid = index + 1).
    pub io: Vec<Arc<Queue>>,
    /// Controller id the target assigned.
    pub cntlid: u16,
    /// Identify Controller.
    pub identify: IdentifyController,
    keep_alive: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(k) = &self.keep_alive {
            k.abort();
        }
    }
}

fn connect_cmd(opts: &HostOptions, subnqn: &str, qid: u16, sqsize: u16, cntlid: u16) -> Connect {
    Connect {
        recfmt: 0,
        qid,
        sqsize,
        cattr: 0,
        kato_ms: if qid == 0 { opts.kato_ms } else { 0 },
        host_id: opts.host_id,
        cntlid,
        subnqn: subnqn.to_string(),
        hostnqn: opts.hostnqn.clone(),
    }
}

/// Connects queue `q` and, when the controller asks for it (ATR), authenticates it.
async fn fabric_connect(q: &Queue, c: &Connect, opts: &HostOptions) -> Result<u16> {
    let (sqe, data) = c.encode(0);
    let done = q
        .submit(sqe, Data::InCapsule(Bytes::from(data)))
        .await?
        .ok()?;
    let dw0 = done.cqe.dw0();
    if dw0 & (proto_nvmeof::auth::CONNECT_ATR | proto_nvmeof::auth::CONNECT_ASCR) != 0 {
        let who = crate::auth::Who {
            hostnqn: &opts.hostnqn,
            secret: opts.dhchap_secret.as_deref(),
            ctrl_secret: opts.dhchap_ctrl_secret.as_deref(),
            dhgroups: &opts.dhchap_dhgroups,
        };
        crate::auth::authenticate(q, &who, &c.subnqn, c.qid).await?;
    }
    Ok(dw0 as u16)
}

impl Controller {
    /// Connects to subsystem `subnqn` at `addr` (the discovery NQN gives a discovery
    /// controller), enables it, reads Identify Controller and connects the I/O queues.
    pub async fn connect(addr: SocketAddr, subnqn: &str, opts: &HostOptions) -> Result<Self> {
        let admin = Arc::new(Queue::open(addr, opts.digests, 32).await?);
        let cntlid = fabric_connect(
            &admin,
            &connect_cmd(opts, subnqn, 0, 31, CNTLID_DYNAMIC),
            opts,
        )
        .await?;
        let mut c = Controller {
            admin,
            io: Vec::new(),
            cntlid,
            identify: IdentifyController::parse(&[]),
            keep_alive: None,
        };
        c.enable().await?;
        c.identify = IdentifyController::parse(&c.identify_raw(1, 0).await?);
        if opts.keep_alive && opts.kato_ms != 0 {
            let q = Arc::clone(&c.admin);
            let every = Duration::from_millis(u64::from(opts.kato_ms / 2).max(100));
            c.keep_alive = Some(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if q.submit(Sqe::new(admin::KEEP_ALIVE, 0), Data::None)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }));
        }
        if c.identify.cntrltype == 2 || opts.io_queues == 0 {
            return Ok(c);
        }
        let n = opts.io_queues;
        let mut sqe = Sqe::new(admin::SET_FEATURES, 0);
        sqe.set_cdw(10, 0x07);
        sqe.set_cdw(11, u32::from(n - 1) | (u32::from(n - 1) << 16));
        c.admin.submit(sqe, Data::None).await?.ok()?;
        let depth = opts.queue_depth.max(1);
        for qid in 1..=n {
            let q = Queue::open(addr, opts.digests, depth).await?;
            q.set_in_capsule(c.identify.in_capsule_bytes());
            fabric_connect(&q, &connect_cmd(opts, subnqn, qid, depth, cntlid), opts).await?;
            c.io.push(Arc::new(q));
        }
        Ok(c)
    }

    async fn property_get(&self, offset: u32, eight: bool) -> Result<u64> {
        let sqe = PropertyAccess {
            eight_bytes: eight,
            offset,
            value: 0,
        }
        .encode(0, false);
        Ok(self.admin.submit(sqe, Data::None).await?.ok()?.cqe.result)
    }

    async fn property_set(&self, offset: u32, value: u64) -> Result<()> {
        let sqe = PropertyAccess {
            eight_bytes: false,
            offset,
            value,
        }
        .encode(0, true);
        self.admin.submit(sqe, Data::None).await?.ok()?;
        Ok(())
    }

    /// Reads CAP, writes CC (EN, 64-byte SQEs, 16-byte CQEs) and waits for CSTS.RDY.
    async fn enable(&self) -> Result<()> {
        let cap = self.property_get(property::CAP, true).await?;
        let timeout = Duration::from_millis(500 * ((cap >> 24) & 0xFF).max(1));
        self.property_set(property::CC, 1 | (6 << 16) | (4 << 20))
            .await?;
        let start = Instant::now();
        loop {
            let csts = self.property_get(property::CSTS, false).await?;
            if csts & 2 != 0 {
                return Err(Error::Unexpected("CSTS.CFS after enabling".into()));
            }
            if csts & 1 != 0 {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout("CSTS.RDY".into()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Shuts the controller down (CC.SHN normal) and waits for CSTS.SHST complete.
    pub async fn shutdown(&self) -> Result<()> {
        self.property_set(property::CC, 1 | (6 << 16) | (4 << 20) | (1 << 14))
            .await?;
        let csts = self.property_get(property::CSTS, false).await?;
        if (csts >> 2) & 3 != 2 {
            return Err(Error::Unexpected(format!("CSTS {csts:#x} after shutdown")));
        }
        Ok(())
    }

    /// Identify with `cns` for `nsid`: the raw 4096 bytes.
    pub async fn identify_raw(&self, cns: u8, nsid: u32) -> Result<Bytes> {
        let mut sqe = Sqe::new(admin::IDENTIFY, 0);
        sqe.set_nsid(nsid);
        sqe.set_cdw(10, u32::from(cns));
        Ok(self.admin.submit(sqe, Data::Read(4096)).await?.ok()?.data)
    }

    /// Identify Namespace.
    pub async fn identify_namespace(&self, nsid: u32) -> Result<IdentifyNamespace> {
        Ok(IdentifyNamespace::parse(&self.identify_raw(0, nsid).await?))
    }

    /// The Namespace Identification Descriptor list (type, value).
    pub async fn ns_descriptors(&self, nsid: u32) -> Result<Vec<(u8, Vec<u8>)>> {
        Ok(parse_ns_descriptors(&self.identify_raw(3, nsid).await?))
    }

    /// Get Log Page `lid` (`len` bytes from `offset`).
    pub async fn log_page(&self, lid: u8, lsp: u8, offset: u64, len: u32) -> Result<Bytes> {
        let sqe = LogRequest {
            lid,
            lsp,
            rae: false,
            len: u64::from(len),
            offset,
            csi: 0,
        }
        .encode(0, 0xFFFF_FFFF);
        Ok(self.admin.submit(sqe, Data::Read(len)).await?.ok()?.data)
    }

    /// The ANA log page.
    pub async fn ana_log(&self) -> Result<AnaLog> {
        Ok(AnaLog::parse(&self.log_page(0x0C, 0, 0, 4096).await?))
    }

    /// Submits an NVM I/O command on I/O queue `queue` (an index into [`Controller::io`]).
    pub async fn io_command(&self, queue: usize, sqe: Sqe, data: Data) -> Result<Completion> {
        let q = self
            .io
            .get(queue)
            .ok_or_else(|| Error::Unexpected(format!("no I/O queue {queue}")))?;
        q.submit(sqe, data).await?.ok()
    }

    /// Reads `blocks` blocks of `block_size` bytes at `lba` of namespace `nsid`.
    pub async fn read(&self, q: usize, nsid: u32, lba: u64, blocks: u32, bs: u32) -> Result<Bytes> {
        let sqe = rw(io::READ, nsid, lba, blocks, false);
        Ok(self.io_command(q, sqe, Data::Read(blocks * bs)).await?.data)
    }

    /// Writes `data` (whole blocks) at `lba` of namespace `nsid`, optionally with FUA.
    pub async fn write(
        &self,
        q: usize,
        nsid: u32,
        lba: u64,
        data: Bytes,
        bs: u32,
        fua: bool,
    ) -> Result<()> {
        let blocks = (data.len() as u32) / bs.max(1);
        let sqe = rw(io::WRITE, nsid, lba, blocks, fua);
        self.io_command(q, sqe, Data::Write(data)).await?;
        Ok(())
    }

    /// Flushes namespace `nsid`.
    pub async fn flush(&self, q: usize, nsid: u32) -> Result<()> {
        let mut sqe = Sqe::new(io::FLUSH, 0);
        sqe.set_nsid(nsid);
        self.io_command(q, sqe, Data::None).await?;
        Ok(())
    }
}

/// A Read/Write SQE (SLBA in CDW10/11, NLB 0's based and FUA in CDW12).
pub fn rw(opcode: u8, nsid: u32, lba: u64, blocks: u32, fua: bool) -> Sqe {
    let mut sqe = Sqe::new(opcode, 0);
    sqe.set_nsid(nsid);
    sqe.set_cdw(10, lba as u32);
    sqe.set_cdw(11, (lba >> 32) as u32);
    sqe.set_cdw(
        12,
        (blocks.saturating_sub(1) & 0xFFFF) | (u32::from(fua) << 30),
    );
    sqe
}
