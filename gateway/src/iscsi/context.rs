//! What a connection's login needs from the daemon: target lookup, authentication settings,
//! randomness for CHAP, session handles, and the SendTargets list.

use std::sync::Arc;

use proto_iscsi::login::{DiscoveredTarget, LoginContext, TargetAuth};
use proto_iscsi::session::SessionContext;
use rand::RngCore;

use super::shared::IscsiShared;

/// The per-connection view of the shared state.
pub struct Ctx {
    pub(super) shared: Arc<IscsiShared>,
}

impl LoginContext for Ctx {
    fn target_auth(&self, target_name: &str) -> Option<TargetAuth> {
        self.shared.targets.get(target_name).map(|t| t.auth.clone())
    }

    fn discovery_auth(&self) -> TargetAuth {
        self.shared.discovery_auth.clone()
    }

    fn fill_random(&mut self, buf: &mut [u8]) {
        rand::thread_rng().fill_bytes(buf);
    }

    fn allocate_tsih(&mut self) -> Option<u16> {
        Some(self.shared.next_tsih())
    }
}

impl SessionContext for Ctx {
    fn send_targets(&self) -> Vec<DiscoveredTarget> {
        self.shared.send_targets.clone()
    }
}
