//! `tandem serve`: open the volumes, start the front ends, stop cleanly on SIGINT / SIGTERM.

use crate::config::Config;
use crate::volumes;

/// Runs the daemon until a termination signal, then finishes in-flight work, flushes and closes.
pub async fn run(cfg: Config) -> Result<(), String> {
    let vols = volumes::open_all(&cfg).await?;
    // Replication first: a primary's flushes must wait for its standby from the first command.
    let repl = crate::replication::start(&cfg, &vols).await?;
    if let Some(addr) = repl.listening {
        println!("replication listening on {addr}");
    }
    let shutdown = crate::shutdown::new();
    let fronts = crate::frontends::start(&cfg, &vols, shutdown.clone()).await?;
    // The admin API is for operators; a taken port must not stop hosts' I/O (several
    // daemons on one machine, e.g. tests, share the default), so it is reported, not fatal.
    let admin = if cfg.admin.enabled {
        let mut view = crate::status::NodeView::new(&cfg, &fronts);
        view.replication = repl.statuses.clone();
        match crate::admin::start(cfg.admin.listen, view, &shutdown).await {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!(error = %e, "admin API not started (tandem status and /metrics are unavailable)");
                None
            }
        }
    } else {
        None
    };
    crate::frontends::print_attach_help(&cfg, &vols, &fronts);
    if let Some(a) = &admin {
        println!(
            "admin API http://{}/v1/volumes (tandem status --admin {})",
            a.bound, a.bound
        );
    }
    wait_for_signal().await;
    tracing::info!("shutting down: finishing in-flight commands");
    let _ = shutdown.send(true);
    fronts.join().await;
    if let Some(a) = admin {
        let _ = a.task.await;
    }
    repl.stop().await;
    volumes::close_all(&vols).await;
    tracing::info!("volumes flushed and closed");
    Ok(())
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
