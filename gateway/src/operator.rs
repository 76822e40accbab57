//! The operator's role changes over the admin API: `POST /v1/volumes/{name}/promote` and
//! `/demote` (JSON [`RoleChangeReply`], errors as JSON [`ErrorReply`]), which `tandem volume
//! promote|demote` calls.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use crate::status::NodeView;

/// The answer to a role change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoleChangeReply {
    /// The volume.
    pub volume: String,
    /// Its role now.
    pub role: String,
    /// Its epoch now.
    pub epoch: u64,
}

/// An error of the admin API, as JSON a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorReply {
    /// What went wrong.
    pub error: String,
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn json_error(status: StatusCode, error: String) -> Response<Full<Bytes>> {
    json(
        status,
        serde_json::to_string(&ErrorReply { error }).unwrap_or_default(),
    )
}

/// Answers a `POST` to the admin API: a role change, or 404 for any other path.
pub async fn post(view: &NodeView, path: &str) -> Response<Full<Bytes>> {
    let action = path
        .strip_prefix("/v1/volumes/")
        .and_then(|rest| rest.rsplit_once('/'))
        .filter(|(name, a)| !name.is_empty() && (*a == "promote" || *a == "demote"));
    match action {
        Some((name, a)) => change_role(view, name, a).await,
        None => json_error(StatusCode::NOT_FOUND, format!("no such action {path:?}")),
    }
}

/// Promotes or demotes a volume: the operator's failover commands.
async fn change_role(view: &NodeView, name: &str, action: &str) -> Response<Full<Bytes>> {
    let Some(t) = view.targets.get(name) else {
        return json_error(StatusCode::NOT_FOUND, format!("no volume {name:?}"));
    };
    let v = &t.volume.volume;
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
            json(
                StatusCode::OK,
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
