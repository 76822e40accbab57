//! `[limits]`: what one host, or many, may hold of this node before it is refused or dropped:
//! connections, time to log in, commands queued and write data buffered per iSCSI connection,
//! NVMe keep-alive for hosts that ask none, discovery controllers.

use serde::Deserialize;

use super::Size;

/// Limits on what peers may hold (issue 14: hostile peers). Every field has a default that
/// serves ordinary hosts unchanged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Connections open at once over both protocols; beyond it new connections are closed at
    /// once (logged once per episode).
    pub max_connections: usize,
    /// Time a new connection has to complete its iSCSI login, or its NVMe/TCP ICReq and
    /// Connect, before it is dropped (milliseconds).
    pub login_timeout_ms: u64,
    /// iSCSI commands a connection may have outstanding (the CmdSN window, which slides as
    /// commands complete); as many immediate commands again.
    pub iscsi_cmd_window: u32,
    /// R2T-solicited write data one iSCSI connection may have requested and not yet handed
    /// to the volume; further R2Ts wait.
    pub iscsi_write_budget: Size,
    /// KATO for NVMe I/O controllers whose host asks for none (milliseconds): an association
    /// nobody keeps alive still ends and frees its controller id.
    pub nvme_default_kato_ms: u32,
    /// NVMe discovery controllers live at once (each takes a controller id).
    pub nvme_max_discovery_controllers: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 4096,
            login_timeout_ms: 15_000,
            iscsi_cmd_window: 128,
            iscsi_write_budget: Size(64 << 20),
            nvme_default_kato_ms: 120_000,
            nvme_max_discovery_controllers: 256,
        }
    }
}

impl LimitsConfig {
    /// Why the limits cannot be used, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        let bad = |what: &str| Err(format!("[limits] {what}"));
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1");
        }
        if self.login_timeout_ms == 0 {
            return bad("login_timeout_ms must be positive");
        }
        if !(1..=65_536).contains(&self.iscsi_cmd_window) {
            return bad("iscsi_cmd_window must be 1 to 65536");
        }
        if self.iscsi_write_budget.0 < 1 << 20 {
            return bad("iscsi_write_budget must be at least 1MiB");
        }
        if self.nvme_max_discovery_controllers == 0 {
            return bad("nvme_max_discovery_controllers must be at least 1");
        }
        Ok(())
    }

    /// The login / Connect deadline.
    pub fn login_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.login_timeout_ms)
    }
}
