//! The connection state machine driven by a scripted initiator.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::login::{DiscoveredTarget, Refusal, TargetAuth};
use crate::pdu::{
    DataOut, Digests, LoginRequest, LogoutRequest, NopOut, Pdu, PduDecoder, ScsiCommand, Stage,
    TaskMgmtRequest, TextRequest, RESERVED_TAG,
};
use crate::scsi::{Completion, Status};

const TARGET: &str = "iqn.2026-11.io.tandem:test";

/// The driver's side of the questions: one open target, no authentication.
struct Ctx {
    tsih: u16,
}

impl Ctx {
    fn answer(&mut self, q: &Question) -> Answer {
        match q {
            Question::SessionExists { .. } => Answer::SessionExists(false),
            Question::Admit { target: None, .. } => Answer::Admit(Ok(TargetAuth::None)),
            Question::Admit {
                target: Some(t), ..
            } => Answer::Admit(if t == TARGET {
                Ok(TargetAuth::None)
            } else {
                Err(Refusal::NotFound)
            }),
            Question::Reinstate { .. } => Answer::Reinstated,
            Question::AllocateTsih => {
                self.tsih += 1;
                Answer::Tsih(Some(self.tsih))
            }
            // The driver filters by initiator (ACLs): only iqn.x:h may see the target.
            Question::SendTargets { initiator } if initiator == "iqn.x:h" => {
                Answer::SendTargets(vec![DiscoveredTarget {
                    name: TARGET.into(),
                    addresses: vec!["10.0.2.2:3260,1".into()],
                }])
            }
            Question::SendTargets { .. } => Answer::SendTargets(Vec::new()),
        }
    }
}

struct Initiator {
    conn: Connection,
    ctx: Ctx,
    /// Events other than questions, in order (questions are answered as they come).
    seen: Vec<Event>,
    dec: PduDecoder,
    digests: Digests,
    cmd_sn: u32,
    now: Instant,
}

impl Initiator {
    fn new(cfg: ConnectionConfig) -> Self {
        let mut dec = PduDecoder::new();
        dec.set_max_recv_data_segment_length(1 << 24);
        dec.set_login_data_segment_limit(1 << 24);
        Initiator {
            conn: Connection::new(cfg, [7; 32]),
            ctx: Ctx { tsih: 0 },
            seen: Vec::new(),
            dec,
            digests: Digests::NONE,
            cmd_sn: 1,
            now: Instant::now(),
        }
    }

    /// Sends a PDU split into small pieces to exercise reassembly.
    fn send(&mut self, pdu: Pdu) {
        let mut b = BytesMut::new();
        pdu.encode(self.digests, &mut b).unwrap();
        for chunk in b.chunks(37) {
            self.feed(chunk);
        }
    }

    /// Feeds bytes and answers the questions they raise, as a driver does.
    fn feed(&mut self, bytes: &[u8]) {
        self.conn.receive(self.now, bytes);
        self.settle();
    }

    fn settle(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                Event::Question(q) => {
                    let a = self.ctx.answer(&q);
                    self.conn.answer(a);
                }
                other => self.seen.push(other),
            }
        }
    }

    fn recv(&mut self) -> Vec<Pdu> {
        let mut out = self.conn.take_output();
        let mut v = Vec::new();
        while let Some(p) = self.dec.decode_from(&mut out).unwrap() {
            v.push(p);
        }
        assert!(out.is_empty(), "trailing bytes");
        v
    }

    fn events(&mut self) -> Vec<Event> {
        self.settle();
        std::mem::take(&mut self.seen)
    }

    fn login(&mut self, keys: &str, digests: bool) {
        let text = keys.replace('|', "\0") + "\0";
        self.send(Pdu::LoginRequest(LoginRequest {
            transit: true,
            continue_: false,
            csg: Stage::from_u8(0).unwrap(),
            nsg: Stage::from_u8(3).unwrap(),
            version_max: 0,
            version_min: 0,
            isid: [0x80, 0, 0, 1, 0, 0],
            tsih: 0,
            itt: 0,
            cid: 0,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: 0,
            data: Bytes::from(text),
        }));
        let r = self.recv();
        let Pdu::LoginResponse(lr) = &r[0] else {
            panic!("{r:?}")
        };
        assert_eq!((lr.status_class, lr.status_detail), (0, 0), "{lr:?}");
        assert!(lr.transit);
        if digests {
            self.digests = Digests {
                header: true,
                data: true,
            };
            self.dec.set_digests(self.digests);
        }
        assert!(matches!(self.events()[..], [Event::LoggedIn(_)]));
    }

    fn normal_login(&mut self) {
        self.login(
            &format!("InitiatorName=iqn.1994-05.com.redhat:host|TargetName={TARGET}|SessionType=Normal|AuthMethod=None|HeaderDigest=None|DataDigest=None|InitialR2T=No|ImmediateData=Yes|MaxBurstLength=16776192|FirstBurstLength=262144|MaxRecvDataSegmentLength=262144|MaxOutstandingR2T=1|ErrorRecoveryLevel=0|MaxConnections=1"),
            false,
        );
    }

    fn command(&mut self, itt: u32, read: bool, write: bool, edtl: u32, imm: &[u8], final_: bool) {
        let cmd_sn = self.cmd_sn;
        self.cmd_sn += 1;
        self.send(Pdu::ScsiCommand(ScsiCommand {
            final_,
            read,
            write,
            itt,
            expected_data_transfer_length: edtl,
            cmd_sn,
            cdb: Bytes::from_static(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            data: Bytes::copy_from_slice(imm),
            ..ScsiCommand::default()
        }));
    }
}

#[test]
fn read_returns_data_in_with_status_in_the_last_pdu() {
    let mut i = Initiator::new(ConnectionConfig::default());
    i.login(
        &format!("InitiatorName=iqn.x:h|TargetName={TARGET}|AuthMethod=None|MaxRecvDataSegmentLength=1024"),
        false,
    );
    i.command(5, true, false, 3000, &[], true);
    let ev = i.events();
    let [Event::Command(c)] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!((c.itt, c.expected_len, c.read), (5, 3000, true));
    // The LU answers 2000 bytes for a 3000-byte request: underflow 1000.
    let mut done = Completion::good();
    done.data = Bytes::from(vec![9u8; 2000]);
    i.conn.complete(5, &done, 0);
    let pdus = i.recv();
    assert_eq!(pdus.len(), 2, "1024-byte segments");
    let (Pdu::DataIn(a), Pdu::DataIn(b)) = (&pdus[0], &pdus[1]) else {
        panic!()
    };
    assert_eq!(
        (a.data.len(), a.buffer_offset, a.data_sn, a.status),
        (1024, 0, 0, None)
    );
    assert_eq!((b.data.len(), b.buffer_offset, b.data_sn), (976, 1024, 1));
    assert_eq!(b.status, Some(0));
    assert!(b.final_ && b.underflow);
    assert_eq!(b.residual_count, 1000);
}

#[test]
fn write_collects_immediate_unsolicited_and_solicited_data() {
    let mut cfg = ConnectionConfig::default();
    cfg.target.first_burst_length = 8192;
    cfg.target.max_burst_length = 8192;
    let mut i = Initiator::new(cfg);
    i.login(
        &format!("InitiatorName=iqn.x:h|TargetName={TARGET}|AuthMethod=None|InitialR2T=No|ImmediateData=Yes|FirstBurstLength=8192|MaxBurstLength=8192|MaxRecvDataSegmentLength=65536"),
        false,
    );
    let data: Vec<u8> = (0..20_000u32).map(|x| x as u8).collect();
    i.command(7, false, true, 20_000, &data[..4096], false);
    assert!(i.recv().is_empty(), "no R2T while unsolicited data is due");
    i.send(Pdu::DataOut(DataOut {
        final_: true,
        itt: 7,
        ttt: RESERVED_TAG,
        buffer_offset: 4096,
        data: Bytes::copy_from_slice(&data[4096..8192]),
        ..DataOut::default()
    }));
    let r2ts: Vec<_> = i.recv();
    let [Pdu::R2t(r)] = &r2ts[..] else {
        panic!("{r2ts:?}")
    };
    assert_eq!(
        (r.buffer_offset, r.desired_data_transfer_length, r.r2t_sn),
        (8192, 8192, 0)
    );
    i.send(Pdu::DataOut(DataOut {
        final_: true,
        itt: 7,
        ttt: r.ttt,
        data_sn: 0,
        buffer_offset: 8192,
        data: Bytes::copy_from_slice(&data[8192..16384]),
        ..DataOut::default()
    }));
    let r2ts: Vec<_> = i.recv();
    let [Pdu::R2t(r)] = &r2ts[..] else {
        panic!("{r2ts:?}")
    };
    assert_eq!(
        (r.buffer_offset, r.desired_data_transfer_length, r.r2t_sn),
        (16384, 3616, 1)
    );
    i.send(Pdu::DataOut(DataOut {
        final_: true,
        itt: 7,
        ttt: r.ttt,
        buffer_offset: 16384,
        data: Bytes::copy_from_slice(&data[16384..]),
        ..DataOut::default()
    }));
    let ev = i.events();
    let [Event::Command(c)] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(&c.data_out[..], &data[..]);
    i.conn.complete(7, &Completion::good(), 20_000);
    let r = i.recv();
    let [Pdu::ScsiResponse(s)] = &r[..] else {
        panic!("{r:?}")
    };
    assert_eq!(
        (s.status, s.residual_count, s.underflow, s.overflow),
        (0, 0, false, false)
    );
}

#[test]
fn data_out_outside_the_burst_is_rejected_and_the_session_goes_on() {
    let mut i = Initiator::new(ConnectionConfig::default());
    i.normal_login();
    i.command(1, false, true, 512, &[], false);
    i.send(Pdu::DataOut(DataOut {
        final_: true,
        itt: 1,
        ttt: RESERVED_TAG,
        buffer_offset: 1000,
        data: Bytes::from_static(&[0; 100]),
        ..DataOut::default()
    }));
    let r = i.recv();
    assert!(matches!(&r[..], [Pdu::Reject(_)]), "{r:?}");
    i.send(Pdu::NopOut(NopOut {
        itt: 9,
        ttt: RESERVED_TAG,
        cmd_sn: i.cmd_sn,
        immediate: true,
        data: Bytes::from_static(b"ping"),
        ..NopOut::default()
    }));
    let r = i.recv();
    let [Pdu::NopIn(n)] = &r[..] else {
        panic!("{r:?}")
    };
    assert_eq!((n.itt, &n.data[..]), (9, &b"ping"[..]));
}

#[test]
fn check_condition_goes_in_a_scsi_response_with_sense() {
    let mut i = Initiator::new(ConnectionConfig::default());
    i.normal_login();
    i.command(3, true, false, 512, &[], true);
    i.events();
    let mut lu = crate::scsi::LogicalUnit::new(crate::scsi::LuConfig::new(512, [1; 16]), 8);
    let nexus = crate::scsi::Nexus {
        id: 1,
        initiator_port: "i".into(),
        target_port_group: 1,
        relative_port: 1,
    };
    // The nexus's first command collects the power-on unit attention.
    let crate::scsi::Step::Done(c) = lu.start(&nexus, &[0, 0, 0, 0, 0, 0], 0) else {
        panic!()
    };
    assert_eq!(c.status, Status::CheckCondition);
    i.conn.complete(3, &c, 0);
    // READ(10) beyond the end of an 8-block unit.
    let cdb = [0x28, 0, 0, 0, 0, 100, 0, 0, 1, 0];
    let step = lu.start(&nexus, &cdb, 0);
    let crate::scsi::Step::Done(c) = step else {
        panic!("{step:?}")
    };
    assert_eq!(c.status, Status::CheckCondition);
    i.command(4, true, false, 512, &[], true);
    i.events();
    i.conn.complete(4, &c, 0);
    let r = i.recv();
    let Some(Pdu::ScsiResponse(s)) = r.last() else {
        panic!("{r:?}")
    };
    assert_eq!(s.status, 2);
    let sense = s.sense_data().unwrap();
    assert_eq!((sense[2] & 0xf, sense[12], sense[13]), (0x5, 0x21, 0x00));
}

#[test]
fn cmdsn_window_orders_commands_and_ignores_those_outside() {
    let mut i = Initiator::new(ConnectionConfig::default());
    i.normal_login();
    let base = i.cmd_sn;
    // CmdSN base+1 arrives before base: held until the gap fills.
    i.cmd_sn = base + 1;
    i.command(11, true, false, 0, &[], true);
    assert!(i.events().is_empty());
    i.cmd_sn = base;
    i.command(10, true, false, 0, &[], true);
    let itts: Vec<u32> = i
        .events()
        .iter()
        .map(|e| match e {
            Event::Command(c) => c.itt,
            _ => 0,
        })
        .collect();
    assert_eq!(itts, vec![10, 11]);
    // Far outside the window: silently ignored.
    i.cmd_sn = base + 100_000;
    i.command(12, true, false, 0, &[], true);
    assert!(i.events().is_empty());
    assert!(i.recv().is_empty());
}

#[test]
fn abort_task_drops_the_completion() {
    let mut i = Initiator::new(ConnectionConfig::default());
    i.normal_login();
    i.command(21, true, false, 512, &[], true);
    i.events();
    i.send(Pdu::TaskMgmtRequest(TaskMgmtRequest {
        immediate: true,
        function: crate::pdu::TmfFunction::AbortTask,
        lun: Default::default(),
        itt: 22,
        referenced_task_tag: 21,
        cmd_sn: i.cmd_sn,
        exp_stat_sn: 0,
        ref_cmd_sn: i.cmd_sn - 1,
        exp_data_sn: 0,
    }));
    let r = i.recv();
    let [Pdu::TaskMgmtResponse(t)] = &r[..] else {
        panic!("{r:?}")
    };
    assert_eq!(t.response, crate::pdu::TmfResponse::Complete);
    assert!(matches!(&i.events()[..], [Event::Aborted(v)] if v == &vec![21]));
    let mut c = Completion::good();
    c.data = Bytes::from_static(&[0; 512]);
    i.conn.complete(21, &c, 0);
    assert!(i.recv().is_empty(), "aborted task must not answer");
}

#[test]
fn discovery_session_answers_send_targets_and_refuses_scsi() {
    let mut i = Initiator::new(ConnectionConfig::default());
    i.login(
        "InitiatorName=iqn.x:h|SessionType=Discovery|AuthMethod=None",
        false,
    );
    i.send(Pdu::TextRequest(TextRequest {
        immediate: true,
        final_: true,
        itt: 3,
        ttt: RESERVED_TAG,
        cmd_sn: i.cmd_sn,
        data: Bytes::from_static(b"SendTargets=All\0"),
        ..TextRequest::default()
    }));
    let r = i.recv();
    let [Pdu::TextResponse(t)] = &r[..] else {
        panic!("{r:?}")
    };
    let text = String::from_utf8_lossy(&t.data);
    assert!(
        text.contains(&format!("TargetName={TARGET}"))
            && text.contains("TargetAddress=10.0.2.2:3260,1"),
        "{text}"
    );
    i.command(4, true, false, 0, &[], true);
    assert!(matches!(&i.recv()[..], [Pdu::Reject(_)]));
    assert!(i.events().is_empty());
}

#[test]
fn digests_apply_after_login_and_logout_closes() {
    let mut i = Initiator::new(ConnectionConfig::default());
    i.login(
        &format!("InitiatorName=iqn.x:h|TargetName={TARGET}|AuthMethod=None|HeaderDigest=CRC32C|DataDigest=CRC32C"),
        true,
    );
    i.send(Pdu::NopOut(NopOut {
        itt: 1,
        ttt: RESERVED_TAG,
        cmd_sn: i.cmd_sn,
        immediate: true,
        data: Bytes::from_static(b"abc"),
        ..NopOut::default()
    }));
    assert!(matches!(&i.recv()[..], [Pdu::NopIn(_)]));
    let cmd_sn = i.cmd_sn;
    i.send(Pdu::LogoutRequest(LogoutRequest {
        immediate: false,
        reason: crate::pdu::LogoutReason::CloseSession,
        itt: 2,
        cid: 0,
        cmd_sn,
        exp_stat_sn: 0,
    }));
    assert!(matches!(&i.recv()[..], [Pdu::LogoutResponse(_)]));
    assert!(matches!(
        &i.events()[..],
        [Event::Close(CloseReason::Logout)]
    ));
    assert!(i.conn.is_closed());
}

#[test]
fn an_unanswered_ping_closes_the_connection() {
    let cfg = ConnectionConfig {
        nop_interval: Duration::from_secs(5),
        nop_timeout: Duration::from_secs(5),
        ..ConnectionConfig::default()
    };
    let mut i = Initiator::new(cfg);
    i.normal_login();
    let t0 = i.now;
    i.conn.handle_timeout(t0 + Duration::from_secs(6));
    let r = i.recv();
    let [Pdu::NopIn(n)] = &r[..] else {
        panic!("{r:?}")
    };
    assert_eq!(n.itt, RESERVED_TAG);
    i.conn.handle_timeout(t0 + Duration::from_secs(12));
    assert!(matches!(
        &i.events()[..],
        [Event::Close(CloseReason::PingTimeout)]
    ));
}

#[test]
fn garbage_before_login_closes_without_panic() {
    let mut i = Initiator::new(ConnectionConfig::default());
    // A SCSI Command before any login.
    let mut junk = [0u8; 48];
    junk[0] = 0x01;
    i.feed(&junk);
    assert!(i.conn.is_closed());
    assert!(matches!(
        &i.events()[..],
        [Event::Close(CloseReason::Protocol(_))]
    ));
    // Bytes that can never frame (an AHS length beyond any buffer) are simply awaited, and
    // more garbage after a close is ignored.
    i.feed(&[0xff; 200]);
    assert!(i.recv().is_empty());
}

proptest::proptest! {
    #[test]
    fn random_bytes_after_login_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000)) {
        let mut i = Initiator::new(ConnectionConfig::default());
        i.normal_login();
        i.feed(&bytes);
        let _ = i.conn.take_output();
        let _ = i.events();
    }
}

/// A Login Request of a normal session to `target`, with no other keys than the identities.
fn first_login(target: &str, itt: u32) -> Pdu {
    Pdu::LoginRequest(LoginRequest {
        transit: true,
        continue_: false,
        csg: Stage::from_u8(0).unwrap(),
        nsg: Stage::from_u8(3).unwrap(),
        version_max: 0,
        version_min: 0,
        isid: [0x80, 0, 0, 1, 0, 0],
        tsih: 0,
        itt,
        cid: 0,
        cmd_sn: 1,
        exp_stat_sn: 0,
        data: Bytes::from(format!(
            "InitiatorName=iqn.1994-05.com.redhat:host\0TargetName={target}\0AuthMethod=None\0"
        )),
    })
}

#[test]
fn a_login_waits_for_its_answers_and_holds_later_input() {
    let mut c = Connection::new(ConnectionConfig::default(), [1; 32]);
    let now = Instant::now();
    let mut b = BytesMut::new();
    first_login(TARGET, 5)
        .encode(Digests::NONE, &mut b)
        .unwrap();
    // A second PDU arrives in the same read: it must wait behind the question.
    let mut nop = BytesMut::new();
    Pdu::NopOut(NopOut {
        immediate: true,
        lun: Default::default(),
        itt: 9,
        ttt: RESERVED_TAG,
        cmd_sn: 1,
        exp_stat_sn: 0,
        data: Bytes::new(),
    })
    .encode(Digests::NONE, &mut nop)
    .unwrap();
    b.extend_from_slice(&nop);
    c.receive(now, &b);
    assert_eq!(
        c.poll_event(),
        Some(Event::Question(Question::Admit {
            initiator: "iqn.1994-05.com.redhat:host".into(),
            target: Some(TARGET.into()),
        }))
    );
    assert!(c.is_asking() && c.take_output().is_empty());
    c.answer(Answer::Admit(Ok(TargetAuth::None)));
    assert!(matches!(
        c.poll_event(),
        Some(Event::Question(Question::Reinstate { .. }))
    ));
    c.answer(Answer::Reinstated);
    assert_eq!(
        c.poll_event(),
        Some(Event::Question(Question::AllocateTsih))
    );
    assert!(c.take_output().is_empty());
    c.answer(Answer::Tsih(Some(0x42)));
    let Some(Event::LoggedIn(s)) = c.poll_event() else {
        panic!("no login")
    };
    assert_eq!(s.tsih, 0x42);
    // The login response, then the NOP-In answering the held NOP-Out.
    let mut out = c.take_output();
    let mut dec = PduDecoder::new();
    dec.set_login_data_segment_limit(1 << 24);
    let Some(Pdu::LoginResponse(lr)) = dec.decode_from(&mut out).unwrap() else {
        panic!("no login response")
    };
    assert_eq!((lr.status_class, lr.tsih, lr.itt), (0, 0x42, 5));
    assert!(matches!(dec.decode_from(&mut out).unwrap(), Some(Pdu::NopIn(n)) if n.itt == 9));
}

#[test]
fn a_refused_login_closes_with_a_typed_reason() {
    let mut c = Connection::new(ConnectionConfig::default(), [1; 32]);
    let mut b = BytesMut::new();
    first_login("iqn.2026-11.io.tandem:nope", 1)
        .encode(Digests::NONE, &mut b)
        .unwrap();
    c.receive(Instant::now(), &b);
    assert!(matches!(
        c.poll_event(),
        Some(Event::Question(Question::Admit { .. }))
    ));
    c.answer(Answer::Admit(Err(Refusal::NotFound)));
    let reason = CloseReason::LoginFailed(crate::login::LoginError::TargetNotFound);
    assert_eq!(c.poll_event(), Some(Event::Close(reason.clone())));
    assert_eq!(c.close_reason(), Some(&reason));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn the_deadline_follows_idle_time_then_the_ping() {
    let cfg = ConnectionConfig {
        nop_interval: Duration::from_secs(5),
        nop_timeout: Duration::from_secs(3),
        ..ConnectionConfig::default()
    };
    let mut i = Initiator::new(cfg);
    assert_eq!(i.conn.poll_timeout(), None);
    i.normal_login();
    let t0 = i.now;
    assert_eq!(i.conn.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    // Early wake-ups do nothing.
    i.conn.handle_timeout(t0 + Duration::from_secs(4));
    assert!(i.recv().is_empty());
    i.conn.handle_timeout(t0 + Duration::from_secs(5));
    let r = i.recv();
    let [Pdu::NopIn(n)] = &r[..] else {
        panic!("{r:?}")
    };
    assert_eq!(i.conn.poll_timeout(), Some(t0 + Duration::from_secs(8)));
    // The answer ends the ping; idle time counts from it.
    i.now = t0 + Duration::from_secs(6);
    let cmd_sn = i.cmd_sn;
    i.send(Pdu::NopOut(NopOut {
        immediate: true,
        lun: Default::default(),
        itt: RESERVED_TAG,
        ttt: n.ttt,
        cmd_sn,
        exp_stat_sn: 0,
        data: Bytes::new(),
    }));
    assert_eq!(i.conn.poll_timeout(), Some(t0 + Duration::from_secs(11)));
    assert!(i.events().is_empty());
}

/// Issue 14, item 1: ~100 bytes on the wire (a WRITE with a large EDTL and one unsolicited
/// Data-Out at a high offset) must not pin the whole first burst.
#[test]
fn a_high_offset_unsolicited_data_out_pins_no_memory() {
    let mut i = Initiator::new(ConnectionConfig::default());
    i.normal_login();
    for itt in 0..8u32 {
        i.command(100 + itt, false, true, 16 << 20, &[], false);
        i.send(Pdu::DataOut(DataOut {
            final_: false,
            itt: 100 + itt,
            ttt: RESERVED_TAG,
            buffer_offset: (256 << 10) - 512,
            data: Bytes::from_static(&[0; 512]),
            ..DataOut::default()
        }));
    }
    i.recv();
    let held = i.conn.write_memory();
    assert!(held <= 8 * 4096, "8 tiny Data-Outs pinned {held} bytes");
    // In order, a tiny unsolicited Data-Out holds at most its first burst, not the command.
    i.command(200, false, true, 16 << 20, &[], false);
    i.send(Pdu::DataOut(DataOut {
        final_: false,
        itt: 200,
        ttt: RESERVED_TAG,
        buffer_offset: 0,
        data: Bytes::from_static(&[0; 512]),
        ..DataOut::default()
    }));
    let held = i.conn.write_memory() - held;
    assert!(
        held <= 256 << 10,
        "a 512-byte Data-Out reserved {held} bytes"
    );
}

/// Issue 14, item 1: an R2T-solicited write holds no memory for data that has not arrived.
#[test]
fn a_solicited_write_holds_only_what_arrived() {
    let mut i = Initiator::new(ConnectionConfig::default());
    i.normal_login();
    // F bit set, no data: everything is solicited by R2T.
    i.command(7, false, true, 16 << 20, &[], true);
    let r = i.recv();
    assert!(matches!(r.first(), Some(Pdu::R2t(_))), "{r:?}");
    let held = i.conn.write_memory();
    assert!(held <= 4096, "an R2T with no data yet pinned {held} bytes");
}

fn max_cmd_sn_seen(pdus: &[Pdu]) -> Option<u32> {
    pdus.iter().rev().find_map(|p| match p {
        Pdu::NopIn(n) => Some(n.max_cmd_sn),
        Pdu::ScsiResponse(r) => Some(r.max_cmd_sn),
        Pdu::DataIn(d) => Some(d.max_cmd_sn),
        Pdu::R2t(r) => Some(r.max_cmd_sn),
        _ => None,
    })
}

/// Issue 14, item 1: the CmdSN window slides when commands complete, not when they are
/// admitted, so the commands a connection has outstanding stay within the window.
#[test]
fn the_cmdsn_window_slides_on_completion() {
    let cfg = ConnectionConfig {
        cmd_window: 16,
        ..ConnectionConfig::default()
    };
    let mut i = Initiator::new(cfg);
    i.normal_login();
    let base = i.cmd_sn;
    for itt in 0..40u32 {
        i.command(itt, true, false, 512, &[], true);
    }
    let n = i
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Command(_)))
        .count();
    assert_eq!(n, 16, "only the window's commands are admitted");
    // A ping (immediate) reports the window: nothing completed, so it has not moved.
    i.send(Pdu::NopOut(NopOut {
        itt: 900,
        ttt: RESERVED_TAG,
        cmd_sn: i.cmd_sn,
        immediate: true,
        ..NopOut::default()
    }));
    let r = i.recv();
    assert_eq!(max_cmd_sn_seen(&r), Some(base + 15));
    let mut done = Completion::good();
    done.data = Bytes::from_static(&[0; 512]);
    i.conn.complete(0, &done, 0);
    let r = i.recv();
    assert_eq!(
        max_cmd_sn_seen(&r),
        Some(base + 16),
        "one completion, one more slot"
    );
}

/// Issue 14, item 1: immediate commands do not take a CmdSN slot, so their number is capped
/// separately: beyond it they are rejected (reason 0x06) rather than queued without end.
#[test]
fn immediate_commands_beyond_the_cap_are_rejected() {
    let cfg = ConnectionConfig {
        cmd_window: 16,
        ..ConnectionConfig::default()
    };
    let mut i = Initiator::new(cfg);
    i.normal_login();
    for itt in 0..100u32 {
        let cmd_sn = i.cmd_sn;
        i.send(Pdu::ScsiCommand(ScsiCommand {
            immediate: true,
            final_: true,
            read: true,
            itt,
            expected_data_transfer_length: 512,
            cmd_sn,
            cdb: Bytes::from_static(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            ..ScsiCommand::default()
        }));
    }
    let n = i
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Command(_)))
        .count();
    assert!(n <= 32, "{n} immediate commands outstanding");
    let rejects = i
        .recv()
        .iter()
        .filter(|p| matches!(p, Pdu::Reject(r) if r.reason == crate::pdu::RejectReason::ImmediateCommandReject))
        .count();
    assert_eq!(rejects, 100 - n);
}

/// Issue 14, item 1: a peer that starts a login and never finishes it is dropped.
#[test]
fn a_login_that_does_not_finish_in_time_closes() {
    let cfg = ConnectionConfig {
        login_timeout: Duration::from_secs(5),
        ..ConnectionConfig::default()
    };
    let t0 = Instant::now();
    let mut c = Connection::new_at(cfg.clone(), [1; 32], t0);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    // Half a login PDU, then silence.
    c.receive(t0 + Duration::from_secs(1), &[0x43, 0x87, 0, 0]);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    c.handle_timeout(t0 + Duration::from_secs(4));
    assert!(!c.is_closed());
    c.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(c.close_reason(), Some(&CloseReason::LoginTimeout));
    // Without a start time the deadline counts from the first bytes.
    let mut c = Connection::new(cfg, [1; 32]);
    assert_eq!(c.poll_timeout(), None);
    c.receive(t0, &[0x43]);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(5)));
}

/// Issue 14, item 3: a new session asks for the old session of its I_T nexus to be closed
/// before it is given a TSIH, and nothing of its login answer goes out before.
#[test]
fn a_new_session_waits_for_the_reinstatement_of_its_nexus() {
    let mut c = Connection::new(ConnectionConfig::default(), [1; 32]);
    let mut b = BytesMut::new();
    first_login(TARGET, 5)
        .encode(Digests::NONE, &mut b)
        .unwrap();
    c.receive(Instant::now(), &b);
    assert!(matches!(
        c.poll_event(),
        Some(Event::Question(Question::Admit { .. }))
    ));
    c.answer(Answer::Admit(Ok(TargetAuth::None)));
    assert_eq!(
        c.poll_event(),
        Some(Event::Question(Question::Reinstate {
            isid: [0x80, 0, 0, 1, 0, 0],
            initiator: "iqn.1994-05.com.redhat:host".into(),
            target: TARGET.into(),
        }))
    );
    assert!(c.take_output().is_empty() && c.params().is_none());
    c.answer(Answer::Reinstated);
    assert_eq!(
        c.poll_event(),
        Some(Event::Question(Question::AllocateTsih))
    );
    c.answer(Answer::Tsih(Some(7)));
    assert!(matches!(c.poll_event(), Some(Event::LoggedIn(_))));
}

/// Tasks aborted from outside the connection (PREEMPT AND ABORT, reinstatement) are named
/// in an event, answer nothing, and free their CmdSN slots.
#[test]
fn tasks_aborted_from_outside_answer_nothing_and_free_their_slots() {
    let cfg = ConnectionConfig {
        cmd_window: 4,
        ..ConnectionConfig::default()
    };
    let mut i = Initiator::new(cfg);
    i.normal_login();
    let base = i.cmd_sn;
    i.command(1, true, false, 512, &[], true);
    // A write waiting for its solicited data.
    i.command(2, false, true, 1 << 20, &[], true);
    i.events();
    i.recv();
    i.conn.abort_tasks(Some(0));
    let ev = i.events();
    let [Event::Aborted(v)] = &ev[..] else {
        panic!("{ev:?}")
    };
    let mut v = v.clone();
    v.sort_unstable();
    assert_eq!(v, vec![1, 2]);
    i.conn.complete(1, &Completion::good(), 0);
    assert!(i.recv().is_empty(), "an aborted task answers nothing");
    i.send(Pdu::NopOut(NopOut {
        itt: 9,
        ttt: RESERVED_TAG,
        cmd_sn: i.cmd_sn,
        immediate: true,
        ..NopOut::default()
    }));
    assert_eq!(
        max_cmd_sn_seen(&i.recv()),
        Some(base + 5),
        "both slots are free again"
    );
}
