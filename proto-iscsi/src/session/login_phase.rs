//! The login phase of a connection: Login Request PDUs go through the pure login state
//! machine on the driver's answers (questions put the PDU aside), Login Responses go out, and
//! a completed login switches the connection to full feature phase.

use bytes::Bytes;

use super::ask::{Oracle, Question};
use super::{CloseReason, Connection, Event, Phase, ProtocolError};
use crate::login::{self, LoginOutcome};
use crate::pdu::Pdu;

impl Connection {
    /// One Login Request. The login step runs on the answers known so far; when it needs one
    /// more, the step is undone (the state is restored from a snapshot), the PDU is put aside
    /// and the question asked.
    pub(super) fn handle_login(&mut self, pdu: Pdu) {
        let Pdu::LoginRequest(req) = pdu else {
            self.close(CloseReason::Protocol(ProtocolError::BeforeLogin(
                pdu.opcode(),
            )));
            return;
        };
        let Phase::Login(state) = &mut self.phase else {
            return;
        };
        let snapshot = state.clone();
        let mut oracle = Oracle::new(&self.answers, &mut self.entropy);
        let step = state.step(
            &login::LoginRequest {
                transit: req.transit,
                cont: req.continue_,
                csg: req.csg.as_u8(),
                nsg: req.nsg.as_u8(),
                version_max: req.version_max,
                version_min: req.version_min,
                isid: req.isid,
                tsih: req.tsih,
                cid: req.cid,
                data: &req.data,
            },
            &mut oracle,
        );
        if let Some(mut q) = oracle.missing() {
            *state = snapshot;
            // Before a new normal session gets its TSIH, the old session of its I_T nexus
            // must be gone (session reinstatement).
            if let (Question::AllocateTsih, false, Some((initiator, Some(target)))) =
                (&q, self.answers.reinstated, &self.login_names)
            {
                q = Question::Reinstate {
                    isid: req.isid,
                    initiator: initiator.clone(),
                    target: target.clone(),
                };
            }
            self.ask(q, Pdu::LoginRequest(req));
            return;
        }
        self.answers = Default::default();
        // The first Login Request's CmdSN starts the session's command numbering; login
        // requests are immediate-like and do not advance it.
        self.exp_cmd_sn = req.cmd_sn;
        if step.outcome != LoginOutcome::Continue {
            // StatSN starts from the initiator's ExpStatSN on the final response.
        }
        if self.stat_sn == 0 {
            self.stat_sn = req.exp_stat_sn;
        }
        let r = step.response;
        let resp = crate::pdu::LoginResponse {
            transit: r.transit,
            continue_: r.cont,
            csg: crate::pdu::Stage::from_u8(r.csg).unwrap_or_default(),
            nsg: crate::pdu::Stage::from_u8(r.nsg).unwrap_or_default(),
            version_max: r.version_max,
            version_active: r.version_active,
            isid: r.isid,
            tsih: r.tsih,
            itt: req.itt,
            stat_sn: self.stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn(),
            status_class: r.status.class,
            status_detail: r.status.detail,
            data: Bytes::from(r.data),
        };
        self.stat_sn = self.stat_sn.wrapping_add(1);
        self.send(Pdu::LoginResponse(resp));
        match step.outcome {
            LoginOutcome::Continue => {}
            LoginOutcome::Failed(e) => self.close(CloseReason::LoginFailed(e)),
            LoginOutcome::FullFeature(success) => {
                let exp = self.exp_cmd_sn;
                self.enter_full_feature(&success, exp);
                self.events.push_back(Event::LoggedIn(success));
            }
        }
    }
}
