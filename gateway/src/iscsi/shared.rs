//! State shared by all iSCSI connections of this node: the targets, the discovery answer,
//! the identifiers handed out to sessions and the live sessions the operator sees.
//!
//! It is its own module so that the connection tasks ([`super::conn`], [`super::context`]) use
//! it without importing the front end module that starts them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU16, AtomicU64};
use std::sync::{Arc, Mutex};

use proto_iscsi::login::{DiscoveredTarget, TargetAuth};
use proto_iscsi::session::ConnectionConfig;

use crate::counters::IoCounters;
use crate::lu::LuHandle;

/// A configured target.
#[derive(Debug)]
pub struct Target {
    /// Its IQN.
    pub iqn: String,
    /// How initiators authenticate.
    pub auth: TargetAuth,
    /// Initiator names allowed to log in and to see the target in SendTargets (compared
    /// ignoring ASCII case, as iSCSI names are); `None`: any initiator.
    pub allowed_initiators: Option<Vec<String>>,
    /// LUN number to logical unit.
    pub luns: BTreeMap<u16, Arc<LuHandle>>,
}

impl Target {
    /// Whether `initiator` may log in to this target (and see it in discovery).
    pub fn admits(&self, initiator: &str) -> bool {
        self.allowed_initiators
            .as_ref()
            .is_none_or(|l| l.iter().any(|a| a.eq_ignore_ascii_case(initiator)))
    }
}

/// A session as the operator sees it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Initiator IQN.
    pub initiator: String,
    /// Target IQN.
    pub target: String,
    /// Peer address.
    pub peer: String,
    /// The local portal address the session came through.
    pub portal: String,
    /// Its SCSI relative target port id.
    pub relative_port: u16,
    /// When the login completed (seconds since the epoch).
    pub since_unix: u64,
    /// Commands of the session, counted as they complete.
    pub counters: Arc<IoCounters>,
}

/// State shared by all iSCSI connections.
#[derive(Debug)]
pub struct IscsiShared {
    /// Targets by IQN.
    pub targets: HashMap<String, Target>,
    /// Authentication for discovery sessions.
    pub discovery_auth: TargetAuth,
    /// What SendTargets reports.
    pub send_targets: Vec<DiscoveredTarget>,
    /// Base negotiation settings.
    pub conn_cfg: ConnectionConfig,
    tsih: AtomicU16,
    nexus: AtomicU64,
    /// Live sessions by nexus id.
    pub sessions: Mutex<BTreeMap<u64, SessionInfo>>,
    /// The node's metrics (failed logins are counted here).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The live connections (session reinstatement, preempt-and-abort).
    pub live: super::live::Live,
}

impl IscsiShared {
    /// Shared state for `targets`, with no session yet (TSIH and nexus ids start at 1).
    pub(super) fn new(
        targets: HashMap<String, Target>,
        discovery_auth: TargetAuth,
        send_targets: Vec<DiscoveredTarget>,
        conn_cfg: ConnectionConfig,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> IscsiShared {
        IscsiShared {
            targets,
            discovery_auth,
            send_targets,
            conn_cfg,
            tsih: AtomicU16::new(1),
            nexus: AtomicU64::new(1),
            sessions: Mutex::new(BTreeMap::new()),
            metrics,
            live: Default::default(),
        }
    }

    pub(crate) fn next_tsih(&self) -> u16 {
        loop {
            let t = self.tsih.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if t != 0 {
                return t;
            }
        }
    }

    pub(crate) fn next_nexus(&self) -> u64 {
        self.nexus
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Shared state with no targets, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(discovery_auth: TargetAuth) -> Self {
        IscsiShared::new(
            HashMap::new(),
            discovery_auth,
            Vec::new(),
            ConnectionConfig::default(),
            Arc::default(),
        )
    }
}
