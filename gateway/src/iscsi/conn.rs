//! One iSCSI connection: the iSCSI [`Handler`] of the connection driver. It answers the
//! core's login questions from the shared target list, registers the session once logged in,
//! executes its SCSI commands on the logical units and applies task management resets.

use std::net::SocketAddr;
use std::sync::Arc;

use proto_iscsi::login::LoginError;
use proto_iscsi::pdu::TmfFunction;
use proto_iscsi::scsi::{absent_lun, Completion, Nexus};
use proto_iscsi::session::{Answer, CloseReason, Command, Connection, Event, Question};
use rand::RngCore;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::live::{nexus_key, Control, Session};
use super::shared::{IscsiShared, SessionInfo, Target};
use crate::counters::IoCounters;
use crate::driver::{self, Commands, Ended, Flow, Handler};
use crate::metrics::Protocol;

/// The portal a connection arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Portal {
    /// iSCSI target portal group tag.
    pub tpgt: u16,
    /// SCSI relative target port identifier.
    pub relative_port: u16,
}

struct Logged {
    nexus: Arc<Nexus>,
    target: Option<String>,
    counters: Arc<IoCounters>,
}

/// The iSCSI side of one connection.
struct Iscsi {
    shared: Arc<IscsiShared>,
    peer: SocketAddr,
    portal: Portal,
    logged: Option<Logged>,
    /// This connection's id among the live ones.
    id: u64,
    /// Old sessions of this login's I_T nexus still to close before it may go on.
    reinstating: usize,
}

/// Serves one connection until logout, error, peer close or shutdown.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<IscsiShared>,
    portal: Portal,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut cfg = shared.conn_cfg.clone();
    cfg.portal_group_tag = portal.tpgt;
    let mut seed = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut seed);
    let conn = Connection::new_at(cfg, seed, std::time::Instant::now());
    let (tx, rx) = mpsc::unbounded_channel();
    let id = shared.live.register(tx);
    let handler = Iscsi {
        shared,
        peer,
        portal,
        logged: None,
        id,
        reinstating: 0,
    };
    driver::drive(stream, conn, handler, Some(rx), shutdown).await;
}

impl Handler for Iscsi {
    type Core = Connection;
    type Done = (u32, Completion, u32);
    type Control = Control;

    const MAX_IN_FLIGHT: usize = 256;

    fn on_event(&mut self, conn: &mut Connection, ev: Event, commands: &mut Commands<Self::Done>) {
        let shared = &self.shared;
        match ev {
            Event::Question(Question::Reinstate {
                isid,
                initiator,
                target,
            }) => {
                let key = nexus_key(isid, &initiator, &target);
                self.reinstating = shared.live.reinstate(self.id, &key);
                if self.reinstating == 0 {
                    conn.answer(Answer::Reinstated);
                } else {
                    tracing::info!(%initiator, %target, isid = %hex::encode(isid), peer = %self.peer, "iSCSI session reinstatement: closing the old session first");
                }
            }
            Event::Question(q) => conn.answer(shared.answer(q)),
            Event::LoggedIn(s) => {
                let p = &s.params;
                let isid = hex::encode(s.isid);
                let nexus = Nexus {
                    id: shared.next_nexus(),
                    initiator_port: format!("{},i,0x{isid}", p.initiator_name),
                    target_port_group: crate::lu::NODE_PORT_GROUP,
                    relative_port: self.portal.relative_port,
                };
                tracing::info!(initiator = %p.initiator_name, target = ?p.target_name, peer = %self.peer, "iSCSI login");
                let counters = Arc::new(IoCounters::default());
                if let Some(t) = &p.target_name {
                    shared.live.logged_in(
                        self.id,
                        Session {
                            key: nexus_key(s.isid, &p.initiator_name, t),
                            registrant: proto_iscsi::scsi::pr::registrant(&nexus),
                            target: t.clone(),
                        },
                    );
                    if let Ok(mut sessions) = shared.sessions.lock() {
                        sessions.insert(
                            nexus.id,
                            SessionInfo {
                                initiator: p.initiator_name.clone(),
                                target: t.clone(),
                                peer: self.peer.to_string(),
                                since_unix: crate::time::unix_now(),
                                counters: Arc::clone(&counters),
                            },
                        );
                    }
                }
                self.logged = Some(Logged {
                    nexus: Arc::new(nexus),
                    target: p.target_name.clone(),
                    counters,
                });
            }
            Event::Command(cmd) => {
                let Some(l) = &self.logged else { return };
                let target = l.target.as_ref().and_then(|t| shared.targets.get(t));
                let counters = Arc::clone(&l.counters);
                let itt = u64::from(cmd.itt);
                let f = command_future(cmd, target, Arc::clone(&l.nexus), counters);
                commands.push_keyed(itt, f);
            }
            // Aborted tasks really stop: a command reusing the tag gets its own result.
            Event::Aborted(itts) => {
                for itt in itts {
                    commands.cancel(u64::from(itt));
                }
            }
            Event::Reset { function, lun } => {
                if let Some(t) = self
                    .logged
                    .as_ref()
                    .and_then(|l| l.target.as_ref())
                    .and_then(|t| shared.targets.get(t))
                {
                    let lus: Vec<_> = match function {
                        TmfFunction::TargetWarmReset | TmfFunction::TargetColdReset => {
                            t.luns.values().cloned().collect()
                        }
                        _ => lun
                            .index()
                            .and_then(|i| t.luns.get(&i))
                            .cloned()
                            .into_iter()
                            .collect(),
                    };
                    for lu in lus {
                        lu.lock().reset();
                    }
                }
            }
            // The driver reads the reason from the core.
            Event::Close(_) => {}
        }
    }

    fn on_done(&mut self, conn: &mut Connection, (itt, c, used): Self::Done) {
        conn.complete(itt, &c, used);
    }

    fn on_control(
        &mut self,
        conn: &mut Connection,
        msg: Control,
        commands: &mut Commands<Self::Done>,
    ) -> Flow {
        match msg {
            Control::Reinstate => {
                conn.abort_tasks(None);
                self.drain_events(conn, commands);
                return Flow::Close("session reinstated by a new login");
            }
            Control::Reinstated => {
                self.reinstating = self.reinstating.saturating_sub(1);
                if self.reinstating == 0 {
                    conn.answer(Answer::Reinstated);
                }
            }
            Control::Abort { luns, done } => {
                for lun in luns {
                    conn.abort_tasks(Some(lun));
                }
                self.drain_events(conn, commands);
                let _ = done.send(());
            }
        }
        Flow::Continue
    }

    fn finish(self, _: &Connection, ended: &Ended<CloseReason>) {
        tracing::info!(peer = %self.peer, reason = ended.to_string().as_str(), "iSCSI connection closed");
        if let Ended::Core(CloseReason::LoginFailed(e)) = ended {
            self.shared
                .metrics
                .login_failed(Protocol::Iscsi, login_failure(e));
        }
        if let Some(l) = self.logged {
            if let Ok(mut sessions) = self.shared.sessions.lock() {
                sessions.remove(&l.nexus.id);
            }
            // I_T nexus loss: RESERVE(6) ends, persistent reservations stay (SPC-4).
            if let Some(t) = l.target.as_ref().and_then(|t| self.shared.targets.get(t)) {
                for lu in t.luns.values() {
                    lu.lock().nexus_lost(l.nexus.id);
                }
            }
        }
        // Last: a login waiting for this session to end may go on now.
        self.shared.live.finish(self.id);
    }
}

impl Iscsi {
    /// Handles the events the core raised outside the driver's own loop (aborts asked from
    /// elsewhere), so their commands are stopped before this returns.
    fn drain_events(
        &mut self,
        conn: &mut Connection,
        commands: &mut Commands<(u32, Completion, u32)>,
    ) {
        while let Some(ev) = conn.poll_event() {
            self.on_event(conn, ev, commands);
        }
    }
}

type CommandFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = (u32, Completion, u32)> + Send>>;

fn command_future(
    cmd: Command,
    target: Option<&Target>,
    nexus: Arc<Nexus>,
    counters: Arc<IoCounters>,
) -> CommandFuture {
    let lu = target.and_then(|t| cmd.lun.index().and_then(|i| t.luns.get(&i)).cloned());
    // The LUN inventory is only needed to answer for a LUN that does not exist.
    let lun_ids: Vec<u16> = match (&lu, target) {
        (None, Some(t)) => t.luns.keys().copied().collect(),
        _ => Vec::new(),
    };
    Box::pin(async move {
        let (c, used) = match lu {
            Some(lu) => {
                let expected_out = if cmd.write { cmd.expected_len } else { 0 };
                lu.execute(&nexus, &cmd.cdb, cmd.data_out, expected_out, &counters)
                    .await
            }
            None => {
                counters.other();
                (absent_lun(&cmd.cdb, &lun_ids), 0)
            }
        };
        (cmd.itt, c, used)
    })
}

/// The `kind` label of a failed login.
fn login_failure(e: &LoginError) -> &'static str {
    match e {
        LoginError::Chap(_) => "chap",
        LoginError::AuthRequired => "auth_required",
        LoginError::NotAuthorized => "not_authorized",
        LoginError::TargetNotFound => "target_not_found",
        _ => "other",
    }
}
