//! The operator's role changes of a replicated volume: promote (after a failure, or as the
//! second half of a handover), demote, and the planned switchover that chains them.
//!
//! A switchover runs on the primary (`POST /v1/volumes/NAME/switchover?to=ADMIN`):
//!
//! 1. it checks that this node serves the volume, that its standby is connected and in sync,
//!    and that the node at `to` (its admin API) holds the same volume as a standby and is that
//!    standby (the node id its status shows is the one the standby's Hello carried);
//! 2. it demotes itself drained ([`blockstore::Engine::demote_drained`]): host I/O is refused
//!    from that moment with the retryable transitioning state (ALUA 04/0A, ANA 0x303), every
//!    write already admitted finishes, a flush ships the tail and waits until the standby has
//!    it durable, and the record of the standby must still say in sync; only then is the
//!    demotion persisted (epoch + 1). Otherwise it is abandoned and the volume serves again;
//! 3. its shipping task stops (the supervisor follows the role), and it asks the peer's admin
//!    API to promote as the end of a handover (`POST .../promote?handover_epoch=E&through=L`):
//!    the peer checks it holds this node's log through `L`, persists its promotion under
//!    `E + 1` before it serves, and answers with its own last LSN;
//! 4. this node records that LSN as its position in the new primary's log
//!    ([`blockstore::Engine::set_applied_position`]); until then the listener turns the new
//!    primary away, which retries. From then on it is the new primary's standby.
//!
//! The peer's admin API (rather than a frame on the replication link) carries the promotion:
//! the operator names the target by that address anyway, its answer is typed JSON, and the
//! replication protocol stays a pure data stream. If the peer refuses or cannot be reached,
//! this node promotes itself again (a later epoch); if the answer is lost midway, it stays a
//! standby and says so, since the peer may have promoted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use blockstore::{Engine, Error, Role};

use super::standby_sync::StandbyRecord;
use super::state::{PeerRecord, SyncName, PEER_METADATA};
use super::Replicated;
use crate::status::{self, FetchError};

/// Why an operator's role change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The request does not fit the volume's state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// Something failed on the way (HTTP 500 or 502).
    #[error("{0}")]
    Failed(String),
}

/// What a switchover did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SwitchoverReply {
    /// The volume.
    pub volume: String,
    /// This node's role now ("standby").
    pub role: String,
    /// This node's epoch now.
    pub epoch: u64,
    /// The new primary's admin API.
    pub new_primary: String,
    /// The new primary's epoch.
    pub new_epoch: u64,
}

/// What the peer answers to the handover's promotion.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HandoverReply {
    /// The volume (on the peer).
    pub volume: String,
    /// Its role now ("primary").
    pub role: String,
    /// Its epoch now.
    pub epoch: u64,
    /// Its last LSN before it served: where the old primary stands in its log.
    pub handover_lsn: u64,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> blockstore::Result<T> + Send + 'static,
) -> Result<T, OpError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| OpError::Failed(e.to_string()))?
        .map_err(op_error)
}

/// The one mapping of volume errors to operator errors.
pub fn op_error(e: Error) -> OpError {
    match e {
        e @ (Error::StaleEpoch { .. } | Error::RoleChangeInProgress | Error::Invalid(_)) => {
            OpError::Conflict(e.to_string())
        }
        e => OpError::Failed(e.to_string()),
    }
}

fn save_peer_record(e: &Engine, rec: PeerRecord) -> blockstore::Result<()> {
    e.save_metadata(PEER_METADATA, &rec.to_bytes())
}

/// `promote` as the end of a handover: the old primary stepped down under `seen` after
/// making its log through `through` durable here.
pub async fn promote_handover(
    h: &Arc<Replicated>,
    seen: u64,
    through: u64,
) -> Result<HandoverReply, OpError> {
    let e = h.engine.clone();
    let st = e.role_state();
    if st.role != Role::Standby {
        return Err(OpError::Conflict(format!(
            "volume {}: this node is {} (epoch {}), not a standby: it cannot take over",
            h.name,
            st.role.name(),
            st.epoch
        )));
    }
    let name = h.name.clone();
    let last = blocking(move || {
        let held = e.sync_applied()?;
        if held < through {
            return Err(Error::Invalid(format!(
                "volume {name}: this node holds the primary's log through LSN {held}, the handover needs {through}: it is not the in-sync standby"
            )));
        }
        // The old primary holds exactly this node's image: the new term starts with it in
        // sync (a flush waits for it as soon as it is back), and the log keeps everything
        // after this point for it until it connected.
        let last = e.last_lsn();
        e.set_retention(Some(e.log_pos_after(last)?));
        save_peer_record(
            &e,
            PeerRecord {
                state: SyncName::InSync,
                since_lsn: last,
                epoch: seen.max(e.role_state().epoch) + 1,
                resync: false,
            },
        )?;
        e.promote_after(seen)
    })
    .await?;
    let st = h.engine.role_state();
    tracing::warn!(volume = %h.name, epoch = st.epoch, handover_lsn = last, "promoted: the old primary handed the volume over");
    Ok(HandoverReply {
        volume: h.name.clone(),
        role: st.role.name().into(),
        epoch: st.epoch,
        handover_lsn: last,
    })
}

/// The operator's `promote` of a replicated volume (the old primary failed). A standby not
/// known to be in sync is refused unless `force`; a forced promotion returns what may have
/// been lost. The other node's image has no known position in this node's log afterwards,
/// so it will need a full resync.
pub async fn promote(h: &Arc<Replicated>, force: bool) -> Result<Option<String>, OpError> {
    let e = h.engine.clone();
    let loss = check_promotable(h, force).await?;
    blocking(move || {
        let st = e.role_state();
        if st.role == Role::Primary {
            return Err(Error::Invalid("the volume is primary here already".into()));
        }
        save_peer_record(
            &e,
            PeerRecord {
                state: SyncName::OutOfSync,
                since_lsn: 0,
                epoch: st.epoch + 1,
                resync: true,
            },
        )?;
        e.promote()
    })
    .await?;
    Ok(loss)
}

/// The operator's `demote`: a primary (drained first) or a stale old primary becomes a
/// standby. Its image then has no known position in the primary's log (it may hold writes the
/// primary never had): it follows once the primary brought it up to date with a full resync.
pub async fn demote(h: &Arc<Replicated>) -> Result<(), OpError> {
    let e = h.engine.clone();
    blocking(move || {
        let was = e.role_state();
        // The image's position and sync record are reset before the volume becomes a standby:
        // from that moment the listener may let the primary rebuild it, and a reset after
        // that would undo the rebuild (the new standby would count itself out of sync with no
        // position while the primary waits for it).
        let reset = |e: &blockstore::Engine| {
            e.set_applied_position(0)?;
            StandbyRecord {
                state: SyncName::OutOfSync,
                primary_lsn: 0,
                epoch: was.epoch,
            }
            .save(e)
        };
        if was.role == Role::Primary && !was.transitioning {
            // A serving primary drains: what hosts had in flight finishes (a FUA write or a
            // flush waiting for the standby completes normally) before it stops serving.
            e.demote_drained(|e| {
                e.flush()?;
                reset(e)
            })?;
        } else {
            if was.role != Role::Standby {
                reset(&e)?;
            }
            e.demote()?;
        }
        Ok(())
    })
    .await?;
    show_standby_state(h);
    Ok(())
}

/// Shows the standby's recorded sync state (the supervisor may have looked before it was
/// written).
fn show_standby_state(h: &Replicated) {
    if h.engine.role_state().role == Role::Standby {
        let shown = super::standby_sync::shown(&h.engine);
        h.paths.set_standby_sync(shown == SyncName::InSync);
        h.status.update(|s| s.sync_state = Some(shown));
    }
}

/// A planned switchover of the volume to the node whose admin API is `to`.
pub async fn switchover(h: &Arc<Replicated>, to: SocketAddr) -> Result<SwitchoverReply, OpError> {
    let e = h.engine.clone();
    let st = e.role_state();
    if st.role != Role::Primary || st.transitioning {
        return Err(OpError::Conflict(format!(
            "volume {}: this node is {} (epoch {}{}): a switchover starts on the serving primary",
            h.name,
            st.role.name(),
            st.epoch,
            if st.transitioning { ", changing" } else { "" }
        )));
    }
    let their_name = check_target(h, to).await?;
    h.receiver.hold(true);
    // Hosts see both groups transitioning until the target serves (or this node again).
    let handing = h.paths.handing_over();
    let r = hand_over(h, to, &their_name).await;
    if r.is_ok() {
        // The target answered that it serves: its group is active/optimized from now on.
        h.paths.peer_state(block_core::AccessState::Optimized);
    }
    drop(handing);
    h.receiver.hold(false);
    r
}

/// Checks that the node at `to` is this volume's connected, in-sync standby; returns the
/// volume's name there.
async fn check_target(h: &Arc<Replicated>, to: SocketAddr) -> Result<String, OpError> {
    let me = h.status.get();
    let state = me.sync_state.map_or("unknown", |s| s.as_str());
    let Some(peer_id) = me.peer_node_id.clone().filter(|_| me.connected) else {
        return Err(OpError::Conflict(format!(
            "volume {}: the standby is not connected: a switchover needs a connected, in-sync standby",
            h.name
        )));
    };
    if me.sync_state != Some(SyncName::InSync) {
        return Err(OpError::Conflict(format!(
            "volume {}: the standby is {state}: a switchover needs an in-sync standby",
            h.name
        )));
    }
    let doc = tokio::task::spawn_blocking(move || status::fetch(to))
        .await
        .map_err(|e| OpError::Failed(e.to_string()))?
        .map_err(|e| OpError::Conflict(format!("the target: {e}")))?;
    let uuid = uuid::Uuid::from_bytes(h.engine.uuid()).to_string();
    let Some(v) = doc.volumes.iter().find(|v| v.uuid == uuid) else {
        return Err(OpError::Conflict(format!(
            "the node at {to} does not hold volume {} (uuid {uuid})",
            h.name
        )));
    };
    let their_id = v
        .replication
        .as_ref()
        .map(|r| r.node_id.clone())
        .unwrap_or_default();
    if their_id != peer_id {
        return Err(OpError::Conflict(format!(
            "the node at {to} (node id {their_id:?}) is not the in-sync standby of volume {} (node id {peer_id})",
            h.name
        )));
    }
    if v.role != "standby" {
        return Err(OpError::Conflict(format!(
            "the node at {to} holds volume {} as {}, not as a standby",
            h.name, v.role
        )));
    }
    Ok(v.name.clone())
}

/// Steps 2 to 4 (see the module documentation). `their_name` is the volume's name there.
async fn hand_over(
    h: &Arc<Replicated>,
    to: SocketAddr,
    their_name: &str,
) -> Result<SwitchoverReply, OpError> {
    let e = h.engine.clone();
    let name = h.name.clone();
    let through = blocking(move || {
        let mut through = 0;
        e.demote_drained(|e| {
            e.flush()?;
            let rec = e
                .load_metadata(PEER_METADATA)?
                .and_then(|b| PeerRecord::parse(&b));
            if !rec.is_some_and(|r| r.state == SyncName::InSync && !r.resync) {
                return Err(Error::Invalid(format!(
                    "volume {name}: the standby fell out of sync while the log was shipped: switchover abandoned, still primary here"
                )));
            }
            through = e.last_lsn();
            Ok(())
        })?;
        Ok(through)
    })
    .await?;
    let epoch = h.engine.role_state().epoch;
    tracing::warn!(volume = %h.name, epoch, through, to = %to, "switchover: stepped down with the standby holding the whole log; handing over");
    // The shipping task must be gone (its connection closed) before the peer takes over.
    let mut shipping = h.shipping.subscribe();
    let _ = tokio::time::timeout(Duration::from_secs(10), shipping.wait_for(|s| !*s)).await;
    let path = format!("/v1/volumes/{their_name}/promote?handover_epoch={epoch}&through={through}");
    let answer = tokio::task::spawn_blocking(move || status::post(to, &path))
        .await
        .map_err(|e| OpError::Failed(e.to_string()))?;
    let reply = match answer {
        Ok(body) => serde_json::from_str::<HandoverReply>(&body).map_err(|e| {
            OpError::Failed(format!(
                "the new primary at {to} answered {body:?} ({e}); this node stays a standby under epoch {epoch}: check `tandem status` on both nodes"
            ))
        })?,
        Err(err) => {
            let refused = match &err {
                FetchError::Io { source, .. } => {
                    source.kind() == std::io::ErrorKind::ConnectionRefused
                }
                FetchError::Protocol { what, .. } => what.starts_with("answered"),
            };
            if !refused {
                return Err(OpError::Failed(format!(
                    "asking {to} to take over failed midway ({err}): it may or may not have promoted; this node stays a standby under epoch {epoch}: check `tandem status` on both nodes and promote one"
                )));
            }
            // The peer did not promote: this node takes the volume back under a new epoch.
            let e = h.engine.clone();
            blocking(move || e.promote()).await?;
            return Err(OpError::Conflict(format!(
                "{to} did not take over ({err}); this node is primary again under epoch {}",
                h.engine.role_state().epoch
            )));
        }
    };
    let e = h.engine.clone();
    let (at, new_epoch) = (reply.handover_lsn, reply.epoch);
    blocking(move || {
        e.set_applied_position(at)?;
        // This node holds exactly the new primary's image: in sync, should it be needed
        // before the new primary connected and said so.
        StandbyRecord {
            state: SyncName::InSync,
            primary_lsn: at,
            epoch: new_epoch,
        }
        .save(&e)
    })
    .await?;
    show_standby_state(h);
    tracing::warn!(volume = %h.name, new_primary = %to, new_epoch = reply.epoch, handover_lsn = at, "switchover done: this node follows the new primary");
    Ok(SwitchoverReply {
        volume: h.name.clone(),
        role: h.engine.role_state().role.name().into(),
        epoch: h.engine.role_state().epoch,
        new_primary: to.to_string(),
        new_epoch: reply.epoch,
    })
}

/// Whether the volume may be promoted here: `Ok(None)` when it is known in sync (or is no
/// standby and the role machine decides), `Ok(Some(loss))` when forced although it is not,
/// an error naming the positions otherwise.
pub async fn check_promotable(h: &Arc<Replicated>, force: bool) -> Result<Option<String>, OpError> {
    let e = h.engine.clone();
    let st = e.role_state();
    if st.role == Role::Primary {
        return Ok(None);
    }
    let rec = tokio::task::spawn_blocking(move || StandbyRecord::load(&e))
        .await
        .map_err(|e| OpError::Failed(e.to_string()))?;
    // What the node shows must agree (it is updated even when recording failed).
    let shown = h.status.get().sync_state;
    if st.role == Role::Standby
        && rec.is_some_and(|r| r.in_sync())
        && shown != Some(SyncName::OutOfSync)
    {
        return Ok(None);
    }
    let held = h.engine.applied_lsn();
    let seen = h
        .status
        .get()
        .primary_lsn
        .unwrap_or(0)
        .max(rec.map_or(0, |r| r.primary_lsn));
    let why = match (st.role, rec) {
        (Role::Standby, Some(r)) => format!(
            "its primary declared it out of sync (epoch {}) and it did not catch up since",
            r.epoch
        ),
        (Role::Standby, None) => "its primary never said it was in sync".to_string(),
        (role, _) => format!("it is {} here, not an in-sync standby", role.name()),
    };
    let window = format!(
        "this node holds the primary's log through LSN {held} (epoch {}); the primary was last known at LSN {seen}{}",
        st.epoch,
        if seen > held {
            format!(": writes after LSN {held} may be lost, and any the primary acknowledged after it was last heard from")
        } else {
            ": writes the primary acknowledged after it was last heard from may be lost".to_string()
        }
    );
    if !force {
        return Err(OpError::Conflict(format!(
            "volume {}: not promoted: {why}. {window}. Promoting it may lose acknowledged writes; `tandem volume promote --force` promotes anyway",
            h.name
        )));
    }
    tracing::warn!(volume = %h.name, held, seen, epoch = st.epoch, "forced promotion of a standby that is not in sync");
    Ok(Some(format!("forced: {why}; {window}")))
}
