//! The connection's one timer, quinn-style: [`Connection::poll_timeout`] says when the driver
//! must next call [`Connection::handle_timeout`]. During login the connection closes when
//! login has not completed `login_timeout` after the connection started. In full feature phase an idle initiator is
//! pinged with NOP-In after `nop_interval`, and the connection closes when the ping goes
//! unanswered for `nop_timeout`.

use std::time::Instant;

use bytes::Bytes;

use super::{CloseReason, Connection, Phase};
use crate::pdu::{Lun, NopIn, Pdu, RESERVED_TAG};

impl Connection {
    /// When [`Connection::handle_timeout`] must next be called, if ever: the ping deadline
    /// while a ping is unanswered, otherwise the end of the idle interval.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.phase, Phase::Login(_)) {
            return self
                .started
                .and_then(|t| t.checked_add(self.cfg.login_timeout));
        }
        if !matches!(self.phase, Phase::FullFeature(_)) {
            return None;
        }
        match self.ping {
            Some((_, sent)) => sent.checked_add(self.cfg.nop_timeout),
            None => self
                .last_rx
                .and_then(|t| t.checked_add(self.cfg.nop_interval)),
        }
    }

    /// Acts on the timer at `now` (early calls do nothing): pings the initiator when it has
    /// been idle for `nop_interval`, closes ([`CloseReason::PingTimeout`]) when a ping went
    /// unanswered for `nop_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Login(_)) {
            if self
                .started
                .is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.login_timeout)
            {
                self.close(CloseReason::LoginTimeout);
            }
            return;
        }
        if !matches!(self.phase, Phase::FullFeature(_)) {
            return;
        }
        if let Some((_, sent)) = self.ping {
            if now.saturating_duration_since(sent) >= self.cfg.nop_timeout {
                self.close(CloseReason::PingTimeout);
            }
            return;
        }
        let Some(last) = self.last_rx else {
            return;
        };
        if now.saturating_duration_since(last) >= self.cfg.nop_interval {
            let ttt = self.alloc_ttt();
            self.ping = Some((ttt, now));
            let nop = NopIn {
                lun: Lun::default(),
                itt: RESERVED_TAG,
                ttt,
                stat_sn: self.stat_sn,
                exp_cmd_sn: self.exp_cmd_sn,
                max_cmd_sn: self.max_cmd_sn(),
                data: Bytes::new(),
            };
            self.send(Pdu::NopIn(nop));
        }
    }
}
