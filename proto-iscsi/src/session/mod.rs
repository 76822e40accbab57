//! One iSCSI connection of a target, from the first Login PDU to logout: a sans-IO state
//! machine in the manner of quinn-proto, driven exactly like `proto_nvmeof::Connection`.
//!
//! The driver feeds received bytes with [`Connection::receive`], drains bytes to send with
//! [`Connection::take_output`] and events with [`Connection::poll_event`], hands fully
//! collected SCSI commands to the logical unit and reports each one back with
//! [`Connection::complete`], answers [`Event::Question`]s (who may log in, credentials, TSIH,
//! discovery lists) with [`Connection::answer`], and wakes the connection at
//! [`Connection::poll_timeout`] with [`Connection::handle_timeout`] (NOP-In pings). No
//! sockets, clocks, randomness sources or callbacks here.
//!
//! Sessions have one connection (MaxConnections=1) and ErrorRecoveryLevel 0.

mod ask;
mod ffp;
/// The fuzz entry for the full-feature session (cargo-fuzz target `session`).
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
mod login_phase;
mod respond;
mod seq;
#[cfg(test)]
mod tests;
mod timer;
mod write;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::login::{LoginConnection, LoginError, LoginSuccess, SessionParams, TargetConfig};
use crate::pdu::{Digests, EncodeError, FrameError, Lun, Opcode, PduDecoder, TmfFunction};
pub use ask::{Answer, Question};
use ask::{Answers, Blocked, Entropy};
use write::WriteTask;

/// Limits and behaviour of connections.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// What the target negotiates.
    pub target: TargetConfig,
    /// Portal group tag of the portal this connection arrived on.
    pub portal_group_tag: u16,
    /// Commands the initiator may have queued (MaxCmdSN - ExpCmdSN + 1).
    pub cmd_window: u32,
    /// Largest ExpectedDataTransferLength accepted; larger writes are drained and failed.
    pub max_command_bytes: u32,
    /// Write data the connection may buffer at once (R2Ts wait while it is used up).
    pub write_budget: usize,
    /// Idle time before the target pings with NOP-In.
    pub nop_interval: Duration,
    /// Time the initiator has to answer a ping before the connection is dropped.
    pub nop_timeout: Duration,
    /// Time from the connection's start to the end of login (full feature phase); a peer
    /// that takes longer is dropped ([`CloseReason::LoginTimeout`]).
    pub login_timeout: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        let target = TargetConfig {
            initial_r2t: false,
            max_burst_length: 1 << 20,
            first_burst_length: 256 << 10,
            max_outstanding_r2t: 8,
            ..TargetConfig::default()
        };
        ConnectionConfig {
            target,
            portal_group_tag: 1,
            cmd_window: 128,
            max_command_bytes: 16 << 20,
            write_budget: 64 << 20,
            nop_interval: Duration::from_secs(10),
            nop_timeout: Duration::from_secs(10),
            login_timeout: Duration::from_secs(15),
        }
    }
}

/// A SCSI command whose data-out has been collected: ready for the logical unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Initiator task tag: hand it back to [`Connection::complete`].
    pub itt: u32,
    /// The LUN field as sent.
    pub lun: Lun,
    /// The CDB.
    pub cdb: Bytes,
    /// The data-out buffer (empty for reads), `expected_len` bytes unless the write was
    /// larger than the configured limit (then empty and `data_dropped` is set).
    pub data_out: Bytes,
    /// ExpectedDataTransferLength.
    pub expected_len: u32,
    /// R bit.
    pub read: bool,
    /// W bit.
    pub write: bool,
    /// The write exceeded `max_command_bytes` and its data was discarded.
    pub data_dropped: bool,
}

/// Why the connection ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// The initiator logged out.
    #[error("initiator logged out")]
    Logout,
    /// Login failed (the response has been queued).
    #[error("login failed: {0}")]
    LoginFailed(LoginError),
    /// The peer broke the protocol in a way that cannot be answered with a Reject.
    #[error("protocol error: {0}")]
    Protocol(ProtocolError),
    /// The initiator did not answer a NOP-In ping in time.
    #[error("NOP-In ping not answered in time")]
    PingTimeout,
    /// Login did not complete within `login_timeout`.
    #[error("login not completed in time")]
    LoginTimeout,
    /// TARGET COLD RESET.
    #[error("target cold reset")]
    ColdReset,
    /// A response could not be encoded: a bug on the target's side, never the peer's.
    #[error("response could not be encoded: {0}")]
    Encode(EncodeError),
}

/// How the initiator broke the protocol beyond what a Reject can answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A PDU that cannot be decoded, where the stream cannot be trusted any more (or during
    /// login, which has no Reject).
    #[error("{0}")]
    Frame(FrameError),
    /// A PDU other than Login Request before login completed.
    #[error("{0:?} before login completed")]
    BeforeLogin(Opcode),
    /// An opcode only a target may send.
    #[error("target-only opcode {0:?}")]
    TargetOpcode(Opcode),
}

/// Something the caller must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The connection needs a fact to go on: answer with [`Connection::answer`]. Nothing more
    /// is processed until then (received bytes are kept).
    Question(Question),
    /// Login completed: full feature phase with these parameters.
    LoggedIn(Box<LoginSuccess>),
    /// Execute this command and report with [`Connection::complete`].
    Command(Command),
    /// These tasks were aborted: their completions will be ignored; the caller may cancel them.
    Aborted(Vec<u32>),
    /// A task management function the logical unit (or the whole target) must apply.
    Reset {
        /// LOGICAL UNIT RESET, TARGET WARM RESET, TARGET COLD RESET or CLEAR TASK SET.
        function: TmfFunction,
        /// The LUN field of the request.
        lun: Lun,
    },
    /// Flush the output, then close the socket.
    Close(CloseReason),
}

#[derive(Debug)]
enum Phase {
    Login(Box<LoginConnection>),
    FullFeature(Box<SessionParams>),
    Closed,
}

/// A command handed to the caller and not completed yet.
#[derive(Debug, Clone, Copy)]
struct Running {
    lun: Lun,
    /// ExpectedDataTransferLength.
    expected: u32,
    /// Whether it holds a CmdSN slot (it was not immediate).
    slot: bool,
}

/// A multi-PDU Text response being sent in pieces.
#[derive(Debug)]
struct PendingText {
    itt: u32,
    ttt: u32,
    rest: Bytes,
}

/// One iSCSI connection.
#[derive(Debug)]
pub struct Connection {
    cfg: ConnectionConfig,
    phase: Phase,
    decoder: PduDecoder,
    inbuf: BytesMut,
    out: BytesMut,
    out_digests: Digests,
    events: VecDeque<Event>,
    stat_sn: u32,
    exp_cmd_sn: u32,
    /// Non-immediate commands received ahead of ExpCmdSN, by CmdSN.
    held: std::collections::BTreeMap<u32, crate::pdu::Pdu>,
    writes: HashMap<u32, WriteTask>,
    /// Writes whose solicited part waits for budget, in arrival order.
    r2t_queue: VecDeque<u32>,
    /// Commands handed to the caller and not completed yet.
    executing: HashMap<u32, Running>,
    /// Non-immediate SCSI commands admitted and not finished: each holds one CmdSN slot of
    /// the window until it completes or is aborted.
    slots: u32,
    /// When the connection started (login must end by `started + login_timeout`).
    started: Option<Instant>,
    /// The initiator and target names of the login (from its admission question), for
    /// [`Question::Reinstate`].
    login_names: Option<(String, Option<String>)>,
    aborted: HashSet<u32>,
    budget_used: usize,
    next_ttt: u32,
    pending_text: Option<PendingText>,
    last_rx: Option<Instant>,
    ping: Option<(u32, Instant)>,
    logout_sent: bool,
    /// The PDU waiting for the answer to the last [`Event::Question`].
    blocked: Option<Blocked>,
    /// Answers collected for the PDU being processed.
    answers: Answers,
    entropy: Entropy,
    close_reason: Option<CloseReason>,
}

impl Connection {
    /// A new connection in the login phase. `rng_seed` must be unpredictable (CHAP challenges
    /// are derived from it): the core has no randomness source of its own.
    pub fn new(cfg: ConnectionConfig, rng_seed: [u8; 32]) -> Self {
        let login = LoginConnection::new(cfg.target.clone(), cfg.portal_group_tag);
        Connection {
            cfg,
            phase: Phase::Login(Box::new(login)),
            decoder: PduDecoder::new(),
            inbuf: BytesMut::new(),
            out: BytesMut::new(),
            out_digests: Digests::NONE,
            events: VecDeque::new(),
            stat_sn: 0,
            exp_cmd_sn: 0,
            held: Default::default(),
            writes: HashMap::new(),
            r2t_queue: VecDeque::new(),
            executing: HashMap::new(),
            slots: 0,
            started: None,
            login_names: None,
            aborted: HashSet::new(),
            budget_used: 0,
            next_ttt: 1,
            pending_text: None,
            last_rx: None,
            ping: None,
            logout_sent: false,
            blocked: None,
            answers: Answers::default(),
            entropy: Entropy::new(rng_seed),
            close_reason: None,
        }
    }

    /// A new connection in the login phase, started at `now`: login must complete by
    /// `now + login_timeout`. ([`Connection::new`] starts the clock at the first bytes.)
    pub fn new_at(cfg: ConnectionConfig, rng_seed: [u8; 32], now: Instant) -> Self {
        let mut c = Connection::new(cfg, rng_seed);
        c.started = Some(now);
        c
    }

    /// Feeds bytes received at `now`; PDUs are processed as they become complete (unless a
    /// [`Event::Question`] is waiting for its answer).
    pub fn receive(&mut self, now: Instant, data: &[u8]) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        self.last_rx = Some(now);
        self.started.get_or_insert(now);
        self.inbuf.extend_from_slice(data);
        self.process_input();
    }

    /// Answers the last [`Event::Question`]; the PDU that asked it is processed again, then
    /// the input received meanwhile. An answer nobody asked for is ignored; one that does not
    /// match the question leaves it asked again.
    pub fn answer(&mut self, answer: Answer) {
        let Some(blocked) = self.blocked.take() else {
            return;
        };
        self.answers.record(answer);
        match self.phase {
            Phase::Closed => return,
            Phase::Login(_) => self.handle_login(blocked.pdu),
            Phase::FullFeature(_) => {
                self.dispatch(blocked.pdu);
                self.release_held();
            }
        }
        self.process_input();
    }

    /// Whether an [`Event::Question`] waits for its answer.
    pub fn is_asking(&self) -> bool {
        self.blocked.is_some()
    }

    /// Decodes and processes buffered PDUs until more bytes are needed, a question must be
    /// answered, or the connection closes.
    fn process_input(&mut self) {
        loop {
            if matches!(self.phase, Phase::Closed) || self.blocked.is_some() {
                return;
            }
            match self.decoder.decode_from(&mut self.inbuf) {
                Ok(None) => return,
                Ok(Some(pdu)) => self.handle(pdu),
                Err(e) => match crate::pdu::reject_for(&e, self.seq_values()) {
                    Some(reject) if matches!(self.phase, Phase::FullFeature(_)) => {
                        self.send(crate::pdu::Pdu::Reject(reject));
                    }
                    _ => self.close(CloseReason::Protocol(ProtocolError::Frame(e))),
                },
            }
        }
    }

    /// Puts `pdu` aside and asks `q`; processing resumes with [`Connection::answer`].
    fn ask(&mut self, q: Question, pdu: crate::pdu::Pdu) {
        if let Question::Admit { initiator, target } = &q {
            self.login_names = Some((initiator.clone(), target.clone()));
        }
        self.blocked = Some(Blocked { pdu });
        self.events.push_back(Event::Question(q));
    }

    /// Bytes to send, in order. Drain after every call that may produce output.
    pub fn take_output(&mut self) -> BytesMut {
        self.out.split()
    }

    /// Whether output is waiting.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether the connection has ended (after a Close event).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.close_reason.as_ref()
    }

    /// The negotiated parameters, once in full feature phase.
    pub fn params(&self) -> Option<&SessionParams> {
        match &self.phase {
            Phase::FullFeature(p) => Some(p),
            _ => None,
        }
    }

    /// Commands handed out and not completed.
    pub fn executing(&self) -> usize {
        self.executing.len()
    }

    /// Bytes of memory the write commands collecting their data hold (their buffers), so a
    /// driver or test can see what a peer pins.
    pub fn write_memory(&self) -> usize {
        self.writes.values().map(|t| t.buf.capacity()).sum()
    }

    fn close(&mut self, reason: CloseReason) {
        if !matches!(self.phase, Phase::Closed) {
            self.phase = Phase::Closed;
            self.blocked = None;
            self.close_reason = Some(reason.clone());
            self.events.push_back(Event::Close(reason));
        }
    }

    fn alloc_ttt(&mut self) -> u32 {
        let t = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == crate::pdu::RESERVED_TAG || self.next_ttt == 0 {
            self.next_ttt = 1;
        }
        t
    }

    /// The window slides as commands finish, not as they are admitted: every admitted
    /// non-immediate SCSI command holds a slot until it completes or is aborted, so at most
    /// `cmd_window` of them are outstanding. MaxCmdSN never goes back (a target must never
    /// advertise one below what it sent before): admitting a command raises ExpCmdSN and the
    /// slots together, finishing one frees a slot.
    fn max_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn
            .wrapping_add(self.cfg.cmd_window.max(1))
            .wrapping_sub(1)
            .wrapping_sub(self.slots.min(self.cfg.cmd_window.max(1)))
    }

    /// Frees the CmdSN slot a finished task held.
    fn release_slot(&mut self, held: bool) {
        if held {
            self.slots = self.slots.saturating_sub(1);
        }
    }

    fn seq_values(&self) -> crate::pdu::StatusSeq {
        crate::pdu::StatusSeq {
            stat_sn: self.stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        }
    }

    /// Takes a StatSN for a status-carrying PDU.
    fn next_stat_sn(&mut self) -> u32 {
        let s = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        s
    }

    fn send(&mut self, pdu: crate::pdu::Pdu) {
        if let Err(e) = pdu.encode(self.out_digests, &mut self.out) {
            // Only oversized data segments fail to encode; responses are sized by us.
            self.close(CloseReason::Encode(e));
        }
    }

    fn enter_full_feature(&mut self, success: &LoginSuccess, exp_cmd_sn: u32) {
        let p = &success.params;
        let digests = Digests {
            header: p.header_digest == crate::login::Digest::Crc32c,
            data: p.data_digest == crate::login::Digest::Crc32c,
        };
        self.decoder.set_digests(digests);
        self.out_digests = digests;
        self.decoder
            .set_max_recv_data_segment_length(p.target_max_recv_data_segment_length);
        self.exp_cmd_sn = exp_cmd_sn;
        self.phase = Phase::FullFeature(Box::new(p.clone()));
    }
}
