//! `tandem serve`: open the volumes, start the front ends, stop cleanly on SIGINT / SIGTERM.

use crate::config::Config;
use crate::volumes;

/// Runs the daemon until a termination signal, then finishes in-flight work, flushes and closes.
pub async fn run(cfg: Config) -> Result<(), String> {
    let vols = volumes::open_all(&cfg).await?;
    let shutdown = tokio_util_shutdown();
    let fronts = crate::frontends::start(&cfg, &vols, shutdown.clone()).await?;
    crate::frontends::print_attach_help(&cfg, &vols, &fronts);
    wait_for_signal().await;
    tracing::info!("shutting down: finishing in-flight commands");
    let _ = shutdown.send(true);
    fronts.join().await;
    volumes::close_all(&vols).await;
    tracing::info!("volumes flushed and closed");
    Ok(())
}

/// A shutdown flag every listener and connection watches.
pub type Shutdown = tokio::sync::watch::Sender<bool>;

fn tokio_util_shutdown() -> Shutdown {
    tokio::sync::watch::channel(false).0
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
        _ = term.recv() => tracing::info!("SIGTERM"),
    }
}
