//! State shared by all iSCSI connections of this node: the targets, the discovery answer,
//! the identifiers handed out to sessions and the live sessions the operator sees.
//!
//! It is its own module so that the connection tasks ([`super::conn`], [`super::context`]) use
//! it without importing the front end module that starts them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

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

/// The targets and discovery settings, replaced as a whole when the control plane changes
/// them (sessions already logged in go on; the next login sees the change).
#[derive(Debug, Default)]
pub(crate) struct Exports {
    /// Targets by IQN.
    pub(crate) targets: HashMap<String, Arc<Target>>,
    /// Authentication for discovery sessions.
    pub(crate) discovery_auth: TargetAuth,
    /// What SendTargets reports (every target, in configuration order).
    pub(crate) send_targets: Vec<DiscoveredTarget>,
}

/// State shared by all iSCSI connections.
#[derive(Debug)]
pub struct IscsiShared {
    /// Targets and discovery settings.
    exports: RwLock<Arc<Exports>>,
    /// Bumped on every change of `exports`, so connections re-read their target only then.
    generation: AtomicU64,
    /// The portal addresses SendTargets gives for every target (`address:port,tpgt`).
    pub(crate) portal_addresses: Vec<String>,
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
        exports: Exports,
        portal_addresses: Vec<String>,
        conn_cfg: ConnectionConfig,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> IscsiShared {
        IscsiShared {
            exports: RwLock::new(Arc::new(exports)),
            generation: AtomicU64::new(0),
            portal_addresses,
            conn_cfg,
            tsih: AtomicU16::new(1),
            nexus: AtomicU64::new(1),
            sessions: Mutex::new(BTreeMap::new()),
            metrics,
            live: Default::default(),
        }
    }

    /// The targets and discovery settings now.
    pub(crate) fn exports(&self) -> Arc<Exports> {
        Arc::clone(&self.exports.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Installs changed targets and discovery settings.
    pub(crate) fn set_exports(&self, exports: Exports) {
        *self.exports.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(exports);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The generation of the exports: it changes whenever they do.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Target `iqn` as configured now.
    pub fn target(&self, iqn: &str) -> Option<Arc<Target>> {
        self.exports().targets.get(iqn).cloned()
    }

    pub(crate) fn next_tsih(&self) -> u16 {
        loop {
            let t = self.tsih.fetch_add(1, Ordering::Relaxed);
            if t != 0 {
                return t;
            }
        }
    }

    pub(crate) fn next_nexus(&self) -> u64 {
        self.nexus.fetch_add(1, Ordering::Relaxed)
    }

    /// Shared state with no targets, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(discovery_auth: TargetAuth) -> Self {
        IscsiShared::new(
            Exports {
                discovery_auth,
                ..Exports::default()
            },
            vec!["127.0.0.1:3260,1".into()],
            ConnectionConfig::default(),
            Arc::default(),
        )
    }
}
