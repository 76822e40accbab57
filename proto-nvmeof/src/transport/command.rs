//! Command intake for a [`Connection`]: data placement (in-capsule or R2T/H2CData),
//! fabrics commands, dispatch to the admin controller or the I/O path, and the gateway's
//! completions coming back.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{Command, Connection, Event, Queue, Receive, Stage};
use crate::controller::Controller;
use crate::cqe::Response;
use crate::fabrics::{
    connect_sqe_offset, fctype, invalid_param_dw0, Connect, ConnectDataError, CATTR_DISABLE_SQFLOW,
};
use crate::io::{self, IoResult, IoTag, Start};
use crate::pdu::{self, DataPdu, Pdu, PduError, R2t};
use crate::registry::{Admission, ConnectRequest};
use crate::reservation::Requester;
use crate::sqe::{DataPlacement, Direction, Sqe, OPC_FABRICS};
use crate::status::Status;

impl Connection {
    fn in_capsule_limit(&self) -> u32 {
        match self.queue {
            Queue::Admin(_) => self.cfg.admin_in_capsule,
            Queue::Io { .. } => self.cfg.io_in_capsule,
            _ => self.cfg.admin_in_capsule.max(self.cfg.io_in_capsule),
        }
    }

    fn reject(&mut self, cid: u16, status: Status) -> Result<(), PduError> {
        self.send_response(Response::status(cid, status), 0);
        Ok(())
    }

    pub(super) fn on_capsule(
        &mut self,
        now: Instant,
        sqe: Sqe,
        data: Bytes,
    ) -> Result<(), PduError> {
        let cid = sqe.cid();
        self.bump_sqhd();
        if self.commands.contains_key(&cid) {
            return self.reject(cid, Status::CID_CONFLICT.dnr());
        }
        let bound = matches!(self.queue, Queue::Admin(_) | Queue::Io { .. });
        let is_connect = sqe.opcode() == OPC_FABRICS && sqe.fctype() == fctype::CONNECT;
        if !bound && !is_connect {
            return self.reject(cid, Status::COMMAND_SEQUENCE_ERROR.dnr());
        }
        let dir = sqe.direction();
        if dir == Direction::Bidirectional {
            return self.reject(cid, Status::INVALID_FIELD.dnr());
        }
        let max = self.cfg.max_transfer();
        match sqe.placement() {
            None => self.reject(cid, Status::SGL_INVALID_TYPE.dnr()),
            Some(DataPlacement::InCapsule(len)) => {
                if dir != Direction::HostToController {
                    return self.reject(cid, Status::SGL_INVALID_TYPE.dnr());
                }
                if len > self.in_capsule_limit() {
                    return self.reject(cid, Status::SGL_INVALID_OFFSET.dnr());
                }
                if data.len() != len as usize {
                    return self.reject(cid, Status::SGL_INVALID_DATA.dnr());
                }
                self.dispatch(now, sqe, data);
                Ok(())
            }
            Some(DataPlacement::Transport(len)) => {
                if !data.is_empty() {
                    return self.reject(cid, Status::SGL_INVALID_DATA.dnr());
                }
                if len > max {
                    return self.reject(cid, Status::INVALID_FIELD.dnr());
                }
                if dir == Direction::HostToController {
                    self.commands.insert(
                        cid,
                        Command {
                            sqe,
                            stage: Stage::WaitingForR2t,
                        },
                    );
                    self.r2t_waiting.push_back(cid);
                    self.pump_r2t();
                } else {
                    self.dispatch(now, sqe, Bytes::new());
                }
                Ok(())
            }
            Some(DataPlacement::None) => {
                if !data.is_empty() {
                    return self.reject(cid, Status::SGL_INVALID_DATA.dnr());
                }
                self.dispatch(now, sqe, Bytes::new());
                Ok(())
            }
        }
    }

    fn ttag(&mut self) -> u16 {
        self.next_ttag = self.next_ttag.wrapping_add(1);
        self.next_ttag
    }

    /// Starts R2T transfers for waiting writes while buffer slots are free.
    fn pump_r2t(&mut self) {
        while self.r2t_active < self.cfg.max_r2t_commands.max(1) {
            let Some(cid) = self.r2t_waiting.pop_front() else {
                return;
            };
            let ttag = self.ttag();
            let max_r2t = (self.cfg.max_r2t_len as usize).max(4096);
            let Some(cmd) = self.commands.get_mut(&cid) else {
                continue;
            };
            let total = cmd.sqe.sgl().length as usize;
            let first = total.min(max_r2t);
            cmd.stage = Stage::Receiving(Receive {
                buf: Vec::with_capacity(total),
                total,
                r2t_end: first,
                ttag,
            });
            self.r2t_active += 1;
            self.send_r2t(cid, ttag, 0, first);
        }
    }

    fn send_r2t(&mut self, cid: u16, ttag: u16, offset: usize, length: usize) {
        let r2t = Pdu::R2t(R2t {
            cccid: cid,
            ttag,
            offset: offset as u32,
            length: length as u32,
        });
        let opts = self.encode_options();
        pdu::encode(&r2t, &opts, &mut self.out);
    }

    pub(super) fn on_h2c_data(&mut self, now: Instant, d: DataPdu) -> Result<(), PduError> {
        let cid = d.cccid;
        let out_of_range = PduError::DataOutOfRange { cid };
        if d.data.len() > self.cfg.maxh2cdata as usize {
            return Err(PduError::DataLimitExceeded {
                len: d.data.len(),
                max: self.cfg.maxh2cdata,
            });
        }
        let max_r2t = (self.cfg.max_r2t_len as usize).max(4096);
        let Some(Command {
            stage: Stage::Receiving(r),
            ..
        }) = self.commands.get_mut(&cid)
        else {
            if self.dropped_ttags.contains(&d.ttag) {
                // Data for a write aborted by Preempt and Abort, sent before the host heard.
                return Ok(());
            }
            return Err(out_of_range);
        };
        if d.ttag != r.ttag
            || d.offset as usize != r.buf.len()
            || r.buf.len() + d.data.len() > r.r2t_end
        {
            return Err(out_of_range);
        }
        r.buf.extend_from_slice(&d.data);
        if r.buf.len() < r.r2t_end {
            return Ok(());
        }
        if r.r2t_end < r.total {
            let offset = r.r2t_end;
            let length = (r.total - offset).min(max_r2t);
            r.r2t_end = offset + length;
            let ttag = self.ttag();
            if let Some(Command {
                stage: Stage::Receiving(r),
                ..
            }) = self.commands.get_mut(&cid)
            {
                r.ttag = ttag;
            }
            self.send_r2t(cid, ttag, offset, length);
            return Ok(());
        }
        let Some(cmd) = self.commands.remove(&cid) else {
            return Ok(());
        };
        let data = match cmd.stage {
            Stage::Receiving(r) => Bytes::from(r.buf),
            _ => Bytes::new(),
        };
        self.r2t_active = self.r2t_active.saturating_sub(1);
        self.dispatch(now, cmd.sqe, data);
        self.pump_r2t();
        Ok(())
    }

    /// Executes a command whose data is complete.
    fn dispatch(&mut self, now: Instant, sqe: Sqe, data: Bytes) {
        let cid = sqe.cid();
        self.commands.remove(&cid);
        let max_data = match sqe.direction() {
            Direction::ControllerToHost => sqe.sgl().length as usize,
            _ => 0,
        };
        if self.auth.blocks(&sqe) {
            return self.send_response(Response::status(cid, Status::AUTH_REQUIRED.dnr()), 0);
        }
        if sqe.opcode() == OPC_FABRICS {
            return self.fabrics(now, sqe, data);
        }
        let cfg = Arc::clone(&self.cfg);
        match &mut self.queue {
            Queue::Admin(ctrl) => {
                let resps = ctrl.handle(now, &sqe, &data);
                for r in resps {
                    let limit = if r.cid == cid { max_data } else { 0 };
                    self.send_response(r, limit);
                }
            }
            Queue::Io {
                subsys,
                requester,
                write_cache,
            } => {
                let write_through = !write_cache.enabled();
                match io::start(&sqe, data, subsys, *requester, &cfg, write_through) {
                    Start::Done(r) => {
                        if r.status.is_ana_path() {
                            self.events.push_back(Event::PathRefused {
                                nsid: sqe.nsid(),
                                status: r.status,
                            });
                        }
                        self.send_response(r, max_data)
                    }
                    Start::Issue(op, pending) => {
                        self.commands.insert(
                            cid,
                            Command {
                                sqe,
                                stage: Stage::Executing(pending),
                            },
                        );
                        self.events.push_back(Event::Io {
                            tag: IoTag(cid),
                            nsid: sqe.nsid(),
                            op,
                        });
                    }
                }
            }
            _ => self.send_response(
                Response::status(cid, Status::COMMAND_SEQUENCE_ERROR.dnr()),
                0,
            ),
        }
    }

    fn fabrics(&mut self, now: Instant, sqe: Sqe, data: Bytes) {
        let cid = sqe.cid();
        let resp = match (sqe.fctype(), &mut self.queue) {
            (fctype::CONNECT, _) => return self.connect(sqe, &data),
            (fctype::PROPERTY_GET, Queue::Admin(c)) => {
                c.touch(now);
                c.property_get(&sqe)
            }
            (fctype::PROPERTY_SET, Queue::Admin(c)) => {
                c.touch(now);
                c.property_set(&sqe)
            }
            (fctype::AUTH_SEND | fctype::AUTH_RECEIVE, _) => {
                return self.authenticate(now, sqe, &data)
            }
            (fctype::PROPERTY_GET | fctype::PROPERTY_SET, _) => {
                Response::status(cid, Status::INVALID_FIELD.dnr())
            }
            _ => Response::status(cid, Status::INVALID_OPCODE.dnr()),
        };
        self.send_response(resp, 0);
    }

    fn connect(&mut self, sqe: Sqe, data: &Bytes) {
        let cid = sqe.cid();
        let refuse = |status: Status, in_data: bool, off: u16| Response {
            cid,
            status: status.dnr(),
            result: u64::from(invalid_param_dw0(in_data, off)),
            data: Bytes::new(),
        };
        if !matches!(self.queue, Queue::Unbound) {
            return self.send_response(
                Response::status(cid, Status::COMMAND_SEQUENCE_ERROR.dnr()),
                0,
            );
        }
        let c = match Connect::parse(&sqe, data) {
            Ok(c) => c,
            Err(ConnectDataError::Short(_)) => {
                return self.send_response(Response::status(cid, Status::SGL_INVALID_DATA.dnr()), 0)
            }
            Err(ConnectDataError::BadNqn(off)) => {
                return self.send_response(refuse(Status::CONNECT_INVALID_PARAM, true, off), 0)
            }
        };
        let mqes = self.cfg.max_queue_entries.saturating_sub(1);
        let bad = if c.recfmt != 0 {
            Some(Response::status(cid, Status::CONNECT_FORMAT.dnr()))
        } else if c.sqsize == 0 || c.sqsize > mqes {
            Some(refuse(
                Status::CONNECT_INVALID_PARAM,
                false,
                connect_sqe_offset::SQSIZE,
            ))
        } else if c.qid > self.cfg.max_io_queues {
            Some(refuse(
                Status::CONNECT_INVALID_PARAM,
                false,
                connect_sqe_offset::QID,
            ))
        } else {
            None
        };
        if let Some(r) = bad {
            return self.send_response(r, 0);
        }
        self.qid = c.qid;
        self.sqsize = c.sqsize;
        self.sqhd = 1; // the Connect itself consumed entry 0
        self.sqflow_disabled = c.cattr & CATTR_DISABLE_SQFLOW != 0;
        self.commands.insert(
            cid,
            Command {
                sqe,
                stage: Stage::Connecting,
            },
        );
        self.queue = Queue::Connecting {
            cid,
            connect: c.clone(),
        };
        self.events
            .push_back(Event::Connect(ConnectRequest { connect: c }));
    }

    /// Completes the pending Connect with the registry's decision, at time `now`.
    pub fn connect_done(&mut self, now: Instant, admission: Admission) {
        let Queue::Connecting { cid, connect } = std::mem::replace(&mut self.queue, Queue::Unbound)
        else {
            return;
        };
        self.commands.remove(&cid);
        let resp = match admission {
            Admission::Admin {
                cntlid,
                target,
                write_cache,
            } if connect.qid == 0 => {
                let atr = match &target {
                    crate::registry::AdminTarget::Io(s) => self.auth.require(s, &connect),
                    crate::registry::AdminTarget::Discovery(_) => 0,
                };
                let ctrl = Controller::new(
                    Arc::clone(&self.cfg),
                    cntlid,
                    &connect,
                    target,
                    write_cache,
                    now,
                );
                self.queue = Queue::Admin(Box::new(ctrl));
                self.cntlid = Some(cntlid);
                Response::dw0(cid, u32::from(cntlid) | atr)
            }
            Admission::Io {
                cntlid,
                subsystem,
                write_cache,
            } if connect.qid != 0 => {
                let atr = self.auth.require(&subsystem, &connect);
                self.queue = Queue::Io {
                    subsys: subsystem,
                    write_cache,
                    requester: Requester {
                        host_id: connect.host_id,
                        cntlid,
                    },
                };
                self.cntlid = Some(cntlid);
                Response::dw0(cid, u32::from(cntlid) | atr)
            }
            Admission::Refused { status, dw0 } => Response {
                cid,
                status,
                result: u64::from(dw0),
                data: Bytes::new(),
            },
            _ => Response::status(cid, Status::INTERNAL),
        };
        self.send_response(resp, 0);
    }

    /// Completes I/O command `tag` with the volume's `result`. Returns false when no such
    /// command is waiting (e.g. a stale or duplicate completion).
    pub fn io_done(&mut self, tag: IoTag, result: IoResult) -> bool {
        match self.commands.get(&tag.0) {
            Some(Command {
                stage: Stage::Executing(_),
                ..
            }) => {}
            _ => return false,
        }
        let Some(cmd) = self.commands.remove(&tag.0) else {
            return false;
        };
        let Stage::Executing(pending) = cmd.stage else {
            return false;
        };
        let ana = match &self.queue {
            Queue::Io { subsys, .. } => subsys.ana_enabled,
            _ => false,
        };
        let max_data = match cmd.sqe.direction() {
            Direction::ControllerToHost => cmd.sqe.sgl().length as usize,
            _ => 0,
        };
        let resp = io::finish(tag.0, pending, result, ana);
        self.send_response(resp, max_data);
        true
    }

    /// Aborts the I/O commands of namespace `nsid` (another host's Reservation Acquire with
    /// Preempt and Abort preempted this host): each completes at once with Command Aborted
    /// due to Preempt and Abort, writes still receiving data stop. Returns the tags of those
    /// that were executing: the caller must stop them, and their completions are ignored.
    pub fn abort_commands(&mut self, nsid: u32) -> Vec<IoTag> {
        if !matches!(self.queue, Queue::Io { .. }) {
            return Vec::new();
        }
        let mut cids: Vec<u16> = self
            .commands
            .iter()
            .filter(|(_, c)| c.sqe.nsid() == nsid && !matches!(c.stage, Stage::Connecting))
            .map(|(cid, _)| *cid)
            .collect();
        cids.sort_unstable();
        let mut executing = Vec::new();
        for cid in cids {
            let Some(cmd) = self.commands.remove(&cid) else {
                continue;
            };
            match cmd.stage {
                Stage::WaitingForR2t => self.r2t_waiting.retain(|c| *c != cid),
                Stage::Receiving(r) => {
                    self.r2t_active = self.r2t_active.saturating_sub(1);
                    if self.dropped_ttags.len() >= 64 {
                        self.dropped_ttags.pop_front();
                    }
                    self.dropped_ttags.push_back(r.ttag);
                }
                Stage::Executing(_) => executing.push(IoTag(cid)),
                Stage::Connecting => {}
            }
            self.send_response(Response::status(cid, Status::ABORTED_PREEMPT), 0);
        }
        self.pump_r2t();
        executing
    }

    /// Number of commands received and not yet completed (excluding held AERs).
    pub fn in_flight(&self) -> usize {
        self.commands.len()
    }
}
