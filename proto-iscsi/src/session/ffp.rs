//! Dispatch of received PDUs in the full feature phase (login is in `login_phase`).

use bytes::Bytes;

use super::ask::Question;
use super::seq;
use super::write::{DataOutError, WriteTask};
use super::{CloseReason, Command, Connection, Event, PendingText, Phase, ProtocolError};
use crate::login::{self, SessionType};
use crate::pdu::{
    build_reject, DataOut, LogoutReason, LogoutRequest, LogoutResponse, LogoutResponseCode, NopIn,
    NopOut, Pdu, R2t, RejectReason, ScsiCommand, TaskMgmtRequest, TaskMgmtResponse, TextRequest,
    TextResponse, TmfFunction, TmfResponse, RESERVED_TAG,
};
use crate::text;

impl Connection {
    pub(super) fn handle(&mut self, pdu: Pdu) {
        match &mut self.phase {
            Phase::Closed => {}
            Phase::Login(_) => self.handle_login(pdu),
            Phase::FullFeature(_) => self.handle_ffp(pdu),
        }
    }

    fn session_type(&self) -> SessionType {
        match &self.phase {
            Phase::FullFeature(p) => p.session_type,
            _ => SessionType::Normal,
        }
    }

    fn reject(&mut self, reason: RejectReason, pdu: &Pdu) {
        let mut header = bytes::BytesMut::new();
        let digests = crate::pdu::Digests::NONE;
        let _ = pdu.encode(digests, &mut header);
        let seq = self.seq_values();
        let r = build_reject(reason, &header, seq);
        self.send(Pdu::Reject(r));
    }

    /// Applies CmdSN ordering to a non-immediate command. Returns whether to process it now.
    fn admit(&mut self, pdu: Pdu, immediate: bool, cmd_sn: u32) -> Option<Pdu> {
        if immediate {
            return Some(pdu);
        }
        let max = self.max_cmd_sn();
        if !seq::le(self.exp_cmd_sn, cmd_sn) || !seq::le(cmd_sn, max) {
            // Outside the window: RFC 7143 4.2.2.1 says ignore silently.
            return None;
        }
        if cmd_sn != self.exp_cmd_sn {
            self.held.insert(cmd_sn, pdu);
            return None;
        }
        self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
        Some(pdu)
    }

    fn handle_ffp(&mut self, pdu: Pdu) {
        let (immediate, cmd_sn) = match &pdu {
            Pdu::ScsiCommand(c) => (c.immediate, c.cmd_sn),
            Pdu::TaskMgmtRequest(t) => (t.immediate, t.cmd_sn),
            Pdu::TextRequest(t) => (t.immediate, t.cmd_sn),
            Pdu::LogoutRequest(l) => (l.immediate, l.cmd_sn),
            // NOP-Out with the reserved ITT is a ping answer and carries no CmdSN of its own.
            Pdu::NopOut(n) => (n.immediate || n.itt == RESERVED_TAG, n.cmd_sn),
            _ => (true, 0),
        };
        let numbered = matches!(
            pdu,
            Pdu::ScsiCommand(_)
                | Pdu::TaskMgmtRequest(_)
                | Pdu::TextRequest(_)
                | Pdu::LogoutRequest(_)
                | Pdu::NopOut(_)
        );
        let Some(pdu) = (if numbered {
            self.admit(pdu, immediate, cmd_sn)
        } else {
            Some(pdu)
        }) else {
            return;
        };
        self.dispatch(pdu);
        self.release_held();
    }

    /// Processes commands held for a CmdSN gap that are now in order (stopping when one asks
    /// a question: the rest follow its answer).
    pub(super) fn release_held(&mut self) {
        while self.blocked.is_none() && !matches!(self.phase, Phase::Closed) {
            let Some(next) = self.held.remove(&self.exp_cmd_sn) else {
                break;
            };
            self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
            self.dispatch(next);
        }
    }

    pub(super) fn dispatch(&mut self, pdu: Pdu) {
        let discovery = self.session_type() == SessionType::Discovery;
        match pdu {
            Pdu::ScsiCommand(c) if !discovery => self.scsi_command(c),
            Pdu::DataOut(d) if !discovery => self.data_out(d),
            Pdu::TaskMgmtRequest(t) if !discovery => self.task_mgmt(t),
            Pdu::NopOut(n) => self.nop_out(n),
            Pdu::TextRequest(t) => self.text(t),
            Pdu::LogoutRequest(l) => self.logout(l),
            Pdu::SnackRequest(_) => {
                let p = pdu.clone();
                self.reject(RejectReason::ProtocolError, &p);
            }
            Pdu::LoginRequest(_) => {
                let p = pdu.clone();
                self.reject(RejectReason::ProtocolError, &p);
            }
            other if other.opcode().is_initiator_opcode() => {
                // SCSI / task management in a discovery session.
                self.reject(RejectReason::ProtocolError, &other);
            }
            other => self.close(CloseReason::Protocol(ProtocolError::TargetOpcode(
                other.opcode(),
            ))),
        }
    }

    fn params_ref(&self) -> Option<&login::SessionParams> {
        match &self.phase {
            Phase::FullFeature(p) => Some(p),
            _ => None,
        }
    }

    fn scsi_command(&mut self, mut c: ScsiCommand) {
        let Some(p) = self.params_ref() else {
            return;
        };
        let (immediate_ok, initial_r2t, first_burst) =
            (p.immediate_data, p.initial_r2t, p.first_burst_length);
        if self.writes.contains_key(&c.itt) || self.executing.contains_key(&c.itt) {
            self.reject(RejectReason::TaskInProgress, &Pdu::ScsiCommand(c));
            return;
        }
        // Immediate commands take no CmdSN slot, so they are capped on their own: at most
        // `cmd_window` of them outstanding, beyond that they are rejected (RFC 7143 11.17.1).
        let tasks = (self.writes.len() + self.executing.len()) as u64;
        if c.immediate
            && tasks.saturating_sub(u64::from(self.slots)) >= u64::from(self.cfg.cmd_window.max(1))
        {
            self.reject(RejectReason::ImmediateCommandReject, &Pdu::ScsiCommand(c));
            return;
        }
        let slot = !c.immediate;
        if slot {
            self.slots = self.slots.saturating_add(1);
        }
        let edtl = c.expected_data_transfer_length;
        if !c.data.is_empty()
            && (!c.write || !immediate_ok || c.data.len() as u32 > edtl.min(first_burst))
        {
            // Immediate data where it is not allowed, or more than FirstBurstLength.
            self.reject(RejectReason::ProtocolError, &Pdu::ScsiCommand(c));
            return;
        }
        if !c.write || edtl == 0 {
            c.data = Bytes::new();
            self.deliver(
                slot,
                Command {
                    itt: c.itt,
                    lun: c.lun,
                    cdb: c.cdb,
                    data_out: Bytes::new(),
                    expected_len: edtl,
                    read: c.read,
                    write: c.write,
                    data_dropped: false,
                },
            );
            return;
        }
        if c.data.len() as u32 == edtl && edtl <= self.cfg.max_command_bytes {
            // Everything came as immediate data: hand it on without copying.
            self.deliver(
                slot,
                Command {
                    itt: c.itt,
                    lun: c.lun,
                    cdb: c.cdb,
                    data_out: c.data,
                    expected_len: edtl,
                    read: c.read,
                    write: true,
                    data_dropped: false,
                },
            );
            return;
        }
        let unsolicited = if initial_r2t {
            0
        } else {
            first_burst.min(edtl)
        };
        // With the F bit set on the command no unsolicited Data-Out follows.
        let unsolicited = if c.final_ {
            c.data.len() as u32
        } else {
            unsolicited
        };
        let discarding = edtl > self.cfg.max_command_bytes;
        let itt = c.itt;
        let mut task = WriteTask::new(c, unsolicited, discarding);
        task.slot = slot;
        self.writes.insert(itt, task);
        self.progress_write(itt);
    }

    fn data_out(&mut self, d: DataOut) {
        let Some(task) = self.writes.get_mut(&d.itt) else {
            // Data for a task we do not have (finished, aborted, or bogus).
            if !self.aborted.contains(&d.itt) {
                self.reject(RejectReason::ProtocolError, &Pdu::DataOut(d));
            }
            return;
        };
        match task.data_out(d.ttt, d.data_sn, d.buffer_offset, &d.data, d.final_) {
            Ok(()) => {
                let itt = d.itt;
                self.progress_write(itt);
            }
            Err(DataOutError::OutOfBounds) | Err(DataOutError::UnknownTtt) => {
                self.reject(RejectReason::ProtocolError, &Pdu::DataOut(d));
            }
            Err(DataOutError::BadDataSn) => {
                // A lost or reordered Data-Out cannot be recovered at ErrorRecoveryLevel 0:
                // the command fails (its remaining Data-Out is swallowed), the session goes on.
                let itt = d.itt;
                if let Some(t) = self.writes.remove(&itt) {
                    self.budget_used = self.budget_used.saturating_sub(t.charged as usize);
                    self.r2t_queue.retain(|&i| i != itt);
                    self.aborted.insert(itt);
                    self.executing.insert(
                        itt,
                        super::Running {
                            lun: t.cmd.lun,
                            expected: t.edtl,
                            slot: t.slot,
                        },
                    );
                    let failed = crate::scsi::Completion::check(crate::scsi::Sense::new(
                        crate::scsi::SenseKey::AbortedCommand,
                        crate::scsi::sense::ASC_DATA_PHASE_ERROR,
                    ));
                    self.complete(itt, &failed, 0);
                    self.aborted.insert(itt);
                    self.pump_r2t_queue();
                }
            }
        }
    }

    /// Issues R2Ts for a write or hands it to the caller when all data has arrived.
    fn progress_write(&mut self, itt: u32) {
        let Some(p) = self.params_ref() else {
            return;
        };
        let (max_burst, max_r2t) = (
            p.max_burst_length,
            usize::from(p.max_outstanding_r2t.max(1)),
        );
        let Some(task) = self.writes.get(&itt) else {
            return;
        };
        if task.complete() {
            let Some(task) = self.writes.remove(&itt) else {
                return;
            };
            self.budget_used = self.budget_used.saturating_sub(task.charged as usize);
            self.r2t_queue.retain(|&i| i != itt);
            let data_dropped = task.discarding;
            let data = if data_dropped {
                Bytes::new()
            } else {
                task.buf.freeze()
            };
            self.deliver(
                task.slot,
                Command {
                    itt,
                    lun: task.cmd.lun,
                    cdb: task.cmd.cdb,
                    data_out: data,
                    expected_len: task.edtl,
                    read: task.cmd.read,
                    write: true,
                    data_dropped,
                },
            );
            self.pump_r2t_queue();
            return;
        }
        if !task.unsolicited_done || task.unrequested() == 0 {
            return;
        }
        if task.charged == 0 && !task.discarding {
            let need = task.unrequested() as usize;
            if self.budget_used > 0 && self.budget_used + need > self.cfg.write_budget {
                if !self.r2t_queue.contains(&itt) {
                    self.r2t_queue.push_back(itt);
                }
                return;
            }
            self.budget_used += need;
            if let Some(t) = self.writes.get_mut(&itt) {
                t.charged = need as u32;
            }
        }
        loop {
            let outstanding = self.writes.get(&itt).map_or(max_r2t, |t| t.bursts.len());
            if outstanding >= max_r2t {
                break;
            }
            let ttt = self.alloc_ttt();
            let Some(task) = self.writes.get_mut(&itt) else {
                break;
            };
            let Some(b) = task.next_burst(ttt, max_burst) else {
                break;
            };
            let lun = task.cmd.lun;
            let r2t = R2t {
                lun,
                itt,
                ttt: b.ttt,
                stat_sn: self.stat_sn,
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
                r2t_sn: b.r2t_sn,
                buffer_offset: b.offset,
                desired_data_transfer_length: b.len,
            };
            self.send(Pdu::R2t(r2t));
        }
    }

    fn pump_r2t_queue(&mut self) {
        let queued: Vec<u32> = self.r2t_queue.drain(..).collect();
        for itt in queued {
            self.progress_write(itt);
        }
    }

    fn deliver(&mut self, slot: bool, cmd: Command) {
        self.executing.insert(
            cmd.itt,
            super::Running {
                lun: cmd.lun,
                expected: cmd.expected_len,
                slot,
            },
        );
        self.events.push_back(Event::Command(cmd));
    }

    fn nop_out(&mut self, n: NopOut) {
        if n.ttt != RESERVED_TAG {
            // The answer to our ping.
            if self.ping.is_some_and(|(t, _)| t == n.ttt) {
                self.ping = None;
            }
            return;
        }
        if n.itt == RESERVED_TAG {
            return;
        }
        let max_seg =
            self.params_ref()
                .map_or(8192, |p| p.initiator_max_recv_data_segment_length) as usize;
        let data = n.data.slice(..n.data.len().min(max_seg));
        let stat_sn = self.next_stat_sn();
        let nop = NopIn {
            lun: n.lun,
            itt: n.itt,
            ttt: RESERVED_TAG,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            data,
        };
        self.send(Pdu::NopIn(nop));
    }

    fn abort_itts(&mut self, itts: Vec<u32>) {
        if itts.is_empty() {
            return;
        }
        for itt in &itts {
            if let Some(t) = self.writes.remove(itt) {
                self.budget_used = self.budget_used.saturating_sub(t.charged as usize);
                self.release_slot(t.slot);
            }
            if let Some(r) = self.executing.remove(itt) {
                self.release_slot(r.slot);
            }
            // Remembered so late Data-Out and the completion are swallowed quietly; the set is
            // bounded because a misbehaving initiator could abort without end.
            if self.aborted.len() >= 4096 {
                self.aborted.clear();
            }
            self.aborted.insert(*itt);
        }
        self.r2t_queue.retain(|i| !itts.contains(i));
        self.events.push_back(Event::Aborted(itts));
        self.pump_r2t_queue();
    }

    /// Aborts the tasks on the LUN numbered `lun` (every task when `None`) for a reason
    /// outside this connection: a PREEMPT AND ABORT by another I_T nexus, or the
    /// reinstatement of this session. They get no response (TAS=0); late Data-Out and their
    /// completions are swallowed, and [`super::Event::Aborted`] names them so the driver
    /// stops them.
    pub fn abort_tasks(&mut self, lun: Option<u16>) {
        let on = |l: &crate::pdu::Lun| lun.is_none() || l.index() == lun;
        let mut v: Vec<u32> = self
            .writes
            .iter()
            .filter(|(_, t)| on(&t.cmd.lun))
            .map(|(i, _)| *i)
            .collect();
        v.extend(
            self.executing
                .iter()
                .filter(|(_, e)| on(&e.lun))
                .map(|(i, _)| *i),
        );
        self.abort_itts(v);
    }

    fn tasks_on_lun(&self, lun: crate::pdu::Lun) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .writes
            .iter()
            .filter(|(_, t)| t.cmd.lun == lun)
            .map(|(i, _)| *i)
            .collect();
        v.extend(
            self.executing
                .iter()
                .filter(|(_, e)| e.lun == lun)
                .map(|(i, _)| *i),
        );
        v
    }

    fn task_mgmt(&mut self, t: TaskMgmtRequest) {
        let response = match t.function {
            TmfFunction::AbortTask => {
                let r = t.referenced_task_tag;
                if self.writes.contains_key(&r) || self.executing.contains_key(&r) {
                    self.abort_itts(vec![r]);
                    TmfResponse::Complete
                } else if seq::le(
                    self.exp_cmd_sn.wrapping_sub(self.cfg.cmd_window),
                    t.ref_cmd_sn,
                ) && seq::lt(t.ref_cmd_sn, t.cmd_sn.max(self.exp_cmd_sn))
                {
                    // Already completed (or never received but within the window): the
                    // task no longer exists at the target, which is what ABORT TASK wants.
                    TmfResponse::Complete
                } else {
                    TmfResponse::TaskDoesNotExist
                }
            }
            TmfFunction::AbortTaskSet | TmfFunction::ClearTaskSet => {
                let v = self.tasks_on_lun(t.lun);
                self.abort_itts(v);
                if t.function == TmfFunction::ClearTaskSet {
                    self.events.push_back(Event::Reset {
                        function: t.function,
                        lun: t.lun,
                    });
                }
                TmfResponse::Complete
            }
            TmfFunction::LogicalUnitReset => {
                let v = self.tasks_on_lun(t.lun);
                self.abort_itts(v);
                self.events.push_back(Event::Reset {
                    function: t.function,
                    lun: t.lun,
                });
                TmfResponse::Complete
            }
            TmfFunction::TargetWarmReset | TmfFunction::TargetColdReset => {
                let mut v: Vec<u32> = self.writes.keys().copied().collect();
                v.extend(self.executing.keys().copied());
                self.abort_itts(v);
                self.events.push_back(Event::Reset {
                    function: t.function,
                    lun: t.lun,
                });
                TmfResponse::Complete
            }
            TmfFunction::TaskReassign => TmfResponse::ReassignmentNotSupported,
            TmfFunction::ClearAca | TmfFunction::Other(_) => TmfResponse::NotSupported,
        };
        let stat_sn = self.next_stat_sn();
        let resp = TaskMgmtResponse {
            response,
            itt: t.itt,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
        };
        self.send(Pdu::TaskMgmtResponse(resp));
        if t.function == TmfFunction::TargetColdReset {
            self.close(CloseReason::ColdReset);
        }
    }

    fn text(&mut self, t: TextRequest) {
        let max_seg = self
            .params_ref()
            .map_or(8192, |p| p.initiator_max_recv_data_segment_length)
            .max(512) as usize;
        // Continuation of a long answer.
        if t.ttt != RESERVED_TAG {
            match self.pending_text.take() {
                Some(p) if p.ttt == t.ttt && p.itt == t.itt => {
                    self.send_text_piece(t.itt, p.rest, max_seg);
                }
                _ => self.reject(RejectReason::InvalidPduField, &Pdu::TextRequest(t)),
            }
            return;
        }
        let pairs = match text::parse_text(&t.data) {
            Ok(p) => p,
            Err(_) => {
                self.reject(RejectReason::ProtocolError, &Pdu::TextRequest(t));
                return;
            }
        };
        let asks_targets = pairs.iter().any(|kv| kv.key == "SendTargets");
        let targets = match self.answers.send_targets.take() {
            Some(v) => v,
            None if asks_targets => {
                let initiator = self
                    .params_ref()
                    .map(|p| p.initiator_name.clone())
                    .unwrap_or_default();
                self.ask(Question::SendTargets { initiator }, Pdu::TextRequest(t));
                return;
            }
            None => Vec::new(),
        };
        let mut answer = Vec::new();
        for kv in &pairs {
            if kv.key == "SendTargets" {
                let Some(params) = self.params_ref() else {
                    return;
                };
                answer.extend(login::send_targets_response(&kv.value, params, &targets));
            } else {
                answer.extend(text::encode_text(&[text::KeyValue::new(
                    kv.key.clone(),
                    "NotUnderstood",
                )]));
            }
        }
        self.send_text_piece(t.itt, Bytes::from(answer), max_seg);
    }

    fn send_text_piece(&mut self, itt: u32, data: Bytes, max_seg: usize) {
        let (piece, rest) = if data.len() > max_seg {
            (data.slice(..max_seg), data.slice(max_seg..))
        } else {
            (data, Bytes::new())
        };
        let more = !rest.is_empty();
        let ttt = if more {
            let ttt = self.alloc_ttt();
            self.pending_text = Some(PendingText { itt, ttt, rest });
            ttt
        } else {
            RESERVED_TAG
        };
        let stat_sn = self.next_stat_sn();
        let resp = TextResponse {
            final_: !more,
            continue_: more,
            lun: Default::default(),
            itt,
            ttt,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            data: piece,
        };
        self.send(Pdu::TextResponse(resp));
    }

    fn logout(&mut self, l: LogoutRequest) {
        let response = match l.reason {
            LogoutReason::CloseSession | LogoutReason::CloseConnection => {
                LogoutResponseCode::Success
            }
            LogoutReason::RemoveConnectionForRecovery => LogoutResponseCode::RecoveryNotSupported,
        };
        let stat_sn = self.next_stat_sn();
        let resp = LogoutResponse {
            response,
            itt: l.itt,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            time2wait: 0,
            time2retain: 0,
        };
        self.send(Pdu::LogoutResponse(resp));
        if response == LogoutResponseCode::Success {
            self.logout_sent = true;
            let v: Vec<u32> = self.writes.keys().copied().collect();
            self.abort_itts(v);
            self.close(CloseReason::Logout);
        }
    }
}
