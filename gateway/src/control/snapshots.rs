//! Snapshots over the admin API (blockstore's copy-on-write snapshots, docs/snapshots.md):
//!
//! - `GET /v1/volumes/{name}/snapshots` → [`SnapshotStatus`]es, oldest first;
//! - `POST /v1/volumes/{name}/snapshots` with `{"name": "..."}` → 201 [`SnapshotStatus`]
//!   (crash-consistent: every write acknowledged before it is in it, none after);
//! - `DELETE /v1/volumes/{name}/snapshots/{snapshot}` (id or name);
//! - `POST /v1/volumes/{name}/snapshots/{snapshot}/rollback[?force=1]`: refused while hosts
//!   are attached to the volume unless forced (their file systems would see data change under
//!   them).
//!
//! A snapshot is data of the volume, not configuration: nothing here touches the saved state.
//! (A clone of a snapshot is a new volume: `POST .../snapshots/{snapshot}/clone`, answered by
//! [`super::api::clone`].)

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::status::NodeView;

/// One snapshot as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStatus {
    /// Its id (never reused on the volume).
    pub id: u64,
    /// Its name.
    pub name: String,
    /// The log position it was taken at (the same on both nodes of a replicated volume).
    pub position: u64,
    /// The volume's size when it was taken.
    pub size_bytes: u64,
    /// When it was taken (seconds since the Unix epoch).
    pub created_unix: u64,
    /// Clones made from it that still exist.
    pub clones: u32,
    /// Space its preserved blocks take (blocks changed since it was taken).
    pub delta_bytes: u64,
}

/// `POST /v1/volumes/{name}/snapshots`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// The snapshot's name (unique among the volume's snapshots).
    pub name: String,
}

fn status(s: &blockstore::SnapshotInfo, bs: u32) -> SnapshotStatus {
    SnapshotStatus {
        id: s.id,
        name: s.name.clone(),
        position: s.position,
        size_bytes: s.capacity_blocks * u64::from(bs),
        created_unix: s.created_unix,
        clones: s.clones,
        delta_bytes: s.delta_blocks * u64::from(bs),
    }
}

/// Refuses deleting a snapshot that clones or read-only views (its exported form) are made
/// from, naming them and what to do.
fn refuse_if_cloned(
    view: &NodeView,
    name: &str,
    v: &blockstore::Volume,
    s: &blockstore::SnapshotInfo,
) -> Result<(), ApiError> {
    let users: Vec<String> = view
        .served
        .targets()
        .iter()
        .filter_map(|(n, t)| {
            let c = t.volume.volume.clone_origin()?;
            (c.origin_uuid == v.uuid() && c.snapshot_id == s.id).then(|| {
                if c.read_only {
                    format!("read-only view {n:?}")
                } else {
                    format!("clone {n:?}")
                }
            })
        })
        .collect();
    if users.is_empty() {
        return Ok(());
    }
    Err(ApiError::conflict(format!(
        "snapshot {:?} of volume {name:?} is in use by {}: remove their exports and delete \
         them first (tandem export remove, tandem volume delete)",
        s.name,
        users.join(", ")
    )))
}

/// The request's path split as `(volume, rest)` when it is under `/v1/volumes/{name}/snapshots`.
fn split(path: &str) -> Option<(&str, Vec<&str>)> {
    let rest = path.strip_prefix("/v1/volumes/")?;
    let mut parts = rest.split('/');
    let name = parts.next().filter(|n| !n.is_empty())?;
    if parts.next()? != "snapshots" {
        return None;
    }
    Some((name, parts.collect()))
}

/// `(volume, snapshot)` when `path` is `/v1/volumes/{volume}/snapshots/{snapshot}/clone`
/// (answered by [`super::api::clone`]).
pub fn clone_path(path: &str) -> Option<(&str, &str)> {
    match split(path)? {
        (name, rest) if rest.len() == 2 && rest[1] == "clone" => Some((name, rest[0])),
        _ => None,
    }
}

/// Whether `path` is a snapshot path this module answers.
pub fn handles(path: &str) -> bool {
    split(path).is_some()
}

/// Answers a snapshot request (`body`: the request body for a create).
pub async fn route(
    view: &NodeView,
    method: &Method,
    path: &str,
    query: &str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let Some((name, rest)) = split(path) else {
        return super::api::error(&ApiError::not_found(format!("no such path {path:?}")));
    };
    let answer = answer(view, method, name, &rest, query, body).await;
    answer.unwrap_or_else(|e| {
        tracing::warn!(%method, %path, status = e.status, error = %e.message, "snapshot request refused");
        super::api::error(&e)
    })
}

async fn answer(
    view: &NodeView,
    method: &Method,
    name: &str,
    rest: &[&str],
    query: &str,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let t = view
        .served
        .target(name)
        .ok_or_else(|| ApiError::not_found(format!("no volume {name:?}")))?;
    let v = &t.volume.volume;
    let bs = v.block_size();
    let find = |key: &str| {
        v.list_snapshots()
            .into_iter()
            .find(|s| s.name == key || s.id.to_string() == key)
            .ok_or_else(|| ApiError::not_found(format!("volume {name:?} has no snapshot {key:?}")))
    };
    match (method, rest) {
        (&Method::GET, []) => {
            let list: Vec<_> = v.list_snapshots().iter().map(|s| status(s, bs)).collect();
            Ok(super::api::json(StatusCode::OK, &list))
        }
        (&Method::POST, []) => {
            let req: CreateSnapshot = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
            super::edit::check_name(&req.name, "snapshot name")?;
            if v.list_snapshots().iter().any(|s| s.name == req.name) {
                return Err(ApiError::conflict(format!(
                    "volume {name:?} already has a snapshot {:?}",
                    req.name
                )));
            }
            let s = v
                .create_snapshot(req.name)
                .await
                .map_err(ApiError::from_volume)?;
            tracing::info!(volume = %name, snapshot = %s.name, id = s.id, "snapshot taken");
            Ok(super::api::json(StatusCode::CREATED, &status(&s, bs)))
        }
        (&Method::DELETE, [key]) => {
            let s = find(key)?;
            refuse_if_cloned(view, name, v, &s)?;
            v.delete_snapshot(s.id)
                .await
                .map_err(ApiError::from_volume)?;
            tracing::info!(volume = %name, snapshot = %s.name, id = s.id, "snapshot deleted");
            Ok(super::api::json(StatusCode::OK, &status(&s, bs)))
        }
        (&Method::POST, [key, "rollback"]) => {
            let s = find(key)?;
            let force = query
                .split('&')
                .any(|kv| kv == "force" || kv == "force=1" || kv == "force=true");
            let doc = view.volumes();
            let attached = doc
                .volumes
                .iter()
                .find(|d| d.name == name)
                .map_or(0, |d| d.hosts.iscsi.len() + d.hosts.nvme.len());
            if attached > 0 && !force {
                return Err(ApiError::conflict(format!(
                    "volume {name:?} has {attached} host(s) attached: their file systems would see \
                     the data change under them. Detach them (unmount, log out) first, or roll back with force"
                )));
            }
            v.rollback_snapshot(s.id)
                .await
                .map_err(ApiError::from_volume)?;
            tracing::warn!(volume = %name, snapshot = %s.name, id = s.id, "volume rolled back to a snapshot");
            Ok(super::api::json(StatusCode::OK, &status(&s, bs)))
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} on the snapshots of {name:?}: see docs/api.md"),
        )),
    }
}
