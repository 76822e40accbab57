//! The fuzz entry for the full-feature session: a valid login, then a sequence of initiator
//! actions decoded from the input (SCSI commands with and without immediate data, Data-Out for
//! the R2Ts the target sent or made up, task management, NOP-Out, Text, SNACK-free logout, raw
//! bytes, completions in any order, the clock moving on), driven as the gateway drives the
//! connection. The input is read as actions rather than raw bytes so the fuzzer reaches the R2T
//! window, Data-Out reassembly, aborts and timers instead of stopping at the framing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{Answer, Command, Connection, ConnectionConfig, Event, Question};
use crate::login::TargetAuth;
use crate::pdu::{
    DataOut, Digests, LoginRequest, LogoutReason, Lun, NopOut, Pdu, PduDecoder, ScsiCommand, Stage,
    TaskMgmtRequest, TextRequest, TmfFunction, RESERVED_TAG,
};
use crate::scsi::Completion;

const TARGET: &str = "iqn.2026-11.io.tandem:fuzz";

/// Reads the input as a stream of small numbers.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> u16 {
        let hi = self.u8().unwrap_or(0);
        let lo = self.u8().unwrap_or(0);
        u16::from_be_bytes([hi, lo])
    }

    fn bytes(&mut self, n: usize) -> Bytes {
        let n = n.min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Bytes::copy_from_slice(b)
    }
}

/// The initiator's side: the connection, what it has seen, and the commands it runs.
struct Driver {
    conn: Connection,
    now: Instant,
    dec: PduDecoder,
    cmd_sn: u32,
    /// Commands the target handed out, not completed yet.
    running: VecDeque<Command>,
    /// R2Ts received and not fully answered: (ITT, TTT, next offset, bytes left, next DataSN).
    r2ts: VecDeque<(u32, u32, u32, u32, u32)>,
    closed: bool,
    logged_in: bool,
}

impl Driver {
    fn feed(&mut self, bytes: &[u8]) {
        self.conn.receive(self.now, bytes);
        self.settle();
    }

    fn send(&mut self, pdu: &Pdu) {
        let mut b = BytesMut::new();
        if pdu.encode(Digests::NONE, &mut b).is_ok() {
            self.feed(&b);
        }
    }

    fn settle(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                Event::Question(q) => {
                    let a = match q {
                        Question::SessionExists { .. } => Answer::SessionExists(false),
                        Question::Admit { .. } => Answer::Admit(Ok(TargetAuth::None)),
                        Question::AllocateTsih => Answer::Tsih(Some(1)),
                        Question::SendTargets { .. } => Answer::SendTargets(Vec::new()),
                        Question::Reinstate { .. } => Answer::Reinstated,
                    };
                    self.conn.answer(a);
                }
                Event::Command(c) => self.running.push_back(c),
                Event::Aborted(itts) => self.running.retain(|c| !itts.contains(&c.itt)),
                Event::LoggedIn(_) => self.logged_in = true,
                Event::Reset { .. } => {}
                Event::Close(_) => self.closed = true,
            }
        }
        let mut out = self.conn.take_output();
        while let Ok(Some(pdu)) = self.dec.decode_from(&mut out) {
            if let Pdu::R2t(r) = pdu {
                self.r2ts.push_back((
                    r.itt,
                    r.ttt,
                    r.buffer_offset,
                    r.desired_data_transfer_length,
                    0,
                ));
                if self.r2ts.len() > 64 {
                    self.r2ts.pop_front();
                }
            }
        }
    }

    /// The CmdSN of the next non-immediate command: in order for `skew` 0 (and mostly), a
    /// repeat of the last one, or one out of the window.
    fn next_cmd_sn(&mut self, skew: u8) -> u32 {
        match skew & 3 {
            1 => self.cmd_sn.wrapping_sub(1),
            2 => self.cmd_sn.wrapping_add(1000),
            _ => {
                let sn = self.cmd_sn;
                self.cmd_sn = self.cmd_sn.wrapping_add(1);
                sn
            }
        }
    }

    fn login(&mut self) {
        let keys = format!(
            "InitiatorName=iqn.2026-11.io.tandem:fuzzer\0TargetName={TARGET}\0SessionType=Normal\0\
             AuthMethod=None\0HeaderDigest=None\0DataDigest=None\0InitialR2T=No\0ImmediateData=Yes\0\
             MaxBurstLength=16384\0FirstBurstLength=4096\0MaxRecvDataSegmentLength=4096\0\
             MaxOutstandingR2T=2\0ErrorRecoveryLevel=0\0"
        );
        let (Some(csg), Some(nsg)) = (Stage::from_u8(0), Stage::from_u8(3)) else {
            return;
        };
        self.send(&Pdu::LoginRequest(LoginRequest {
            transit: true,
            continue_: false,
            csg,
            nsg,
            version_max: 0,
            version_min: 0,
            isid: [0x80, 0, 0, 1, 0, 0],
            tsih: 0,
            itt: 0,
            cid: 0,
            cmd_sn: 1,
            exp_stat_sn: 0,
            data: Bytes::from(keys),
        }));
    }

    /// Runs one action decoded from `inp`; `false` when the input is used up.
    fn step(&mut self, inp: &mut Input<'_>) -> bool {
        let Some(op) = inp.u8() else { return false };
        let itt = u32::from(inp.u8().unwrap_or(0) & 7);
        match op % 11 {
            0 | 1 => {
                let flags = inp.u8().unwrap_or(0);
                let edtl = u32::from(inp.u16()) & 0x7FFF;
                let imm = usize::from(inp.u8().unwrap_or(0)) * 32;
                let write = flags & 1 != 0;
                let cdb = if write {
                    [0x2A, 0, 0, 0, 0, flags >> 4, 0, 0, (edtl / 512) as u8, 0]
                } else {
                    [0x28, 0, 0, 0, 0, flags >> 4, 0, 0, (edtl / 512) as u8, 0]
                };
                let pdu = Pdu::ScsiCommand(ScsiCommand {
                    immediate: flags & 2 != 0,
                    final_: flags & 4 != 0,
                    read: !write,
                    write,
                    itt,
                    expected_data_transfer_length: edtl,
                    cmd_sn: self.next_cmd_sn(flags >> 3),
                    cdb: Bytes::copy_from_slice(&cdb),
                    data: if write { inp.bytes(imm) } else { Bytes::new() },
                    ..ScsiCommand::default()
                });
                self.send(&pdu);
            }
            2 | 3 => {
                // Data-Out answering the oldest R2T from where it got to (the rest of it stays
                // queued), or solicited by nothing.
                let flags = inp.u8().unwrap_or(0);
                let len = usize::from(inp.u8().unwrap_or(0)) * 64;
                let (itt, ttt, offset, last, sn) = match self.r2ts.pop_front() {
                    Some((i, t, o, rest, sn)) if flags & 1 == 0 => {
                        let n = (len as u32).min(rest);
                        if n < rest {
                            self.r2ts.push_front((i, t, o + n, rest - n, sn + 1));
                        }
                        (i, t, o, n == rest, sn)
                    }
                    _ => (itt, RESERVED_TAG, u32::from(inp.u16()), true, 0),
                };
                let pdu = Pdu::DataOut(DataOut {
                    final_: last != (flags & 2 != 0),
                    itt,
                    ttt,
                    data_sn: sn.wrapping_add(u32::from(flags >> 5)),
                    buffer_offset: offset,
                    data: inp.bytes(len),
                    ..DataOut::default()
                });
                self.send(&pdu);
            }
            4 => {
                let f = inp.u8().unwrap_or(0);
                let pdu = Pdu::TaskMgmtRequest(TaskMgmtRequest {
                    immediate: f & 0x80 != 0,
                    function: TmfFunction::from_u8(f & 0x7F),
                    lun: Lun::default(),
                    itt: 100 + itt,
                    referenced_task_tag: u32::from(inp.u8().unwrap_or(0) & 7),
                    cmd_sn: self.next_cmd_sn(f),
                    exp_stat_sn: 0,
                    ref_cmd_sn: self.cmd_sn.wrapping_sub(1),
                    exp_data_sn: 0,
                });
                self.send(&pdu);
            }
            5 => {
                let f = inp.u8().unwrap_or(0);
                let pdu = Pdu::NopOut(NopOut {
                    immediate: f & 1 != 0,
                    itt: if f & 2 != 0 { RESERVED_TAG } else { 200 + itt },
                    ttt: RESERVED_TAG,
                    cmd_sn: self.next_cmd_sn(f >> 2),
                    data: inp.bytes(usize::from(f >> 4)),
                    ..NopOut::default()
                });
                self.send(&pdu);
            }
            6 => {
                let f = inp.u8().unwrap_or(0);
                let pdu = Pdu::TextRequest(TextRequest {
                    immediate: f & 1 != 0,
                    final_: f & 2 != 0,
                    continue_: f & 4 != 0,
                    lun: Lun::default(),
                    itt: 300 + itt,
                    ttt: RESERVED_TAG,
                    cmd_sn: self.next_cmd_sn(f >> 3),
                    exp_stat_sn: 0,
                    data: Bytes::from_static(b"SendTargets=All\0"),
                });
                self.send(&pdu);
            }
            7 => {
                let f = inp.u8().unwrap_or(0);
                let reason = LogoutReason::from_u8(f % 3).unwrap_or(LogoutReason::CloseSession);
                let pdu = Pdu::LogoutRequest(crate::pdu::LogoutRequest {
                    immediate: f & 0x80 != 0,
                    reason,
                    itt: 400 + itt,
                    cid: 0,
                    cmd_sn: self.next_cmd_sn(f >> 4),
                    exp_stat_sn: 0,
                });
                self.send(&pdu);
            }
            8 => {
                let n = usize::from(inp.u8().unwrap_or(0));
                let raw = inp.bytes(n);
                self.feed(&raw);
            }
            9 => {
                // Complete a running command (the oldest, or a later one).
                let pick = usize::from(inp.u8().unwrap_or(0));
                if !self.running.is_empty() {
                    let i = pick % self.running.len();
                    if let Some(c) = self.running.remove(i) {
                        let mut done = Completion::good();
                        if c.read {
                            done.data =
                                Bytes::from(vec![0u8; (c.expected_len as usize).min(1 << 16)]);
                        }
                        self.conn.complete(c.itt, &done, c.data_out.len() as u32);
                        self.settle();
                    }
                }
            }
            _ => {
                let secs = u64::from(inp.u8().unwrap_or(0));
                self.now += Duration::from_secs(secs);
                if self.conn.poll_timeout().is_some_and(|t| t <= self.now) {
                    self.conn.handle_timeout(self.now);
                }
                self.settle();
            }
        }
        true
    }
}

/// Drives a logged-in connection with the actions `input` encodes. Never panics on any input
/// (the property the fuzz target checks).
pub fn full_feature(input: &[u8]) {
    run(input);
}

fn run(input: &[u8]) -> Driver {
    let mut dec = PduDecoder::new();
    dec.set_max_recv_data_segment_length(1 << 24);
    dec.set_login_data_segment_limit(1 << 24);
    let mut d = Driver {
        conn: Connection::new(ConnectionConfig::default(), [7; 32]),
        now: Instant::now(),
        dec,
        cmd_sn: 1,
        running: VecDeque::new(),
        r2ts: VecDeque::new(),
        closed: false,
        logged_in: false,
    };
    d.login();
    let mut inp = Input(input);
    for _ in 0..512 {
        if d.closed || !d.step(&mut inp) {
            break;
        }
    }
    d
}

/// Action sequences for the committed seed corpus of the `session` target: a write answered
/// through its R2T, a read completed with data, a command aborted by task management, NOP,
/// Text, timers and a logout.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    // WRITE itt 1, final, EDTL 8192, no immediate data; two Data-Outs for its R2T.
    let mut r2t_write = vec![0, 1, 0b101, 0x20, 0x00, 0];
    for _ in 0..2 {
        r2t_write.extend([2, 0, 0, 64]);
        r2t_write.extend(std::iter::repeat_n(0xAB, 4096));
    }
    r2t_write.extend([9, 0, 0]);
    // READ itt 2 (final, 1024 bytes), completed; NOP-Out; Text; clock; logout.
    let read_nop_text = vec![
        1, 2, 0b100, 0x04, 0x00, 0, 9, 0, 0, 5, 0, 0x10, 6, 0, 2, 10, 0, 5, 7, 0, 0,
    ];
    // WRITE itt 3 with immediate data and unsolicited Data-Out pending; ABORT TASK for it
    // (function 1, referenced tag 3); LOGICAL UNIT RESET (5); completion of what is left.
    let mut abort = vec![0, 3, 0b001, 0x10, 0x00, 4];
    abort.extend(std::iter::repeat_n(0xCD, 128));
    abort.extend([4, 0, 1, 3, 4, 0, 5, 0, 9, 0, 0, 10, 0, 30]);
    vec![
        ("r2t_write", r2t_write),
        ("read_nop_text", read_nop_text),
        ("abort", abort),
    ]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// The driver logs in and reaches the full feature phase: a write larger than the first
    /// burst gets an R2T, its Data-Out completes the command, and the command runs.
    #[test]
    fn a_write_gets_an_r2t_and_its_data_out_completes_it() {
        // WRITE itt 1, final, EDTL 8192, no immediate data.
        let mut input = vec![0, 1, 0b101, 0x20, 0x00, 0];
        // Two Data-Outs of 4096 bytes for the R2T.
        for _ in 0..2 {
            input.extend([2, 0, 0, 64]);
            input.extend(std::iter::repeat_n(0xAB, 4096));
        }
        let d = super::run(&input);
        assert!(d.logged_in);
        assert!(!d.closed);
        assert_eq!(d.running.len(), 1, "the write was handed out");
        assert_eq!(d.running[0].data_out.len(), 8192);
    }

    /// The seeds run clean, and `TANDEM_FUZZ_SEEDS=DIR cargo test -p proto-iscsi seeds` writes
    /// them (the committed corpus in `fuzz/seeds/session`).
    #[test]
    fn seeds_run_and_can_be_written() {
        for (name, bytes) in super::seeds() {
            let d = super::run(&bytes);
            assert!(d.logged_in, "{name}");
            if let Some(dir) = std::env::var_os("TANDEM_FUZZ_SEEDS") {
                std::fs::write(std::path::Path::new(&dir).join(name), &bytes).unwrap();
            }
        }
    }

    proptest! {
        #[test]
        fn full_feature_never_panics(input in proptest::collection::vec(any::<u8>(), 0..800)) {
            super::full_feature(&input);
        }
    }
}
