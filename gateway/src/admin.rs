//! The admin HTTP API of the daemon: `GET /v1/volumes` (the [`crate::status::VolumesDoc`]
//! `tandem status` prints), `GET /metrics` (Prometheus text exposition, [`crate::metrics`]),
//! `GET /healthz` / `GET /readyz` ([`crate::health`]) and the operator's dashboard
//! ([`crate::dashboard`]: `GET /`, `GET /v1/dashboard`), and the operator's role changes
//! (`POST /v1/volumes/{name}/promote|demote|switchover`, [`crate::operator`]). No authentication: it
//! listens on loopback by default (`[admin] listen`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::status::NodeView;

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Answers one request.
async fn route(
    view: &NodeView,
    history: &crate::dashboard::History,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    // The operator's role changes (crate::operator).
    if req.method() == Method::POST {
        return crate::operator::post(view, req.uri().path(), req.uri().query().unwrap_or(""))
            .await;
    }
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET, or POST /v1/volumes/NAME/promote|demote|switchover\n".into(),
        );
    }
    // The operator's dashboard (crate::dashboard): `GET /` and `GET /v1/dashboard`.
    if let Some(resp) = crate::dashboard::route(view, history, req.uri().path()) {
        return resp;
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
            crate::exposition::node_text(view),
        ),
        "/healthz" | "/readyz" => {
            let (status, body) = crate::health::answer(req.uri().path(), &view.readiness);
            reply(status, "text/plain", body)
        }
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
    // The dashboard's rate history (crate::dashboard), sampled until shutdown.
    let history = Arc::new(crate::dashboard::History::default());
    crate::dashboard::spawn_sampler(Arc::clone(&view), Arc::clone(&history), shutdown);
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
            let history = Arc::clone(&history);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let view = Arc::clone(&view);
                    let history = Arc::clone(&history);
                    async move { Ok::<_, Infallible>(route(&view, &history, &req).await) }
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
