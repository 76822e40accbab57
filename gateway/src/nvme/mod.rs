//! The NVMe/TCP front end: I/O portals and discovery listeners, the node's shared
//! [`proto_nvmeof::Registry`] of subsystems and controllers, and one task per connection driving the
//! sans-IO `proto_nvmeof::Connection`.
//!
//! Connections register in [`NvmeShared`] so that work spanning several of them reaches them
//! all: a keep-alive expiry or a lost admin queue ends the whole association (every I/O queue
//! of the controller closes and the CNTLID is released), and an access-state change of a
//! volume is pushed to every queue of the subsystems exporting it (admin queues raise the ANA
//! change AEN, I/O queues start answering with ANA path statuses).

pub mod bench;
pub mod config;
mod conn;
mod exec;
mod notices;
mod shared;
mod subsys;

use std::net::SocketAddr;
use std::sync::Arc;

use proto_nvmeof::TargetConfig;

use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::target::Targets;

pub use shared::{ControllerInfo, NvmeShared};

/// Running NVMe/TCP listeners.
#[derive(Debug)]
pub struct NvmeFrontend {
    /// Shared state.
    pub shared: Arc<NvmeShared>,
    /// Listener tasks (and the access-state and reservation-notice followers).
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Bound I/O portal addresses, in portal order.
    pub bound: Vec<SocketAddr>,
    /// Bound discovery listener addresses.
    pub discovery_bound: Vec<SocketAddr>,
}

/// Whether the NVMe/TCP front end has anything to export. A configuration file that keeps
/// only the built-in default subsystem but has no volume named "default" (an iSCSI-only
/// file written before NVMe/TCP existed) exports nothing, and then no NVMe/TCP port is
/// opened at all rather than occupying 4420 and 8009 with an empty subsystem.
pub fn exports_anything(cfg: &Config) -> bool {
    cfg.nvme.subsystems.iter().any(|s| {
        !s.any_host
            || s.namespaces
                .iter()
                .any(|n| cfg.volumes.iter().any(|v| v.name == n.volume))
    })
}

/// Builds the subsystems, binds every listener, and starts serving.
pub async fn start(
    cfg: &Config,
    paths: &crate::paths::Paths,
    targets: &Targets,
    shutdown: Shutdown,
    metrics: Arc<crate::metrics::Metrics>,
    limit: crate::net::ConnectionLimit,
) -> Result<NvmeFrontend, String> {
    let nc = &cfg.nvme;
    let mut listeners = Vec::new();
    let mut bound = Vec::new();
    for p in &nc.portals {
        let l = crate::net::bind(p.listen).map_err(|e| format!("NVMe portal {}: {e}", p.listen))?;
        bound.push(l.local_addr().map_err(|e| e.to_string())?);
        listeners.push(l);
    }
    let mut discovery_bound = Vec::new();
    for a in &nc.discovery_listen {
        let l = crate::net::bind(*a).map_err(|e| format!("NVMe discovery listener {a}: {e}"))?;
        discovery_bound.push(l.local_addr().map_err(|e| e.to_string())?);
        listeners.push(l);
    }
    let limits = &cfg.limits;
    let target = Arc::new(TargetConfig {
        io_in_capsule: nc.in_capsule_size,
        connect_timeout_ms: u32::try_from(limits.login_timeout_ms).unwrap_or(u32::MAX),
        io_kato_default_ms: limits.nvme_default_kato_ms,
        ..TargetConfig::default()
    });
    let mut built = subsys::build(cfg, targets, paths, &bound, &discovery_bound)?;
    built
        .registry
        .set_discovery_limit(limits.nvme_max_discovery_controllers);
    let shared = Arc::new(NvmeShared::new(
        built.registry,
        target,
        built.namespaces,
        metrics,
    ));
    shared.add_abort_sinks();
    let mut tasks = subsys::follow_access_states(&shared, paths, &shutdown);
    tasks.extend(notices::follow_reservation_notices(&shared, &shutdown));
    for l in listeners {
        let rx = shutdown.subscribe();
        let shared = shared.clone();
        tasks.push(tokio::spawn(crate::net::accept_loop(
            l,
            Arc::clone(&limit),
            rx,
            move |stream, peer, rx| conn::serve(stream, peer, Arc::clone(&shared), rx),
        )));
    }
    Ok(NvmeFrontend {
        shared,
        tasks,
        bound,
        discovery_bound,
    })
}
