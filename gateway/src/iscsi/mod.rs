//! The iSCSI front end: portals (listeners), targets and their LUNs, and one task per
//! connection in which [`crate::driver`] drives the sans-IO `proto_iscsi::session::Connection`.

mod aborts;
mod conn;
mod context;
mod live;
mod shared;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use proto_iscsi::chap::{ChapAlgorithm, ChapConfig, ChapUser};
use proto_iscsi::login::{DiscoveredTarget, TargetAuth};
use proto_iscsi::session::ConnectionConfig;

use crate::config::{self, Config};
use crate::lu::Lus;
use crate::shutdown::Shutdown;

pub use shared::{IscsiShared, SessionInfo, Target};

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

/// The connection settings `[limits]` asks for.
fn connection_config(l: &config::LimitsConfig) -> ConnectionConfig {
    ConnectionConfig {
        cmd_window: l.iscsi_cmd_window,
        write_budget: usize::try_from(l.iscsi_write_budget.0).unwrap_or(usize::MAX),
        login_timeout: l.login_timeout(),
        ..ConnectionConfig::default()
    }
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
pub async fn start(
    cfg: &Config,
    lus: &Lus,
    shutdown: Shutdown,
    metrics: Arc<crate::metrics::Metrics>,
    limit: crate::net::ConnectionLimit,
) -> Result<IscsiFrontend, String> {
    let ic = &cfg.iscsi;
    let mut targets = HashMap::new();
    for t in &ic.targets {
        let mut luns = BTreeMap::new();
        for l in &t.luns {
            // The configuration names only configured volumes; one missing here did not open
            // and is reported as unavailable.
            let Some(lu) = lus.get(&l.volume) else {
                tracing::warn!(target = %t.iqn, lun = l.id, volume = %l.volume, "LUN left out: its volume is unavailable");
                continue;
            };
            luns.insert(l.id, Arc::clone(lu));
        }
        let auth = t.chap.as_ref().map_or(TargetAuth::None, chap);
        targets.insert(
            t.iqn.clone(),
            Target {
                iqn: t.iqn.clone(),
                auth,
                allowed_initiators: t.allowed_initiators.clone(),
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
    let shared = Arc::new(IscsiShared::new(
        targets,
        ic.discovery_chap.as_ref().map_or(TargetAuth::None, chap),
        send_targets,
        connection_config(&cfg.limits),
        metrics,
    ));
    aborts::add_abort_sinks(&shared);
    let mut tasks = Vec::new();
    for (i, (listener, tpgt)) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let rx = shutdown.subscribe();
        let port = conn::Portal {
            tpgt,
            port_group: cfg.node.path_group,
            relative_port: crate::paths::ids::relative_port(cfg.node.path_group, i),
        };
        tasks.push(tokio::spawn(crate::net::accept_loop(
            listener,
            Arc::clone(&limit),
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
