//! The admin HTTP API of the daemon: `GET /v1/volumes` (the [`VolumesDoc`] `tandem status`
//! prints), `GET /metrics` (Prometheus text exposition), and the operator's role changes
//! `POST /v1/volumes/{name}/promote` and `/demote` (JSON [`RoleChangeReply`], errors as JSON
//! [`ErrorReply`]). No authentication: it listens on loopback by default (`[admin] listen`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::status::{NodeView, VolumesDoc};

/// Labels of a per-volume series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeLabels {
    volume: String,
}

/// Labels of a per-volume, per-protocol series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    volume: String,
    protocol: String,
}

/// Labels of a per-host series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    volume: String,
    protocol: String,
    host: String,
    address: String,
}

fn counter_family<L>(reg: &mut Registry, name: &str, help: &str) -> Family<L, Counter>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge_family<L>(reg: &mut Registry, name: &str, help: &str) -> Family<L, Gauge>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The Prometheus text exposition of `doc`.
pub fn metrics_text(doc: &VolumesDoc) -> String {
    let mut reg = Registry::with_prefix("tandem");
    let reads = counter_family(&mut reg, "volume_reads", "Read requests served");
    let writes = counter_family(&mut reg, "volume_writes", "Write requests served");
    let rbytes = counter_family(&mut reg, "volume_read_bytes", "Bytes read by hosts");
    let wbytes = counter_family(&mut reg, "volume_write_bytes", "Bytes written by hosts");
    let flushes = counter_family(&mut reg, "volume_flushes", "Flush requests");
    let runs = counter_family(
        &mut reg,
        "volume_flusher_runs",
        "Flusher runs that copied data",
    );
    let log_used = gauge_family(&mut reg, "volume_log_used_bytes", "Write-ahead log in use");
    let log_size = gauge_family(&mut reg, "volume_log_size_bytes", "Write-ahead log size");
    let dirty = gauge_family(&mut reg, "volume_dirty_blocks", "Blocks only in the log");
    let hosts = gauge_family(&mut reg, "volume_hosts", "Hosts attached, per protocol");
    let cmds = counter_family(&mut reg, "host_commands", "Commands of an attached host");
    let in_sync = gauge_family(
        &mut reg,
        "volume_replication_in_sync",
        "1 when the standby counts for flushes (in sync), 0 when out of sync or degrading",
    );
    let repl_lsn = gauge_family(
        &mut reg,
        "volume_replication_durable_lsn",
        "The standby's acknowledged durable LSN (on a standby: the LSN applied)",
    );
    for v in &doc.volumes {
        let l = VolumeLabels {
            volume: v.name.clone(),
        };
        let e = &v.engine;
        reads.get_or_create(&l).inc_by(e.reads);
        writes.get_or_create(&l).inc_by(e.writes);
        rbytes.get_or_create(&l).inc_by(e.read_bytes);
        wbytes.get_or_create(&l).inc_by(e.write_bytes);
        flushes.get_or_create(&l).inc_by(e.flushes);
        runs.get_or_create(&l).inc_by(e.flusher_runs);
        log_used.get_or_create(&l).set(gauge(e.log_used_bytes));
        log_size.get_or_create(&l).set(gauge(e.log_size_bytes));
        dirty.get_or_create(&l).set(gauge(e.dirty_blocks));
        if let Some(r) = &v.replication {
            if let Some(s) = r.sync_state {
                let on = s == crate::replication::state::SyncName::InSync;
                in_sync.get_or_create(&l).set(i64::from(on));
            }
            repl_lsn.get_or_create(&l).set(gauge(r.durable_lsn));
        }
        for (protocol, list) in [("iscsi", &v.hosts.iscsi), ("nvme", &v.hosts.nvme)] {
            let pl = ProtocolLabels {
                volume: v.name.clone(),
                protocol: protocol.into(),
            };
            hosts.get_or_create(&pl).set(list.len() as i64);
            for h in list {
                let hl = HostLabels {
                    volume: v.name.clone(),
                    protocol: protocol.into(),
                    host: h.host.clone(),
                    address: h.address.clone(),
                };
                cmds.get_or_create(&hl).inc_by(h.io.commands());
            }
        }
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// The answer to a role change (`POST /v1/volumes/{name}/promote` or `/demote`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoleChangeReply {
    /// The volume.
    pub volume: String,
    /// Its role now.
    pub role: String,
    /// Its epoch now.
    pub epoch: u64,
}

/// An error of the admin API, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorReply {
    /// What went wrong.
    pub error: String,
}

fn json_error(status: StatusCode, error: String) -> Response<Full<Bytes>> {
    let body = serde_json::to_string(&ErrorReply { error }).unwrap_or_default();
    reply(status, "application/json", body)
}

/// Promotes or demotes a volume: the operator's failover commands.
async fn change_role(view: &NodeView, name: &str, action: &str) -> Response<Full<Bytes>> {
    let Some(lu) = view.targets.get(name) else {
        return json_error(StatusCode::NOT_FOUND, format!("no volume {name:?}"));
    };
    let v = &lu.volume.volume;
    let r = match action {
        "promote" => v.promote().await,
        _ => v.demote().await,
    };
    match r {
        Ok(()) => {
            let st = v.role_state();
            tracing::warn!(volume = %name, role = st.role.name(), epoch = st.epoch, "{action}d by the operator");
            let body = RoleChangeReply {
                volume: name.to_string(),
                role: st.role.name().to_string(),
                epoch: st.epoch,
            };
            reply(
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&body).unwrap_or_default(),
            )
        }
        Err(
            e @ (blockstore::Error::StaleEpoch { .. }
            | blockstore::Error::RoleChangeInProgress
            | blockstore::Error::Invalid(_)),
        ) => json_error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Answers one request.
async fn route(view: &NodeView, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() == Method::POST {
        let path = req.uri().path();
        let action = path
            .strip_prefix("/v1/volumes/")
            .and_then(|rest| rest.rsplit_once('/'))
            .filter(|(name, a)| !name.is_empty() && (*a == "promote" || *a == "demote"));
        return match action {
            Some((name, a)) => change_role(view, name, a).await,
            None => json_error(StatusCode::NOT_FOUND, format!("no such action {path:?}")),
        };
    }
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET, or POST /v1/volumes/NAME/promote|demote\n".into(),
        );
    }
    match req.uri().path() {
        "/v1/volumes" => match serde_json::to_string_pretty(&view.volumes()) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        },
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics_text(&view.volumes()),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// The running admin API.
#[derive(Debug)]
pub struct AdminServer {
    /// The bound address.
    pub bound: SocketAddr,
    /// The accept loop.
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds `listen` and serves the admin API until `shutdown` is signalled.
pub async fn start(
    listen: SocketAddr,
    view: NodeView,
    shutdown: &crate::shutdown::Shutdown,
) -> Result<AdminServer, String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("admin API {listen}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let view = Arc::new(view);
    let mut stop = shutdown.subscribe();
    let task = tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.changed() => return,
            };
            let view = Arc::clone(&view);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let view = Arc::clone(&view);
                    async move { Ok::<_, Infallible>(route(&view, &req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await
                {
                    tracing::debug!(error = %e, "admin connection ended");
                }
            });
        }
    });
    tracing::info!(%bound, "admin API listening");
    Ok(AdminServer { bound, task })
}
