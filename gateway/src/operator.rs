//! The operator's role changes over the admin API (JSON answers, errors as JSON
//! [`ErrorReply`]), which `tandem volume promote|demote|switchover` calls:
//!
//! - `POST /v1/volumes/{name}/promote` ([`RoleChangeReply`]); on a replicated volume also
//!   `?force=1` (promote a standby that is not known to be in sync) and
//!   `?handover_epoch=E&through=L` (the second half of a switchover, sent by the old primary;
//!   [`crate::replication::switchover::HandoverReply`]);
//! - `POST /v1/volumes/{name}/demote` ([`RoleChangeReply`]);
//! - `POST /v1/volumes/{name}/switchover?to=ADMIN_ADDR`
//!   ([`crate::replication::switchover::SwitchoverReply`]);
//! - `POST /v1/volumes/{name}/resize?size=SIZE` and `&force=1` to shrink an unused volume
//!   ([`crate::resize::ResizeReply`]).

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use crate::replication::switchover::{self, OpError};
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
    /// A forced promotion: what may have been lost (for the operator to read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<String>,
}

pub use crate::client::ErrorReply;

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

fn ok<T: serde::Serialize>(body: &T) -> Response<Full<Bytes>> {
    json(
        StatusCode::OK,
        serde_json::to_string_pretty(body).unwrap_or_default(),
    )
}

fn op_error(e: OpError) -> Response<Full<Bytes>> {
    match e {
        OpError::Conflict(m) => json_error(StatusCode::CONFLICT, m),
        OpError::Failed(m) => json_error(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

/// The value of `key` in a query string (`a=1&b=2`), if present.
fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The number `key` holds in the query, if present; an error names a value that is none.
fn number(query: &str, key: &str) -> Result<Option<u64>, String> {
    param(query, key)
        .map(|v| {
            v.parse()
                .map_err(|_| format!("{key}={v:?} is not a number"))
        })
        .transpose()
}

/// Answers a `POST` to the admin API: a role change or a resize, or 404 for any other path.
pub async fn post(view: &NodeView, path: &str, query: &str) -> Response<Full<Bytes>> {
    let action = path
        .strip_prefix("/v1/volumes/")
        .and_then(|rest| rest.rsplit_once('/'))
        .filter(|(name, a)| {
            !name.is_empty() && matches!(*a, "promote" | "demote" | "switchover" | "resize")
        });
    let Some((name, action)) = action else {
        return json_error(StatusCode::NOT_FOUND, format!("no such action {path:?}"));
    };
    if view.served.target(name).is_none() {
        return json_error(StatusCode::NOT_FOUND, format!("no volume {name:?}"));
    }
    match action {
        "switchover" => switch_over(view, name, query).await,
        "resize" => resize(view, name, query).await,
        "promote" => match number(query, "handover_epoch") {
            Err(e) => json_error(StatusCode::BAD_REQUEST, e),
            Ok(Some(seen)) => handover(view, name, seen, query).await,
            Ok(None) => change_role(view, name, "promote", query).await,
        },
        _ => change_role(view, name, "demote", query).await,
    }
}

async fn resize(view: &NodeView, name: &str, query: &str) -> Response<Full<Bytes>> {
    use crate::resize::ResizeError;
    let Some(size) = param(query, "size").filter(|s| !s.is_empty()) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "resize needs size=SIZE (bytes, or with KiB, MiB, GiB, TiB)".into(),
        );
    };
    let force = param(query, "force").is_some_and(|f| f != "0" && f != "false");
    match crate::resize::resize(view, name, size, force).await {
        Ok(r) => {
            if let Some(c) = &view.control {
                c.record_size(name, r.new_bytes).await;
            }
            ok(&r)
        }
        Err(e) => {
            let status = match e {
                ResizeError::NotFound(_) => StatusCode::NOT_FOUND,
                ResizeError::BadRequest(_) => StatusCode::BAD_REQUEST,
                ResizeError::Conflict(_) => StatusCode::CONFLICT,
                ResizeError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            json_error(status, e.to_string())
        }
    }
}

async fn switch_over(view: &NodeView, name: &str, query: &str) -> Response<Full<Bytes>> {
    let Some(h) = view.replicas.get(name) else {
        return json_error(
            StatusCode::CONFLICT,
            format!("volume {name:?} is not replicated (no peer): nothing to switch over to"),
        );
    };
    let Some(to) = param(query, "to").and_then(|v| v.parse().ok()) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "switchover needs to=ADDR, the target node's admin API address".into(),
        );
    };
    match switchover::switchover(h, to).await {
        Ok(r) => ok(&r),
        Err(e) => op_error(e),
    }
}

async fn handover(view: &NodeView, name: &str, seen: u64, query: &str) -> Response<Full<Bytes>> {
    let Some(h) = view.replicas.get(name) else {
        return json_error(
            StatusCode::CONFLICT,
            format!("volume {name:?} is not replicated here: it cannot take over"),
        );
    };
    let through = match number(query, "through") {
        Ok(t) => t.unwrap_or(0),
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    match switchover::promote_handover(h, seen, through).await {
        Ok(r) => ok(&r),
        Err(e) => op_error(e),
    }
}

/// Promotes or demotes a volume: the operator's failover commands.
async fn change_role(
    view: &NodeView,
    name: &str,
    action: &str,
    query: &str,
) -> Response<Full<Bytes>> {
    let Some(t) = view.served.target(name) else {
        return json_error(StatusCode::NOT_FOUND, format!("no volume {name:?}"));
    };
    let v = &t.volume.volume;
    let force = param(query, "force").is_some_and(|f| f != "0" && f != "false");
    let mut loss = None;
    let r = match (view.replicas.get(name), action) {
        (Some(h), "promote") => switchover::promote(h, force).await.map(|l| loss = l),
        (Some(h), _) => switchover::demote(h).await,
        (None, "promote") => v.promote().await.map_err(switchover::op_error),
        (None, _) => v.demote().await.map_err(switchover::op_error),
    };
    match r {
        Ok(()) => {
            let st = v.role_state();
            tracing::warn!(volume = %name, role = st.role.name(), epoch = st.epoch, forced = force, "{action}d by the operator");
            ok(&RoleChangeReply {
                volume: name.to_string(),
                role: st.role.name().to_string(),
                epoch: st.epoch,
                loss,
            })
        }
        Err(e) => op_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters() {
        let q = "handover_epoch=4&through=17&force";
        assert_eq!(number(q, "handover_epoch"), Ok(Some(4)));
        assert_eq!(number(q, "through"), Ok(Some(17)));
        assert_eq!(number(q, "absent"), Ok(None));
        assert_eq!(param(q, "force"), Some(""));
        assert!(number("through=x", "through").is_err());
        assert_eq!(param("to=127.0.0.1:9740", "to"), Some("127.0.0.1:9740"));
    }
}
