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
    /// This node's ALUA target port group (`[node] path_group`).
    pub port_group: u16,
    /// SCSI relative target port identifier, unique across the nodes
    /// (`crate::paths::ids::relative_port`).
    pub relative_port: u16,
}

/// A logged-in session's nexus. Dropping it releases what the nexus held (its entry in the
/// live sessions, its RESERVE(6) and unit attentions on every LU of its target): it runs however
/// the connection task ends, a panic included.
struct Logged {
    shared: Arc<IscsiShared>,
    nexus: Arc<Nexus>,
    target: Option<String>,
    counters: Arc<IoCounters>,
}

impl Drop for Logged {
    fn drop(&mut self) {
        let id = self.nexus.id;
        self.shared
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(t) = self
            .target
            .as_ref()
            .and_then(|t| self.shared.targets.get(t))
        {
            for lu in t.luns.values() {
                lu.lock().nexus_lost(id);
            }
        }
    }
}

/// This connection's entry among the live ones. Dropping it (however the connection task
/// ends, a panic included) ends the entry, so a login waiting to reinstate the session goes on.
struct Live {
    shared: Arc<IscsiShared>,
    id: u64,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.shared.live.finish(self.id);
    }
}

/// The iSCSI side of one connection. Fields drop in order: the nexus (`logged`) is released
/// before the live entry (`_live`).
struct Iscsi {
    shared: Arc<IscsiShared>,
    peer: SocketAddr,
    /// The local address the connection came in on.
    local: SocketAddr,
    portal: Portal,
    logged: Option<Logged>,
    _live: Live,
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
    let local = stream
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let handler = Iscsi {
        _live: Live {
            shared: Arc::clone(&shared),
            id,
        },
        shared,
        peer,
        local,
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
                    target_port_group: self.portal.port_group,
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
                                portal: self.local.to_string(),
                                relative_port: self.portal.relative_port,
                                since_unix: crate::time::unix_now(),
                                counters: Arc::clone(&counters),
                            },
                        );
                    }
                }
                self.logged = Some(Logged {
                    shared: Arc::clone(shared),
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
        // Dropping `self` now releases the nexus (`Logged`), then the live entry (`Live`), so a
        // login waiting for this session to end goes on last.
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use blockstore::engine::{create, CreateOptions, OpenOptions};
    use blockstore::sim::SimStorage;
    use bytes::Bytes;
    use proto_iscsi::login::TargetAuth;
    use proto_iscsi::scsi::Status;

    use super::*;
    use crate::lu::LuHandle;

    const IQN: &str = "iqn.2026-11.io.tandem:panic";

    fn nexus(id: u64) -> Nexus {
        Nexus {
            id,
            initiator_port: format!("iqn.2026-11.test:host{id},i,0x00023d000001"),
            target_port_group: 1,
            relative_port: 1,
        }
    }

    /// Runs `cdb` for `n` after clearing its power-on unit attention; returns the status.
    async fn run(lu: &LuHandle, n: &Nexus, cdb: &[u8], data: &[u8]) -> Status {
        let c = IoCounters::default();
        let tur = [0u8; 6];
        let _ = lu.execute(n, &tur, Bytes::new(), 0, &c).await;
        let out = Bytes::copy_from_slice(data);
        let (done, _) = lu.execute(n, cdb, out, data.len() as u32, &c).await;
        done.status
    }

    #[tokio::test]
    async fn a_connection_task_that_panics_still_releases_its_nexus() {
        let disk = SimStorage::new();
        create(
            &disk,
            &CreateOptions {
                capacity_bytes: 1 << 20,
                wal_bytes: 1 << 20,
                ..CreateOptions::default()
            },
        )
        .unwrap();
        let volume = blockstore::Volume::open_storage(Arc::new(disk), OpenOptions::default())
            .await
            .unwrap();
        let served = Arc::new(crate::volumes::ServedVolume {
            name: "v".into(),
            volume,
        });
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let target = crate::target::VolumeTarget::open(served, &metrics)
            .await
            .unwrap();
        let paths = crate::paths::PathCell::new(target.volume.volume.engine(), 1, vec![1], false);
        let lu = LuHandle::new(target, paths, vec![0]);
        let mut targets = HashMap::new();
        targets.insert(
            IQN.to_string(),
            Target {
                iqn: IQN.into(),
                auth: TargetAuth::None,
                luns: BTreeMap::from([(0, Arc::clone(&lu))]),
                allowed_initiators: None,
            },
        );
        let shared = Arc::new(IscsiShared::new(
            targets,
            TargetAuth::None,
            Vec::new(),
            Default::default(),
            metrics,
        ));
        let (a, b) = (nexus(1), nexus(2));
        // Nexus 1 takes RESERVE(6): nexus 2's writes conflict.
        assert_eq!(
            run(&lu, &a, &[0x16, 0, 0, 0, 0, 0], &[]).await,
            Status::Good
        );
        let write10 = [0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(
            run(&lu, &b, &write10, &[1u8; 512]).await,
            Status::ReservationConflict
        );
        shared.sessions.lock().unwrap().insert(
            a.id,
            SessionInfo {
                initiator: "iqn.2026-11.test:host1".into(),
                target: IQN.into(),
                peer: "127.0.0.1:1".into(),
                portal: "127.0.0.1:3260".into(),
                relative_port: 1,
                since_unix: 0,
                counters: Arc::default(),
            },
        );
        // The connection is live with a session; a second login of the same nexus waits for
        // it to end (session reinstatement).
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let id = shared.live.register(tx);
        let key = nexus_key([0, 1, 2, 3, 4, 5], "iqn.2026-11.test:host1", IQN);
        shared.live.logged_in(
            id,
            Session {
                key: key.clone(),
                registrant: proto_iscsi::scsi::pr::registrant(&a),
                target: IQN.into(),
            },
        );
        let (wtx, mut wrx) = tokio::sync::mpsc::unbounded_channel();
        let waiter = shared.live.register(wtx);
        assert_eq!(shared.live.reinstate(waiter, &key), 1);
        let handler = Iscsi {
            _live: Live {
                shared: Arc::clone(&shared),
                id,
            },
            id,
            reinstating: 0,
            shared: Arc::clone(&shared),
            peer: "127.0.0.1:1".parse().unwrap(),
            local: "127.0.0.1:3260".parse().unwrap(),
            portal: Portal {
                tpgt: 1,
                port_group: 1,
                relative_port: 1,
            },
            logged: Some(Logged {
                shared: Arc::clone(&shared),
                nexus: Arc::new(a),
                target: Some(IQN.into()),
                counters: Arc::default(),
            }),
        };
        let task = tokio::spawn(async move {
            let _handler = handler;
            panic!("injected panic in a connection task");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(shared.sessions.lock().unwrap().is_empty());
        assert!(
            matches!(wrx.try_recv(), Ok(Control::Reinstated)),
            "the login waiting to reinstate the panicked session goes on"
        );
        assert_eq!(
            run(&lu, &b, &write10, &[1u8; 512]).await,
            Status::Good,
            "the RESERVE(6) of the panicked connection's nexus is released"
        );
    }
}
