//! The admin HTTP API of the daemon: `GET /v1/volumes` (the [`crate::status::VolumesDoc`]
//! `tandem status` prints), `GET /metrics` (Prometheus text exposition, [`crate::metrics`]),
//! `GET /healthz` / `GET /readyz` ([`crate::health`]) and the operator's dashboard
//! ([`crate::dashboard`]: `GET /`, `GET /v1/dashboard`), and the operator's role changes
//! (`POST /v1/volumes/{name}/promote|demote|switchover|resize`, [`crate::operator`]), and the control
//! plane ([`crate::control::api`]: volumes, exports, host lists, CHAP). Every mutating request
//! (`POST`, `PUT`, `DELETE`) must carry the node's bearer token ([`crate::token`]); reading needs
//! none. It listens on loopback by default (`[admin] listen`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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

/// The answer to a mutating request without the right bearer token.
fn unauthorized(why: &str) -> Response<Full<Bytes>> {
    let mut r = crate::control::api::error(&crate::control::ApiError {
        status: StatusCode::UNAUTHORIZED.as_u16(),
        message: why.to_string(),
    });
    r.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// Answers a mutating request (`POST`, `PUT`, `DELETE`): the bearer token first, then the
/// control plane's endpoints (crate::control::api), then the role changes (crate::operator).
async fn mutate(view: &NodeView, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(control) = view.control.as_ref() else {
        return unauthorized("this admin API has no token: it refuses every change");
    };
    let header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|h| h.as_bytes());
    if !crate::token::authorizes(header, control.token()) {
        return unauthorized(
            "missing or wrong bearer token: send Authorization: Bearer <the token in the daemon's \
             admin-token file> (tandem reads it with --token-file or from --data-dir)",
        );
    }
    let (method, path, query) = (
        req.method().clone(),
        req.uri().path().to_string(),
        req.uri().query().unwrap_or("").to_string(),
    );
    if let Some((volume, snapshot)) = crate::control::snapshots::clone_path(&path) {
        if method == Method::POST {
            return crate::control::api::clone(control, volume, snapshot, req).await;
        }
    }
    if crate::control::snapshots::handles(&path) {
        use http_body_util::BodyExt as _;
        let body = match http_body_util::Limited::new(req.into_body(), 64 << 10)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return crate::control::api::error(&crate::control::ApiError::bad_request(format!(
                    "cannot read the request body: {e}"
                )))
            }
        };
        return crate::control::snapshots::route(view, &method, &path, &query, body).await;
    }
    if let Some(answer) = crate::control::api::route(control, req).await {
        return answer;
    }
    if method == Method::POST {
        return crate::operator::post(view, &path, &query).await;
    }
    crate::control::api::error(&crate::control::ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED.as_u16(),
        message: format!("{method} {path}: no such operation (see docs/api.md)"),
    })
}

/// Answers one request.
async fn route(
    view: &NodeView,
    history: &crate::dashboard::History,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if matches!(*req.method(), Method::POST | Method::PUT | Method::DELETE) {
        return mutate(view, req).await;
    }
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET, or POST/PUT/DELETE with the bearer token (docs/api.md)\n".into(),
        );
    }
    if crate::control::snapshots::handles(req.uri().path()) {
        let (path, query) = (req.uri().path(), req.uri().query().unwrap_or(""));
        return crate::control::snapshots::route(view, &Method::GET, path, query, Bytes::new())
            .await;
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

/// Limits that keep the admin API available to the operator when clients misbehave: a
/// client that trickles its request headers (slow loris) or idles between requests is
/// dropped after `header_read_timeout`; a request not answered within `request_timeout` gets
/// 503; at most `max_connections` connections are served at once, and the ones beyond are
/// answered 503 and closed at once (not queued: a flood must not delay the operator forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// How long a client may take to send a request's headers (and may idle between two).
    pub header_read_timeout: Duration,
    /// How long answering one request may take.
    pub request_timeout: Duration,
    /// Connections served at the same time.
    pub max_connections: usize,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_connections: 64,
        }
    }
}

impl From<&crate::config::AdminConfig> for AdminLimits {
    fn from(c: &crate::config::AdminConfig) -> Self {
        AdminLimits {
            header_read_timeout: Duration::from_millis(c.header_read_timeout_ms),
            request_timeout: Duration::from_millis(c.request_timeout_ms),
            max_connections: c.max_connections,
        }
    }
}

/// The answer to a connection beyond `max_connections`, written before closing it.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 27\r\nconnection: close\r\nretry-after: 1\r\n\r\ntoo many admin connections\n";

/// Answers `req`, or 503 when that takes longer than `limit`.
async fn bounded(
    limit: Duration,
    answer: impl std::future::Future<Output = Response<Full<Bytes>>>,
) -> Response<Full<Bytes>> {
    match tokio::time::timeout(limit, answer).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(?limit, "admin request timed out");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "request timed out\n".into(),
            )
        }
    }
}

/// Tells a connection beyond the limit so, without waiting long for a client that reads
/// nothing, and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt as _;
    let write = async {
        stream.write_all(TOO_MANY).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// The running admin API.
#[derive(Debug)]
pub struct AdminServer {
    /// The bound address.
    pub bound: SocketAddr,
    /// The accept loop.
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds `listen` and serves the admin API with the default [`AdminLimits`] until `shutdown`
/// is signalled.
pub async fn start(
    listen: SocketAddr,
    view: NodeView,
    shutdown: &crate::shutdown::Shutdown,
) -> Result<AdminServer, String> {
    start_with_limits(listen, AdminLimits::default(), view, shutdown).await
}

/// Binds `listen` and serves the admin API within `limits` until `shutdown` is signalled.
pub async fn start_with_limits(
    listen: SocketAddr,
    limits: AdminLimits,
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
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut stop = shutdown.subscribe();
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.changed() => return,
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::warn!(%peer, max = limits.max_connections, "admin connection refused: too many connections");
                tokio::spawn(refuse(stream));
                continue;
            };
            let view = Arc::clone(&view);
            let history = Arc::clone(&history);
            tokio::spawn(async move {
                let _slot = slot;
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let view = Arc::clone(&view);
                    let history = Arc::clone(&history);
                    async move {
                        let answer = bounded(limits.request_timeout, route(&view, &history, req));
                        Ok::<_, Infallible>(answer.await)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout)
                    .serve_connection(io, svc)
                    .await
                {
                    tracing::debug!(error = %e, %peer, "admin connection ended");
                }
            });
        }
    });
    tracing::info!(%bound, "admin API listening");
    Ok(AdminServer { bound, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_slower_than_the_limit_is_answered_503() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            reply(StatusCode::OK, "text/plain", String::new())
        };
        let r = bounded(Duration::from_millis(50), slow).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let fast = async { reply(StatusCode::OK, "text/plain", String::new()) };
        assert_eq!(
            bounded(Duration::from_millis(50), fast).await.status(),
            StatusCode::OK
        );
    }

    #[test]
    fn the_refusal_is_a_well_formed_response() {
        let text = std::str::from_utf8(TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), len);
    }
}
