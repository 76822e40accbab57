//! Online resize of a served volume (`POST /v1/volumes/{name}/resize?size=...`, `tandem volume
//! resize`), and the configured size checked at start.
//!
//! A grow is durable when it returns (`blockstore::Volume::grow`: the extent is extended and
//! synced before the superblock records the new capacity). The hosts then learn of it through
//! their protocol: every SCSI logical unit follows its volume's capacity before each command
//! ([`crate::lu::LuHandle`]: unit attention 2A/09 CAPACITY DATA HAS CHANGED on every I_T nexus,
//! READ CAPACITY answers the new size), and every NVMe namespace of the volume gets the new
//! size in a new subsystem snapshot (Namespace Attribute Changed event, Changed Namespace List
//! log page, Identify Namespace).
//!
//! The configured size at start is applied by [`crate::volumes`] (a larger one grows the volume,
//! a smaller one is refused in the log).
//!
//! A shrink discards data, so it needs `force` and a volume no host can reach: no iSCSI LUN,
//! no NVMe namespace, no session. A replicated volume is never shrunk (its standby holds the
//! data too, and no log record carries a shrink).
//!
//! A replicated volume grows on its primary only: the grow is a record in the volume's log
//! (`blockstore`'s grow record), shipped to the standby in order with the writes and applied
//! there at the same position, and the primary publishes the new size only once the record is
//! durable here and on the in-sync standby (like a flush). A promoted standby is therefore
//! never smaller than what the hosts were told. On the standby, iSCSI LUs follow the volume's
//! size at once (READ CAPACITY is answered on a standby path, with 2A/09 to its nexuses); its
//! NVMe namespaces take it at the next path change, its promotion above all. Asked on the
//! standby, a resize is refused (409) with a pointer to the primary.

use crate::config::{Size, VolumeConfig};
use crate::status::NodeView;
use crate::volumes::blocks_of;

/// The answer to a resize.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResizeReply {
    /// The volume.
    pub volume: String,
    /// Its size before, in bytes.
    pub old_bytes: u64,
    /// Its size now, in bytes.
    pub new_bytes: u64,
    /// Its logical block size.
    pub block_size: u32,
}

/// Why a resize was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResizeError {
    /// No such volume (404).
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong: a bad size (400).
    #[error("{0}")]
    BadRequest(String),
    /// Not possible in the volume's state: a shrink without force, of an exported volume or
    /// of a replicated one; a grow asked of a standby (409).
    #[error("{0}")]
    Conflict(String),
    /// The volume failed to change (500).
    #[error("{0}")]
    Failed(String),
}

/// Resizes volume `name` to `size` (bytes, or with a KiB..TiB suffix as in the configuration).
pub async fn resize(
    view: &NodeView,
    name: &str,
    size: &str,
    force: bool,
) -> Result<ResizeReply, ResizeError> {
    let Some(t) = view.served.target(name) else {
        return Err(ResizeError::NotFound(format!("no volume {name:?}")));
    };
    let v = &t.volume.volume;
    let bs = v.block_size();
    let bytes = size
        .parse::<Size>()
        .map_err(|e| ResizeError::BadRequest(format!("size: {e}")))?
        .0;
    let new_blocks = blocks_of(bytes, bs).map_err(ResizeError::BadRequest)?;
    let replicated = view.replicas.contains_key(name)
        || configured(view, name).is_some_and(|c| c.peer.is_some());
    let old_blocks = v.capacity_blocks();
    let reply = |blocks: u64| ResizeReply {
        volume: name.to_string(),
        old_bytes: old_blocks * u64::from(bs),
        new_bytes: blocks * u64::from(bs),
        block_size: bs,
    };
    if new_blocks == old_blocks {
        return Ok(reply(old_blocks));
    }
    if new_blocks < old_blocks && replicated {
        return Err(ResizeError::Conflict(format!(
            "volume {name:?} is replicated: shrinking it is refused (its standby holds the \
             same data, and only growing is carried by the replication log); its size stays \
             {} bytes",
            old_blocks * u64::from(bs)
        )));
    }
    if new_blocks < old_blocks {
        if !force {
            return Err(ResizeError::Conflict(format!(
                "shrinking volume {name:?} from {} to {bytes} bytes discards the data beyond \
                 the new end, which hosts may be using: refused. To shrink a volume no host \
                 uses (no export, no session), pass --force (force=1)",
                old_blocks * u64::from(bs)
            )));
        }
        let users = users_of(view, name);
        if !users.is_empty() {
            return Err(ResizeError::Conflict(format!(
                "volume {name:?} is in use ({}): shrinking is refused even with --force; \
                 remove its exports and let its hosts disconnect first",
                users.join(", ")
            )));
        }
        v.shrink(new_blocks)
            .await
            .map_err(|e| ResizeError::Failed(format!("shrinking volume {name:?}: {e}")))?;
    } else {
        v.grow(new_blocks).await.map_err(|e| match e {
            blockstore::Error::Invalid(m) => {
                ResizeError::Conflict(format!("growing volume {name:?}: {m}"))
            }
            e => ResizeError::Failed(format!("growing volume {name:?}: {e}")),
        })?;
    }
    let blocks = v.capacity_blocks();
    if let Some(n) = &view.nvme {
        n.set_volume_blocks(name, blocks);
    }
    tracing::warn!(
        volume = %name,
        old_bytes = old_blocks * u64::from(bs),
        new_bytes = blocks * u64::from(bs),
        "volume resized by the operator"
    );
    Ok(reply(blocks))
}

fn configured(view: &NodeView, name: &str) -> Option<VolumeConfig> {
    view.served
        .config()
        .volumes
        .into_iter()
        .find(|v| v.name == name)
}

/// What makes volume `name` reachable by hosts on this node: its iSCSI LUNs, NVMe namespaces
/// and attached sessions, described for the operator.
fn users_of(view: &NodeView, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(i) = &view.iscsi {
        for t in i.exports().targets.values() {
            for (lun, lu) in &t.luns {
                if lu.volume.name == name {
                    out.push(format!("iSCSI target {} LUN {lun}", t.iqn));
                }
            }
        }
    }
    if let Some(n) = &view.nvme {
        for (nqn, nsid) in n.namespaces_of_volume(name) {
            out.push(format!("NVMe subsystem {nqn} namespace {nsid}"));
        }
    }
    let hosts = view.volumes().volumes.into_iter().find(|v| v.name == name);
    if let Some(h) = hosts {
        for s in h.hosts.iscsi.iter().chain(&h.hosts.nvme) {
            out.push(format!("host {} via {}", s.host, s.via));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_whole_blocks() {
        assert_eq!(blocks_of(8192, 4096), Ok(2));
        assert!(blocks_of(0, 512).is_err());
        assert!(blocks_of(1000, 512).is_err());
    }
}
