//! The iSCSI front end: portals (listeners), targets and their LUNs, and one task per
//! connection in which [`crate::driver`] drives the sans-IO `proto_iscsi::session::Connection`.

mod conn;
mod context;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use proto_iscsi::chap::{ChapAlgorithm, ChapConfig, ChapUser};
use proto_iscsi::login::{DiscoveredTarget, TargetAuth};
use proto_iscsi::session::ConnectionConfig;

use crate::config::{self, Config};
use crate::counters::IoCounters;
use crate::lu::{LuHandle, Lus};
use crate::serve::Shutdown;

/// A configured target.
#[derive(Debug)]
pub struct Target {
    /// Its IQN.
    pub iqn: String,
    /// How initiators authenticate.
    pub auth: TargetAuth,
    /// LUN number to logical unit.
    pub luns: BTreeMap<u16, Arc<LuHandle>>,
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
}

fn chap(c: &config::ChapConfig) -> TargetAuth {
    let allowed = ChapAlgorithm::DEFAULT_ALLOWED
        .iter()
        .copied()
        .filter(|a| c.allow_md5 || *a != ChapAlgorithm::Md5)
        .collect();
    TargetAuth::Chap(ChapConfig {
        initiator_users: vec![ChapUser {
            name: c.username.clone(),
            secret: c.secret.clone().into_bytes(),
        }],
        target_user: match (&c.target_username, &c.target_secret) {
            (Some(n), Some(s)) => Some(ChapUser {
                name: n.clone(),
                secret: s.clone().into_bytes(),
            }),
            _ => None,
        },
        allowed,
    })
}

/// `address:port` as SendTargets writes it (IPv6 in brackets).
fn portal_address(a: SocketAddr, tpgt: u16) -> String {
    format!("{a},{tpgt}")
}

/// Running iSCSI listeners.
#[derive(Debug)]
pub struct IscsiFrontend {
    /// Shared state (for the operator view).
    pub shared: Arc<IscsiShared>,
    /// Listener tasks.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Bound addresses, in portal order.
    pub bound: Vec<SocketAddr>,
}

/// Builds targets and LUs and starts one listener per portal.
pub async fn start(cfg: &Config, lus: &Lus, shutdown: Shutdown) -> Result<IscsiFrontend, String> {
    let ic = &cfg.iscsi;
    let mut targets = HashMap::new();
    for t in &ic.targets {
        let mut luns = BTreeMap::new();
        for l in &t.luns {
            let lu = lus
                .get(&l.volume)
                .ok_or_else(|| format!("LUN {} of {}: no volume {:?}", l.id, t.iqn, l.volume))?;
            luns.insert(l.id, Arc::clone(lu));
        }
        let auth = t.chap.as_ref().map_or(TargetAuth::None, chap);
        targets.insert(
            t.iqn.clone(),
            Target {
                iqn: t.iqn.clone(),
                auth,
                luns,
            },
        );
    }
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for p in &ic.portals {
        let l =
            crate::net::bind(p.listen).map_err(|e| format!("iSCSI portal {}: {e}", p.listen))?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        bound.push(addr);
        listeners.push((l, p.tpgt));
    }
    let send_targets = ic
        .targets
        .iter()
        .map(|t| DiscoveredTarget {
            name: t.iqn.clone(),
            addresses: ic
                .portals
                .iter()
                .zip(&bound)
                .map(|(p, b)| portal_address(p.advertise.unwrap_or(*b), p.tpgt))
                .collect(),
        })
        .collect();
    let shared = Arc::new(IscsiShared {
        targets,
        discovery_auth: ic.discovery_chap.as_ref().map_or(TargetAuth::None, chap),
        send_targets,
        conn_cfg: ConnectionConfig::default(),
        tsih: AtomicU16::new(1),
        nexus: AtomicU64::new(1),
        sessions: Mutex::new(BTreeMap::new()),
    });
    let mut tasks = Vec::new();
    for (i, (listener, tpgt)) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let rx = shutdown.subscribe();
        let port = conn::Portal {
            tpgt,
            relative_port: i as u16 + 1,
        };
        tasks.push(tokio::spawn(crate::net::accept_loop(
            listener,
            rx,
            move |stream, peer, rx| conn::serve(stream, peer, Arc::clone(&shared), port, rx),
        )));
    }
    Ok(IscsiFrontend {
        shared,
        tasks,
        bound,
    })
}

impl IscsiShared {
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
        IscsiShared {
            targets: HashMap::new(),
            discovery_auth,
            send_targets: Vec::new(),
            conn_cfg: ConnectionConfig::default(),
            tsih: AtomicU16::new(0),
            nexus: AtomicU64::new(1),
            sessions: Mutex::new(BTreeMap::new()),
        }
    }
}

/// Seconds since the epoch, for the operator view.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
