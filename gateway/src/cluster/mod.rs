//! Automatic failover coordinated by etcd (`tandem serve --etcd URL`, `[cluster] etcd`).
//!
//! Without etcd configured nothing here runs and a node behaves as it always did. With it,
//! the node registers under the prefix with a lease of its own ([`keys`]); for each replicated
//! volume the primary holds a leader key under that lease, the epoch is set only by a
//! successful etcd transaction, and the primary publishes the in-sync set. The decisions are
//! one pure function ([`decide`]); the etcd driver ([`agent`], cargo feature `etcd`) only
//! reads the keys, runs the transactions it asks for and drives the engine's role machine.
//!
//! Self-fencing: every renewal of the node's lease that etcd confirms sets the engine's lease
//! of each volume this node leads to `sent + TTL - safety margin` on the monotonic clock, so a
//! primary that cannot renew (etcd unreachable, the process paused) stops serving (its paths
//! turn transitioning) before etcd deletes its leader key and a standby may take it.
//!
//! The in-sync set ([`in_sync`]): the leader publishes itself and its standby while the
//! standby is in sync; a standby that stops answering is removed from it, in a transaction
//! guarded by the leader's key and lease, before any flush is acknowledged without it (the
//! replication task waits for that through [`crate::replication::in_sync`]). What status
//! shows of all this: [`view`].

pub mod config;
pub mod decide;
pub mod keys;
pub mod view;

#[cfg(feature = "etcd")]
pub mod agent;
#[cfg(feature = "etcd")]
pub mod in_sync;

pub use config::ClusterConfig;

use crate::config::Config;
use crate::replication::Replication;

/// The running etcd agent of a node (none when etcd is not configured).
pub struct Cluster {
    #[cfg(feature = "etcd")]
    inner: agent::Running,
    /// What status shows of the cluster (refreshed every round).
    pub view: std::sync::Arc<view::ClusterCell>,
}

/// Starts the agent when etcd is configured. Before it returns, every replicated primary's
/// lease is set to "ended", so no host I/O is served until this node holds the volume's
/// leader key in etcd.
pub async fn start(cfg: &Config, repl: &Replication) -> Result<Option<Cluster>, String> {
    if cfg.cluster.etcd.is_empty() {
        return Ok(None);
    }
    #[cfg(feature = "etcd")]
    {
        let inner = agent::start(&cfg.cluster, repl).await?;
        let view = inner.view.clone();
        Ok(Some(Cluster { inner, view }))
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = repl;
        Err(
            "etcd is configured ([cluster] etcd / --etcd) but this tandem was built without \
             etcd support: build it with `cargo build -p gateway --features etcd` (needs protoc, \
             Debian packages protobuf-compiler and libprotobuf-dev)"
                .into(),
        )
    }
}

impl Cluster {
    /// Stops the agent after the front ends drained and revokes the node's lease, so a standby
    /// takes over at once instead of after the TTL.
    pub async fn stop(self) {
        #[cfg(feature = "etcd")]
        self.inner.stop().await;
    }
}
