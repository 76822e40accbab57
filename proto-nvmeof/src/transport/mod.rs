//! The per-connection NVMe/TCP state machine: ICReq/ICResp, command capsules, R2T and
//! H2CData reassembly, C2HData segmentation, response capsules and terminate requests.
//!
//! The gateway owns one [`Connection`] per TCP connection. It passes received bytes to
//! [`Connection::receive`], writes out [`Connection::take_output`], and handles the
//! [`Event`]s from [`Connection::poll_event`], and wakes it at [`Connection::poll_timeout`]
//! with [`Connection::handle_timeout`] (quinn-style, as `proto_iscsi::session::Connection`).
//! Commands are tagged with their CID so any number can be in flight at once.

mod auth;
mod command;
mod gate;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::controller::Controller;
use crate::cqe::{Cqe, Response};
use crate::discovery::DiscoveryLog;
use crate::fabrics::Connect;
use crate::io::{IoOp, IoTag, Pending};
use crate::pdu::{
    self, decode, pdu_type, DataPdu, Decoded, DecoderConfig, Digests, EncodeOptions, ErrorAction,
    IcResp, Pdu, PduError, TermReq, PFV_1_0,
};
use crate::registry::ConnectRequest;
use crate::reservation::Requester;
use crate::sqe::Sqe;
use crate::status::Status;
use crate::subsystem::{Subsystem, TargetConfig};

/// Something the gateway must do for a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Admit this Connect with [`crate::Registry::admit`], then call
    /// [`Connection::connect_done`].
    Connect(ConnectRequest),
    /// Run `op` on the volume of namespace `nsid`, then call [`Connection::io_done`].
    Io {
        /// Tag to hand back.
        tag: IoTag,
        /// Namespace the command addressed.
        nsid: u32,
        /// The operation.
        op: IoOp,
    },
    /// An I/O command to namespace `nsid` was answered by the core itself with an ANA path
    /// status (the path is inaccessible or changing): nothing to do, but the node counts these
    /// refusals for its operators, and they never reach the gateway as an [`Event::Io`].
    PathRefused {
        /// Namespace the command addressed.
        nsid: u32,
        /// The ANA status it was answered with.
        status: Status,
    },
    /// Flush the pending output, then close the connection.
    Close(CloseReason),
}

/// Why a connection must close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// The host violated the protocol (a C2HTermReq was queued when the error calls for one).
    #[error("protocol error: {0}")]
    Protocol(PduError),
    /// The host sent H2CTermReq.
    #[error("host sent H2CTermReq")]
    PeerTerminated,
    /// The keep-alive timer expired: the whole association must be torn down.
    #[error("keep-alive timeout expired")]
    KeepAliveExpired,
    /// No ICReq or no admitted Connect within `connect_timeout_ms` of the start.
    #[error("no ICReq or Connect in time")]
    ConnectTimeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitIcReq,
    Ready,
    Closed,
}

#[derive(Debug)]
enum Queue {
    Unbound,
    Connecting {
        cid: u16,
        connect: Connect,
    },
    Admin(Box<Controller>),
    Io {
        subsys: Arc<Subsystem>,
        requester: Requester,
        /// The controller's write cache setting: while it is off every write is FUA.
        write_cache: crate::features::WriteCache,
    },
}

#[derive(Debug)]
struct Receive {
    buf: Vec<u8>,
    total: usize,
    r2t_end: usize,
    ttag: u16,
}

#[derive(Debug)]
enum Stage {
    WaitingForR2t,
    Receiving(Receive),
    Executing(Pending),
    Connecting,
}

#[derive(Debug)]
struct Command {
    sqe: Sqe,
    stage: Stage,
}

/// One NVMe/TCP connection (one queue) on the target side.
#[derive(Debug)]
pub struct Connection {
    cfg: Arc<TargetConfig>,
    phase: Phase,
    digests: Digests,
    hpda: u8,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    events: VecDeque<Event>,
    queue: Queue,
    commands: HashMap<u16, Command>,
    r2t_active: usize,
    r2t_waiting: VecDeque<u16>,
    next_ttag: u16,
    qid: u16,
    sqsize: u16,
    sqhd: u16,
    sqflow_disabled: bool,
    cntlid: Option<u16>,
    close_reason: Option<CloseReason>,
    /// In-band authentication of this queue.
    auth: gate::Gate,
    /// When the connection started: its Connect must be admitted by
    /// `started + connect_timeout_ms`.
    started: Option<Instant>,
    /// Transfer tags of writes aborted while receiving data: H2CData already on its way
    /// for them is dropped quietly (a short list; older tags are forgotten).
    dropped_ttags: VecDeque<u16>,
}

impl Connection {
    /// A fresh connection waiting for the host's ICReq.
    pub fn new(cfg: Arc<TargetConfig>) -> Self {
        Connection {
            cfg,
            phase: Phase::AwaitIcReq,
            digests: Digests::default(),
            hpda: 0,
            inbuf: Vec::new(),
            out: Vec::new(),
            events: VecDeque::new(),
            queue: Queue::Unbound,
            commands: HashMap::new(),
            r2t_active: 0,
            r2t_waiting: VecDeque::new(),
            next_ttag: 0,
            qid: 0,
            sqsize: 0,
            sqhd: 0,
            sqflow_disabled: false,
            cntlid: None,
            close_reason: None,
            auth: gate::Gate::default(),
            started: None,
            dropped_ttags: VecDeque::new(),
        }
    }

    /// A fresh connection started at `now`: its ICReq and Connect must be done by
    /// `now + connect_timeout_ms`. ([`Connection::new`] starts the clock at the first bytes.)
    pub fn new_at(cfg: Arc<TargetConfig>, now: Instant) -> Self {
        let mut c = Connection::new(cfg);
        c.started = Some(now);
        c
    }

    /// Feeds bytes read from the socket at time `now`.
    pub fn receive(&mut self, now: Instant, data: &[u8]) {
        if self.phase == Phase::Closed {
            return;
        }
        self.started.get_or_insert(now);
        self.inbuf.extend_from_slice(data);
        let mut pos = 0;
        while self.phase != Phase::Closed {
            let cfg = DecoderConfig {
                digests: self.digests,
                max_plen: self.max_plen(),
            };
            let rest = self.inbuf.get(pos..).unwrap_or_default();
            let header: Vec<u8> = rest.get(..rest.len().min(128)).unwrap_or_default().to_vec();
            match decode(rest, &cfg) {
                Ok(Decoded::NeedMore { .. }) => break,
                Ok(Decoded::Pdu { pdu, consumed }) => {
                    pos += consumed;
                    if let Err(e) = self.on_pdu(now, pdu) {
                        self.fail(e, header);
                    }
                }
                Err(e) => match e.action() {
                    ErrorAction::FailCommand { cid, consumed }
                        if header.first() == Some(&pdu_type::CAPSULE_CMD) =>
                    {
                        pos += consumed;
                        self.bump_sqhd();
                        self.send_response(
                            Response::status(cid, Status::TRANSIENT_TRANSPORT_ERROR),
                            0,
                        );
                    }
                    _ => self.fail(e, header),
                },
            }
        }
        self.inbuf.drain(..pos.min(self.inbuf.len()));
        if self.phase == Phase::Closed {
            self.inbuf = Vec::new();
        }
    }

    /// Takes the bytes to write to the socket.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The next event for the gateway, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether the connection is finished (after [`Event::Close`]).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.as_ref()
    }

    /// Controller id once the Connect was admitted.
    pub fn cntlid(&self) -> Option<u16> {
        self.cntlid
    }

    /// Queue id (0: admin queue) once the Connect was admitted.
    pub fn qid(&self) -> Option<u16> {
        self.cntlid.map(|_| self.qid)
    }

    /// Subsystem NQN this connection serves (I/O controllers and queues).
    pub fn subnqn(&self) -> Option<&str> {
        match &self.queue {
            Queue::Io { subsys, .. } => Some(&subsys.nqn),
            Queue::Admin(c) => match &c.kind {
                crate::controller::Kind::Io(s) => Some(&s.nqn),
                crate::controller::Kind::Discovery(_) => Some(crate::discovery::DISCOVERY_NQN),
            },
            _ => None,
        }
    }

    /// Digests negotiated by ICReq/ICResp.
    pub fn digests(&self) -> Digests {
        self.digests
    }

    /// Keep-alive deadline of the association (admin queue only).
    pub fn kato_deadline(&self) -> Option<Instant> {
        match &self.queue {
            Queue::Admin(c) => c.kato_deadline(),
            _ => None,
        }
    }

    /// When [`Connection::handle_timeout`] must next be called, if ever: until a Connect is
    /// admitted the connect deadline, then the keep-alive deadline of the association (admin
    /// queue only).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        if !self.bound() {
            return self.connect_deadline();
        }
        self.kato_deadline()
    }

    /// The largest PDU accepted now: an ICReq before the ICReq, a Connect capsule (its 1 KiB
    /// of data) before the Connect, so a peer that has not connected cannot make the
    /// connection buffer a large PDU.
    fn max_plen(&self) -> u32 {
        match self.phase {
            Phase::AwaitIcReq => 128,
            _ if !self.bound() => 72 + 4 + 1024 + 4 + 256,
            _ => self.cfg.max_host_plen(),
        }
    }

    /// Whether a Connect bound this connection to a controller (admin or I/O queue).
    fn bound(&self) -> bool {
        matches!(self.queue, Queue::Admin(_) | Queue::Io { .. })
    }

    fn connect_deadline(&self) -> Option<Instant> {
        let limit = std::time::Duration::from_millis(u64::from(self.cfg.connect_timeout_ms));
        self.started.and_then(|t| t.checked_add(limit))
    }

    /// Checks the keep-alive timer at `now`. True means the association expired: the
    /// connection closes ([`Event::Close`] with [`CloseReason::KeepAliveExpired`]) and the
    /// gateway must release the CNTLID and close every I/O queue of the association.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if !self.bound() {
            if self.phase != Phase::Closed && self.connect_deadline().is_some_and(|d| now >= d) {
                self.close(CloseReason::ConnectTimeout);
            }
            return false;
        }
        let Queue::Admin(c) = &mut self.queue else {
            return false;
        };
        let expired = c.poll_timeout(now);
        if expired && self.phase != Phase::Closed {
            self.close(CloseReason::KeepAliveExpired);
        }
        expired
    }

    fn close(&mut self, reason: CloseReason) {
        self.phase = Phase::Closed;
        self.close_reason = Some(reason.clone());
        self.events.push_back(Event::Close(reason));
    }

    /// Installs a new subsystem snapshot (ANA or namespace change); completes held AERs.
    pub fn update_subsystem(&mut self, snapshot: Arc<Subsystem>) {
        match &mut self.queue {
            Queue::Admin(c) => {
                let resps = c.update_subsystem(snapshot);
                for r in resps {
                    self.send_response(r, 0);
                }
            }
            Queue::Io { subsys, .. } => *subsys = snapshot,
            _ => {}
        }
    }

    /// Delivers a reservation notice to this queue's controller (admin queues only): a
    /// Reservation Notification log page, and the AER it completes if one is held.
    pub fn reservation_notice(&mut self, kind: crate::resv_notice::NoticeKind, nsid: u32) {
        if let Queue::Admin(c) = &mut self.queue {
            for r in c.reservation_notice(kind, nsid) {
                self.send_response(r, 0);
            }
        }
    }

    /// Installs a new discovery snapshot; completes held AERs on a GENCTR change.
    pub fn update_discovery(&mut self, snapshot: Arc<DiscoveryLog>) {
        if let Queue::Admin(c) = &mut self.queue {
            let resps = c.update_discovery(snapshot);
            for r in resps {
                self.send_response(r, 0);
            }
        }
    }

    fn on_pdu(&mut self, now: Instant, pdu: Pdu) -> Result<(), PduError> {
        let ty = pdu.type_code();
        match (self.phase, pdu) {
            (Phase::AwaitIcReq, Pdu::IcReq(r)) => {
                if r.pfv != PFV_1_0 {
                    return Err(PduError::UnsupportedPfv(r.pfv));
                }
                if r.hpda > 31 {
                    return Err(PduError::UnsupportedParameter { fei: 10 });
                }
                let resp = Pdu::IcResp(IcResp {
                    pfv: PFV_1_0,
                    cpda: 0,
                    digests: r.digests,
                    maxh2cdata: self.cfg.maxh2cdata,
                });
                pdu::encode(&resp, &EncodeOptions::default(), &mut self.out);
                self.digests = r.digests;
                self.hpda = r.hpda;
                self.phase = Phase::Ready;
                Ok(())
            }
            (Phase::AwaitIcReq, _) => Err(PduError::Sequence {
                pdu_type: ty,
                why: "first PDU must be ICReq",
            }),
            (_, Pdu::IcReq(_)) => Err(PduError::Sequence {
                pdu_type: ty,
                why: "ICReq already exchanged",
            }),
            (_, Pdu::CapsuleCmd(c)) => self.on_capsule(now, c.sqe, c.data),
            (_, Pdu::H2cData(d)) => self.on_h2c_data(now, d),
            (_, Pdu::H2cTermReq(_)) => {
                self.close(CloseReason::PeerTerminated);
                Ok(())
            }
            (_, _) => Err(PduError::WrongDirection(ty)),
        }
    }

    fn fail(&mut self, e: PduError, header: Vec<u8>) {
        if let ErrorAction::Terminate { fes, fei } = e.action() {
            let hlen = header
                .get(2)
                .map_or(0, |&h| usize::from(h))
                .min(header.len());
            let data = header
                .get(..hlen.max(8).min(header.len()))
                .unwrap_or_default();
            let term = Pdu::C2hTermReq(TermReq {
                fes,
                fei,
                data: bytes::Bytes::copy_from_slice(data),
            });
            pdu::encode(&term, &EncodeOptions::default(), &mut self.out);
        }
        let reason = match e {
            PduError::PeerTerminated { .. } => CloseReason::PeerTerminated,
            other => CloseReason::Protocol(other),
        };
        self.close(reason);
    }

    fn encode_options(&self) -> EncodeOptions {
        EncodeOptions {
            digests: self.digests,
            pda: self.hpda,
        }
    }

    fn bump_sqhd(&mut self) {
        let entries = u32::from(self.sqsize) + 1;
        self.sqhd = ((u32::from(self.sqhd) + 1) % entries.max(1)) as u16;
    }

    /// Sends `resp`: its data (cut to `max_data` bytes) as C2HData PDUs, then a response
    /// capsule unless the last C2HData carried SUCCESS.
    fn send_response(&mut self, resp: Response, max_data: usize) {
        if self.phase == Phase::Closed {
            return;
        }
        let opts = self.encode_options();
        let data = resp.data.slice(..resp.data.len().min(max_data));
        let success_flag = resp.status.is_success() && self.sqflow_disabled && !data.is_empty();
        let chunk = (self.cfg.max_c2h_data as usize).max(4096);
        let mut offset = 0usize;
        while offset < data.len() {
            let end = (offset + chunk).min(data.len());
            let last = end == data.len();
            let pdu = Pdu::C2hData(DataPdu {
                cccid: resp.cid,
                ttag: 0,
                offset: offset as u32,
                last,
                success: last && success_flag,
                data: data.slice(offset..end),
            });
            pdu::encode(&pdu, &opts, &mut self.out);
            offset = end;
        }
        if !success_flag {
            let cqe = Cqe {
                result: resp.result,
                sqhd: if self.sqflow_disabled {
                    0xFFFF
                } else {
                    self.sqhd
                },
                sqid: self.qid,
                cid: resp.cid,
                status: resp.status,
                phase: false,
            };
            pdu::encode(&Pdu::CapsuleResp(cqe), &opts, &mut self.out);
        }
    }
}
