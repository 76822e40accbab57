//! One NVMe/TCP connection (one queue): the NVMe/TCP [`Handler`] of the connection driver.
//! It admits Connects against the shared registry, executes I/O commands on the volumes
//! concurrently, and applies what the node sends it (subsystem snapshots, reservation notices,
//! the end of the association).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use proto_nvmeof::{CloseReason, Connection, Event, IoResult, IoTag};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::exec;
use super::shared::{Control, NvmeShared};
use crate::counters::IoCounters;
use crate::driver::{self, Commands, Ended, Flow, Handler};
use crate::metrics::{Protocol, Refusal};
use crate::target::VolumeTarget;

/// The connection's entry in the node's shared state. Dropping it releases what the
/// connection held (its queue, and for an admin queue the whole association and its CNTLID):
/// it runs however the connection task ends, a panic included, so nothing is leaked.
struct Registration {
    shared: Arc<NvmeShared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.unregister_conn(self.id);
    }
}

/// The NVMe/TCP side of one connection.
struct Nvme {
    shared: Arc<NvmeShared>,
    peer: SocketAddr,
    id: u64,
    /// Released when the handler is dropped (after `finish`, or while a panic unwinds).
    _registration: Registration,
    counters: Arc<IoCounters>,
    volumes: HashMap<u32, Option<Arc<VolumeTarget>>>,
    /// The reservation identity of the host, known once its Connect is admitted.
    who: Option<block_core::Registrant>,
}

/// Serves one connection until the host closes it, a protocol error, the association ends
/// (keep-alive expiry, admin queue lost) or shutdown; in-flight commands finish first.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<NvmeShared>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let (id, counters) = shared.register_conn(ctl_tx, peer);
    let mut conn = Connection::new_at(Arc::clone(&shared.target), Instant::now());
    // DH-HMAC-CHAP challenges and exponents come from the operating system's generator.
    conn.seed_auth(rand::random());
    let handler = Nvme::new(shared, peer, id, counters);
    driver::drive(stream, conn, handler, Some(ctl_rx), shutdown).await;
}

impl Nvme {
    /// The handler of registered connection `id`.
    fn new(shared: Arc<NvmeShared>, peer: SocketAddr, id: u64, counters: Arc<IoCounters>) -> Nvme {
        Nvme {
            _registration: Registration {
                shared: Arc::clone(&shared),
                id,
            },
            shared,
            peer,
            id,
            counters,
            volumes: HashMap::new(),
            who: None,
        }
    }

    /// The volume target behind namespace `nsid` of the connection's subsystem (looked up once).
    fn target(&mut self, conn: &Connection, nsid: u32) -> Option<Arc<VolumeTarget>> {
        let shared = &self.shared;
        self.volumes
            .entry(nsid)
            .or_insert_with(|| conn.subnqn().and_then(|nqn| shared.volume(nqn, nsid)))
            .clone()
    }
}

impl Handler for Nvme {
    type Core = Connection;
    type Done = (IoTag, IoResult);
    type Control = Control;

    /// The largest queue a host may ask for.
    const MAX_IN_FLIGHT: usize = 1024;

    fn on_event(&mut self, conn: &mut Connection, ev: Event, commands: &mut Commands<Self::Done>) {
        match ev {
            Event::Connect(req) => {
                let admission = self.shared.admit(self.id, &req);
                tracing::info!(
                    peer = %self.peer,
                    subnqn = %req.connect.subnqn,
                    hostnqn = %req.connect.hostnqn,
                    qid = req.connect.qid,
                    ?admission,
                    "NVMe connect"
                );
                if let proto_nvmeof::Admission::Refused { status, .. } = &admission {
                    let kind = if *status == proto_nvmeof::Status::CONNECT_INVALID_HOST {
                        "host_not_allowed"
                    } else {
                        "refused"
                    };
                    self.shared.metrics.login_failed(Protocol::Nvme, kind);
                } else {
                    let c = &req.connect;
                    self.who = Some(proto_nvmeof::reservation::registrant(&c.hostnqn, c.host_id));
                }
                conn.connect_done(Instant::now(), admission);
            }
            Event::PathRefused { nsid, .. } => {
                if let Some(t) = self.target(conn, nsid) {
                    t.metrics().refused(Protocol::Nvme, Refusal::AccessState);
                }
            }
            Event::Io { tag, nsid, op } => {
                let target = self.target(conn, nsid);
                let who = self.who.clone();
                let counters = Arc::clone(&self.counters);
                commands.push_keyed(
                    u64::from(tag.0),
                    Box::pin(async move {
                        let r = match (target, who) {
                            (Some(t), Some(who)) => exec::run(&t, &who, op, &counters).await,
                            _ => IoResult::Block(block_core::BlockResult::Internal),
                        };
                        (tag, r)
                    }),
                );
            }
            // The driver reads the reason from the core.
            Event::Close(_) => {}
        }
    }

    fn on_done(&mut self, conn: &mut Connection, (tag, result): Self::Done) {
        conn.io_done(tag, result);
    }

    fn on_control(
        &mut self,
        conn: &mut Connection,
        msg: Control,
        commands: &mut Commands<Self::Done>,
    ) -> Flow {
        match msg {
            Control::Subsystem(s) => conn.update_subsystem(s),
            Control::ReservationNotice { kind, nsid } => conn.reservation_notice(kind, nsid),
            Control::Abort { nsids, done } => {
                // Each command completes with 0x1B now; those executing stop, so a CID the
                // host reuses never gets their result.
                for nsid in nsids {
                    for tag in conn.abort_commands(nsid) {
                        commands.cancel(u64::from(tag.0));
                    }
                }
                let _ = done.send(());
            }
            Control::Close => return Flow::Close("association ended"),
        }
        Flow::Continue
    }

    fn finish(self, conn: &Connection, ended: &Ended<CloseReason>) {
        tracing::info!(
            peer = %self.peer,
            cntlid = ?conn.cntlid(),
            qid = ?conn.qid(),
            reason = ended.to_string().as_str(),
            "NVMe connection closed"
        );
        // Dropping `self` now releases the registration.
    }
}

#[cfg(test)]
mod tests {
    use super::super::shared;
    use super::*;
    use proto_nvmeof::fabrics::{Connect, CNTLID_DYNAMIC};
    use proto_nvmeof::{Admission, ConnectRequest, Registry, Subsystem, TargetConfig};

    #[tokio::test]
    async fn a_connection_task_that_panics_still_releases_its_controller() {
        const NQN: &str = "nqn.2026-11.io.tandem:panic";
        let mut reg = Registry::new(1..=4);
        reg.set_subsystem(Arc::new(Subsystem::new(NQN, "PANIC")));
        let built = super::super::shared::Built {
            registry: reg,
            namespaces: HashMap::new(),
            portals: Vec::new(),
        };
        let shared = Arc::new(NvmeShared::new(
            built,
            Arc::new(TargetConfig::default()),
            Arc::new(crate::metrics::Metrics::new()),
        ));
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let (id, counters) = shared.register_conn(tx, peer);
        let req = ConnectRequest {
            connect: Connect {
                recfmt: 0,
                qid: 0,
                sqsize: 31,
                cattr: 0,
                kato_ms: 0,
                host_id: [7; 16],
                cntlid: CNTLID_DYNAMIC,
                subnqn: NQN.into(),
                hostnqn: "nqn.2014-08.org.nvmexpress:uuid:panic".into(),
            },
        };
        let Admission::Admin { cntlid, .. } = shared.admit(id, &req) else {
            panic!("the admin queue is admitted");
        };
        let handler = Nvme::new(Arc::clone(&shared), peer, id, counters);
        let task = tokio::spawn(async move {
            let _handler = handler;
            panic!("injected panic in a connection task");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert!(
            shared::lock(&shared.registry).association(cntlid).is_none(),
            "the controller id of a panicked connection is released"
        );
        assert!(shared::lock(&shared.conns).is_empty());
    }
}
