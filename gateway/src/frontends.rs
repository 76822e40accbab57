//! Starts the protocol front ends and tells the operator how to attach.

use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::volumes::Volumes;

/// The running front ends.
#[derive(Debug, Default)]
pub struct Frontends {
    /// The iSCSI front end, when enabled.
    pub iscsi: Option<crate::iscsi::IscsiFrontend>,
    /// The NVMe/TCP front end, when enabled.
    pub nvme: Option<crate::nvme::NvmeFrontend>,
    /// Every served volume as a block target (its reservation state), by volume name.
    pub targets: crate::target::Targets,
    /// The SCSI logical unit of every served volume, by volume name.
    pub lus: crate::lu::Lus,
    /// The paths hosts see to every served volume (ALUA port groups, ANA state), by name.
    pub paths: crate::paths::Paths,
    /// The node's live metrics, which both front ends and every volume target record in.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Frontends {
    /// Waits for every front end to finish its in-flight work after shutdown was signalled.
    pub async fn join(self) {
        if let Some(i) = self.iscsi {
            for t in i.tasks {
                let _ = t.await;
            }
        }
        if let Some(n) = self.nvme {
            for t in n.tasks {
                let _ = t.await;
            }
        }
    }
}

/// Starts every enabled front end, both on the one block target of each volume (so one
/// reservation state per volume whatever the protocol), with the paths of a single node (no
/// replication).
pub async fn start(cfg: &Config, vols: &Volumes, shutdown: Shutdown) -> Result<Frontends, String> {
    let paths = crate::paths::build_all(cfg, vols);
    start_with_paths(cfg, vols, paths, shutdown).await
}

/// Starts every enabled front end on the volumes' `paths` (which replication keeps up to
/// date with the peer).
pub async fn start_with_paths(
    cfg: &Config,
    vols: &Volumes,
    paths: crate::paths::Paths,
    shutdown: Shutdown,
) -> Result<Frontends, String> {
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let targets = crate::target::build_all(vols, &metrics).await?;
    let mut f = Frontends {
        lus: crate::lu::build_all(cfg, &targets, &paths),
        targets: targets.clone(),
        paths: paths.clone(),
        metrics: std::sync::Arc::clone(&metrics),
        ..Frontends::default()
    };
    let limit = crate::net::connection_limit(cfg.limits.max_connections);
    if cfg.iscsi.enabled {
        let m = std::sync::Arc::clone(&metrics);
        let l = std::sync::Arc::clone(&limit);
        f.iscsi = Some(crate::iscsi::start(cfg, &f.lus, shutdown.clone(), m, l).await?);
    }
    if cfg.nvme.enabled && crate::nvme::exports_anything(cfg) {
        f.nvme = Some(crate::nvme::start(cfg, &paths, &targets, shutdown, metrics, limit).await?);
    } else if cfg.nvme.enabled {
        tracing::info!(
            "NVMe/TCP: no volume named \"default\" and no [[nvme.subsystem]]: not listening"
        );
    }
    Ok(f)
}

/// Prints how hosts attach the served volumes.
pub fn print_attach_help(cfg: &Config, vols: &Volumes, fronts: &Frontends) {
    for (name, v) in vols {
        println!(
            "volume {name}: {} blocks of {} bytes, uuid {}",
            v.volume.capacity_blocks(),
            v.volume.block_size(),
            uuid::Uuid::from_bytes(v.volume.uuid())
        );
    }
    if let Some(i) = &fronts.iscsi {
        for (p, bound) in cfg.iscsi.portals.iter().zip(&i.bound) {
            let addr = p.advertise.unwrap_or(*bound);
            println!(
                "iSCSI portal {bound} (advertised as {addr}, tpgt {})",
                p.tpgt
            );
        }
        if let (Some(p), Some(bound)) = (cfg.iscsi.portals.first(), i.bound.first()) {
            let addr = p.advertise.unwrap_or(*bound);
            println!("attach with open-iscsi:");
            println!("  iscsiadm -m discovery -t sendtargets -p {addr}");
            for t in &cfg.iscsi.targets {
                println!("  iscsiadm -m node -T {} -p {addr} --login", t.iqn);
            }
        }
    }
    if let Some(n) = &fronts.nvme {
        for (p, bound) in cfg.nvme.portals.iter().zip(&n.bound) {
            let addr = crate::nvme::config::advertised(p, *bound);
            println!("NVMe/TCP portal {bound} (advertised as {addr})");
        }
        for d in &n.discovery_bound {
            println!("NVMe/TCP discovery listener {d}");
        }
        let disc = n.discovery_bound.first().or(n.bound.first());
        if let (Some(d), Some(p), Some(bound)) = (disc, cfg.nvme.portals.first(), n.bound.first()) {
            let addr = crate::nvme::config::advertised(p, *bound);
            println!("attach with nvme-cli:");
            let ip = cfg.nvme.discovery_advertise.unwrap_or(d.ip());
            println!("  nvme discover -t tcp -a {ip} -s {}", d.port());
            for s in &cfg.nvme.subsystems {
                println!(
                    "  nvme connect -t tcp -a {} -s {} -n {}",
                    addr.ip(),
                    addr.port(),
                    s.nqn
                );
            }
        }
    }
}
