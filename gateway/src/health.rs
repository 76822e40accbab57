//! Liveness and readiness, for load balancers, orchestrators and systemd: `GET /healthz`
//! answers 200 while the process serves HTTP at all; `GET /readyz` answers 200 only between
//! the moment every configured front end listens with every volume open ([`Readiness::set_ready`])
//! and the start of shutdown ([`Readiness::set_stopping`]), 503 otherwise. The same moments are
//! reported to systemd (`READY=1`, `STOPPING=1`) by [`crate::serve`].

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use hyper::StatusCode;

const STARTING: u8 = 0;
const READY: u8 = 1;
const STOPPING: u8 = 2;

/// Where the node is in its life, shared by the daemon (which moves it) and the admin API
/// (which reports it).
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicU8>);

impl Readiness {
    /// Every front end listens and every volume is open: hosts can be sent here.
    pub fn set_ready(&self) {
        // Never back from stopping to ready.
        let _ = self
            .0
            .compare_exchange(STARTING, READY, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Shutdown began: hosts should go elsewhere.
    pub fn set_stopping(&self) {
        self.0.store(STOPPING, Ordering::SeqCst);
    }

    /// Whether the node serves hosts now.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst) == READY
    }

    /// The state as `/readyz` words it.
    pub fn describe(&self) -> &'static str {
        match self.0.load(Ordering::SeqCst) {
            STARTING => "starting",
            READY => "ready",
            _ => "stopping",
        }
    }
}

/// The status and body of the answer to `GET /healthz` or `GET /readyz` (`path`).
pub fn answer(path: &str, ready: &Readiness) -> (StatusCode, String) {
    let status = if path == "/readyz" && !ready.is_ready() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = if path == "/readyz" {
        format!("{}\n", ready.describe())
    } else {
        "ok\n".to_string()
    };
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_between_start_and_stop() {
        let r = Readiness::default();
        assert_eq!(answer("/readyz", &r).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer("/healthz", &r).0, StatusCode::OK);
        r.set_ready();
        assert_eq!(answer("/readyz", &r).0, StatusCode::OK);
        r.set_stopping();
        r.set_ready();
        assert_eq!(answer("/readyz", &r).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.describe(), "stopping");
        assert_eq!(answer("/healthz", &r).0, StatusCode::OK);
    }
}
