//! `tandem serve`: open the volumes, start the front ends, tell systemd and `/readyz` when the
//! node is ready, stop cleanly on SIGINT / SIGTERM, and survive SIGHUP.

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config::Config;
use crate::volumes;

/// Tells the service manager (systemd's `NOTIFY_SOCKET`, `Type=notify`) about the node's state;
/// without a manager there is nobody to tell and nothing happens.
fn notify(state: sd_notify::NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Raises the soft limit on open files to the hard limit, so `[limits] max_connections`
/// connections (each a descriptor) fit; warns when even the hard limit is too low for them.
fn raise_open_files(wanted: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read / write the struct passed by reference.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if !ok {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    // Volumes, listeners and the admin API take a few dozen more.
    let needed = (wanted as u64).saturating_add(64);
    if lim.rlim_cur < needed {
        tracing::warn!(
            open_files = lim.rlim_cur,
            max_connections = wanted,
            "the open-file limit is below [limits] max_connections: connections beyond it fail to be accepted"
        );
    }
}

/// Runs the daemon until a termination signal, then finishes in-flight work, flushes and closes.
pub async fn run(cfg: Config) -> Result<(), String> {
    raise_open_files(cfg.limits.max_connections);
    // Watched from the start, so that a signal during start-up is not the default action
    // (SIGHUP would kill the process).
    let mut signals = Signals::watch()?;
    // A volume that cannot open is reported and left out; the others serve.
    let opened = volumes::open_available(&cfg).await?;
    let vols = opened.volumes;
    // Replication first: a primary's flushes must wait for its standby from the first command.
    let paths = crate::paths::build_all(&cfg, &vols);
    let repl = crate::replication::start(&cfg, &vols, &paths).await?;
    if let Some(addr) = repl.listening {
        println!("replication listening on {addr}");
    }
    // With etcd, a primary serves only once it holds the volume's leader key (and while it
    // renews its lease): decided before the front ends start.
    let cluster = crate::cluster::start(&cfg, &repl).await?;
    let shutdown = crate::shutdown::new();
    let mut fronts =
        crate::frontends::start_with_paths(&cfg, &vols, paths, shutdown.clone()).await?;
    let mut view = crate::status::NodeView::new(&cfg, &fronts);
    view.replication = repl.statuses.clone();
    view.replicas = repl.handles.clone();
    view.cluster = cluster.as_ref().map(|c| c.view.clone());
    view.served.set_unavailable(opened.unavailable);
    // The control plane: mutating admin requests need the token, generated on first start.
    let token = crate::token::load_or_create(&crate::token::path(&cfg))?;
    view.control = Some(std::sync::Arc::new(crate::control::Control::new(
        std::sync::Arc::clone(&view.served),
        &fronts,
        shutdown.clone(),
        token,
    )));
    let served = std::sync::Arc::clone(&view.served);
    let readiness = view.readiness.clone();
    // The admin API outlives the front ends' drain (its own stop), so `/readyz` says 503
    // while the node shuts down rather than going silent.
    let admin_stop = crate::shutdown::new();
    // The admin API is for operators; a taken port must not stop hosts' I/O (several
    // daemons on one machine, e.g. tests, share the default), so it is reported, not fatal.
    let admin = if cfg.admin.enabled {
        match crate::admin::start_with_limits(
            cfg.admin.listen,
            (&cfg.admin).into(),
            view,
            &admin_stop,
        )
        .await
        {
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
    // From here on `served` holds the volumes: a volume the control plane deletes must not be
    // kept open by the start-up maps (a deleted clone would keep its snapshot busy).
    drop(vols);
    fronts.targets.clear();
    fronts.lus.clear();
    if let Some(a) = &admin {
        println!(
            "admin API http://{}/v1/volumes (tandem status --admin {})",
            a.bound, a.bound
        );
    }
    readiness.set_ready();
    notify(sd_notify::NotifyState::Ready);
    tracing::info!("ready: every front end listens, every available volume is open");
    signals.until_termination().await;
    readiness.set_stopping();
    notify(sd_notify::NotifyState::Stopping);
    tracing::info!("shutting down: finishing in-flight commands");
    let _ = shutdown.send(true);
    fronts.join().await;
    if let Some(c) = cluster {
        c.stop().await;
    }
    repl.stop().await;
    // The volumes served now: those the control plane created included, deleted ones not.
    volumes::close_all(&served.volumes()).await;
    tracing::info!("volumes flushed and closed");
    let _ = admin_stop.send(true);
    if let Some(a) = admin {
        let _ = a.task.await;
    }
    Ok(())
}

/// The signals the daemon acts on.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn watch() -> Result<Signals, String> {
        let on =
            |k: SignalKind, name: &str| signal(k).map_err(|e| format!("cannot watch {name}: {e}"));
        Ok(Signals {
            term: on(SignalKind::terminate(), "SIGTERM")?,
            int: on(SignalKind::interrupt(), "SIGINT")?,
            hup: on(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// Waits for SIGINT or SIGTERM. SIGHUP (a reload request from `systemctl reload` or a
    /// closed terminal) never stops the node: the file is not re-read (volumes, exports, host
    /// lists and CHAP change through the admin API), so it is logged and ignored.
    async fn until_termination(&mut self) {
        loop {
            tokio::select! {
                _ = self.int.recv() => return tracing::info!("SIGINT"),
                _ = self.term.recv() => return tracing::info!("SIGTERM"),
                _ = self.hup.recv() => tracing::warn!(
                    "SIGHUP: the configuration file is not re-read; change volumes, exports, \
                     host lists and CHAP with tandem volume|export|host|chap (the admin API), \
                     restart for other settings (still serving)"
                ),
            }
        }
    }
}
