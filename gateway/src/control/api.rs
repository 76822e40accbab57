//! The control plane's HTTP endpoints (docs/api.md). Bodies are JSON; answers are JSON, errors
//! `{"error": "..."}` with a 4xx status saying whose fault it is (400 bad input, 404 no such
//! thing, 409 conflicts with the node's state) or 500. The admin API checks the bearer token
//! before it calls [`route`].
//!
//! - `POST /v1/volumes` ([`edit::CreateVolume`]) → 201 [`VolumeCreated`];
//!   `DELETE /v1/volumes/{name}[?force=1]` → [`VolumeDeleted`];
//! - `POST /v1/exports` / `DELETE /v1/exports` ([`edit::ExportSpec`]) → [`edit::Export`]s;
//! - `POST /v1/hosts` (allow) / `DELETE /v1/hosts` (deny) ([`edit::HostSpec`]) →
//!   [`edit::AccessList`];
//! - `PUT /v1/iscsi/chap` ([`edit::SetChap`]) / `DELETE /v1/iscsi/chap` ([`edit::ClearChap`]),
//!   `PUT /v1/nvme/dhchap` ([`crate::nvme::config::NvmeHostConfig`]) /
//!   `DELETE /v1/nvme/dhchap` ([`edit::ClearDhchap`]) → [`edit::ChapState`].

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::edit::{self, Protocol};
use super::error::ApiError;
use super::Control;

/// The largest request body taken.
const MAX_BODY: usize = 64 << 10;

/// The answer to `POST /v1/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeCreated {
    /// Its name.
    pub name: String,
    /// Its UUID (the identity both protocols report).
    pub uuid: String,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Its logical block size.
    pub block_size: u32,
}

/// The answer to `DELETE /v1/volumes/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeDeleted {
    /// Its name.
    pub name: String,
    /// The exports removed with it (forced).
    pub exports_removed: Vec<edit::Export>,
}

/// A JSON answer.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_string_pretty(body).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The JSON answer to a refused request.
pub fn error(e: &ApiError) -> Response<Full<Bytes>> {
    json(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &crate::operator::ErrorReply {
            error: e.message.clone(),
        },
    )
}

/// Reads a JSON body of type `T` (at most 64 KiB).
async fn body<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?
        .to_bytes();
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "this request needs a JSON body (see docs/api.md)",
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Whether `query` sets `key` to a true value (`force`, `force=1`, `force=true`).
fn flag(query: &str, key: &str) -> bool {
    query
        .split('&')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "1")))
        .any(|(k, v)| k == key && v != "0" && v != "false")
}

/// Answers a control-plane request, or `None` when the path is not one of these.
pub async fn route(control: &Control, req: Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let answer = match (&method, path.as_str()) {
        (&Method::POST, "/v1/volumes") => create(control, req).await,
        (&Method::DELETE, p) if p.starts_with("/v1/volumes/") => {
            let name = &p["/v1/volumes/".len()..];
            if name.is_empty() || name.contains('/') {
                return None;
            }
            delete(control, name, flag(&query, "force")).await
        }
        (&Method::POST, "/v1/exports") => exports(control, req, true).await,
        (&Method::DELETE, "/v1/exports") => exports(control, req, false).await,
        (&Method::POST, "/v1/hosts") => hosts(control, req, true).await,
        (&Method::DELETE, "/v1/hosts") => hosts(control, req, false).await,
        (&Method::PUT, "/v1/iscsi/chap") => chap(control, req, true).await,
        (&Method::DELETE, "/v1/iscsi/chap") => chap(control, req, false).await,
        (&Method::PUT, "/v1/nvme/dhchap") => dhchap(control, req, true).await,
        (&Method::DELETE, "/v1/nvme/dhchap") => dhchap(control, req, false).await,
        _ => return None,
    };
    Some(answer.unwrap_or_else(|e| {
        tracing::warn!(%method, %path, status = e.status, error = %e.message, "control-plane request refused");
        error(&e)
    }))
}

async fn create(
    control: &Control,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let spec: edit::CreateVolume = body(req).await?;
    let v = control
        .change(|cfg| edit::create_volume(cfg, &spec))
        .await?;
    let t = control
        .served
        .target(&v.name)
        .ok_or_else(|| ApiError::internal("the volume was created but is not served"))?;
    let vol = &t.volume.volume;
    Ok(json(
        StatusCode::CREATED,
        &VolumeCreated {
            name: v.name,
            uuid: uuid::Uuid::from_bytes(vol.uuid()).to_string(),
            size_bytes: vol.capacity_blocks() * u64::from(vol.block_size()),
            block_size: vol.block_size(),
        },
    ))
}

async fn delete(
    control: &Control,
    name: &str,
    force: bool,
) -> Result<Response<Full<Bytes>>, ApiError> {
    // An origin goes only after its clones (they read its snapshots).
    if let Some(t) = control.served.target(name) {
        let cloned: Vec<String> = t
            .volume
            .volume
            .list_snapshots()
            .into_iter()
            .filter(|s| s.clones > 0)
            .map(|s| s.name)
            .collect();
        if !cloned.is_empty() {
            return Err(ApiError::conflict(format!(
                "volume {name:?} has clones of its snapshots ({}): delete the clones first",
                cloned.join(", ")
            )));
        }
    }
    let removed = control
        .change(|cfg| edit::delete_volume(cfg, name, force))
        .await?;
    Ok(json(
        StatusCode::OK,
        &VolumeDeleted {
            name: name.to_string(),
            exports_removed: removed,
        },
    ))
}

async fn exports(
    control: &Control,
    req: Request<Incoming>,
    add: bool,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let spec: edit::ExportSpec = body(req).await?;
    control.require(spec.protocol)?;
    if add {
        let e = control.change(|cfg| edit::add_export(cfg, &spec)).await?;
        Ok(json(StatusCode::CREATED, &e))
    } else {
        let removed = control
            .change(|cfg| edit::remove_export(cfg, &spec))
            .await?;
        Ok(json(StatusCode::OK, &removed))
    }
}

async fn hosts(
    control: &Control,
    req: Request<Incoming>,
    allow: bool,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let spec: edit::HostSpec = body(req).await?;
    control.require(spec.protocol)?;
    let list = control
        .change(|cfg| edit::change_host(cfg, &spec, allow))
        .await?;
    Ok(json(StatusCode::OK, &list))
}

async fn chap(
    control: &Control,
    req: Request<Incoming>,
    set: bool,
) -> Result<Response<Full<Bytes>>, ApiError> {
    control.require(Protocol::Iscsi)?;
    let st = if set {
        let spec: edit::SetChap = body(req).await?;
        control
            .change(|cfg| edit::set_chap(cfg, spec.target.as_deref(), Some(spec.chap())))
            .await?
    } else {
        let spec: edit::ClearChap = body(req).await.or_else(|e| {
            // No body: discovery CHAP.
            if e.message.contains("needs a JSON body") {
                Ok(edit::ClearChap::default())
            } else {
                Err(e)
            }
        })?;
        control
            .change(|cfg| edit::set_chap(cfg, spec.target.as_deref(), None))
            .await?
    };
    Ok(json(StatusCode::OK, &st))
}

async fn dhchap(
    control: &Control,
    req: Request<Incoming>,
    set: bool,
) -> Result<Response<Full<Bytes>>, ApiError> {
    control.require(Protocol::Nvme)?;
    let st = if set {
        let host: crate::nvme::config::NvmeHostConfig = body(req).await?;
        control.change(|cfg| edit::set_dhchap(cfg, host)).await?
    } else {
        let spec: edit::ClearDhchap = body(req).await?;
        control
            .change(|cfg| edit::clear_dhchap(cfg, &spec.host))
            .await?
    };
    Ok(json(StatusCode::OK, &st))
}

/// `POST /v1/volumes/{volume}/snapshots/{snapshot}/clone` with `{"name": "..."}`: a new,
/// writable volume that starts as the snapshot's image (it reads unwritten blocks from the
/// snapshot) and lives its own life; exported like any volume. With `"read_only": true` it is
/// a read-only view of the snapshot instead: the way a snapshot is exported, write protected
/// over both protocols. 201 [`VolumeCreated`].
pub async fn clone(
    control: &Control,
    volume: &str,
    snapshot: &str,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let answer = async {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct CloneRequest {
            name: String,
            #[serde(default)]
            read_only: bool,
        }
        let spec: CloneRequest = body(req).await?;
        let origin = control
            .served
            .target(volume)
            .ok_or_else(|| ApiError::not_found(format!("no volume {volume:?}")))?;
        let v = &origin.volume.volume;
        let snap = v
            .list_snapshots()
            .into_iter()
            .find(|s| s.name == snapshot || s.id.to_string() == snapshot)
            .ok_or_else(|| {
                ApiError::not_found(format!("volume {volume:?} has no snapshot {snapshot:?}"))
            })?;
        let bs = v.block_size();
        let create = edit::CreateVolume {
            name: spec.name.clone(),
            size: crate::config::Size(snap.capacity_blocks * u64::from(bs)),
            block_size: Some(bs),
            wal_size: None,
            uuid: None,
        };
        let id = snap.id;
        let of = super::CloneOf {
            origin,
            snapshot: id,
            read_only: spec.read_only,
        };
        control
            .change_cloning(|cfg| edit::create_volume(cfg, &create), Some(of))
            .await?;
        let t = control
            .served
            .target(&spec.name)
            .ok_or_else(|| ApiError::internal("the clone was created but is not served"))?;
        let c = &t.volume.volume;
        tracing::info!(volume = %spec.name, origin = %volume, snapshot = id, read_only = spec.read_only, "clone created");
        Ok::<_, ApiError>(json(
            StatusCode::CREATED,
            &VolumeCreated {
                name: spec.name,
                uuid: uuid::Uuid::from_bytes(c.uuid()).to_string(),
                size_bytes: c.capacity_blocks() * u64::from(c.block_size()),
                block_size: c.block_size(),
            },
        ))
    };
    answer.await.unwrap_or_else(|e| error(&e))
}
