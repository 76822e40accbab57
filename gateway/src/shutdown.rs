//! The node-wide shutdown signal.
//!
//! `tandem serve` raises it on SIGINT / SIGTERM; every listener, connection and follower task
//! watches it. It lives in its own module so that the front ends, which only watch it, do not
//! import the module that starts them ([`crate::serve`]).

/// A shutdown flag every listener and connection watches: `send(true)` asks them all to finish
/// their in-flight work and stop; each task watches its own `subscribe()`d receiver.
pub type Shutdown = tokio::sync::watch::Sender<bool>;

/// A new, not yet raised, shutdown flag.
pub fn new() -> Shutdown {
    tokio::sync::watch::channel(false).0
}
