//! The `[cluster]` section: where etcd is and how the leases are timed.

use serde::Deserialize;

/// Coordination through etcd. Empty `etcd` (the default): no etcd, the node runs alone or
/// with operator-driven replication as before.
///
/// The defaults are chosen against the hosts' command timeouts (Linux SCSI disk timeout 30 s,
/// NVMe io_timeout 30 s) and the replication timeout (`[replication] timeout_ms`, 10 s):
/// a primary renews every `renew_interval_ms` (2 s) a lease of `lease_ttl_s` (10 s) and
/// fences itself `safety_margin_ms` (2 s) before the lease could end in etcd, 8 s after the
/// last confirmed renewal was sent. A standby sees the leader key gone at most one renew
/// interval after etcd deleted it, so an automatic failover takes at most
/// TTL + renew interval + promotion = 10 + 2 + <1 s, about 13 s, well inside the 30 s a host
/// command may wait, and a flush held by a silent standby (10 s) also ends inside it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// etcd endpoints (`http://10.0.0.5:2379`); empty: no etcd.
    pub etcd: Vec<String>,
    /// Prefix of every key this node reads and writes.
    pub prefix: String,
    /// TTL of the node's lease, seconds (etcd's minimum is about 2 s with its default timing).
    pub lease_ttl_s: u64,
    /// How often the lease is renewed and the volumes' keys are read, milliseconds.
    pub renew_interval_ms: u64,
    /// How long before the lease could end in etcd the primary stops serving, milliseconds.
    pub safety_margin_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            etcd: Vec::new(),
            prefix: "/tandem".into(),
            lease_ttl_s: 10,
            renew_interval_ms: 2_000,
            safety_margin_ms: 2_000,
        }
    }
}

impl ClusterConfig {
    /// Checks the timing: the margin must leave time to serve, and renewals must come several
    /// times per TTL.
    pub fn validate(&self) -> Result<(), String> {
        if self.etcd.is_empty() {
            return Ok(());
        }
        let ttl_ms = self.lease_ttl_s.saturating_mul(1000);
        if self.lease_ttl_s < 2 {
            return Err("cluster.lease_ttl_s must be at least 2 (etcd's minimum TTL)".into());
        }
        if self.safety_margin_ms == 0 || self.safety_margin_ms >= ttl_ms {
            return Err(format!(
                "cluster.safety_margin_ms must be above 0 and below the lease TTL ({ttl_ms} ms)"
            ));
        }
        if self.renew_interval_ms == 0
            || self.renew_interval_ms.saturating_mul(2) > ttl_ms - self.safety_margin_ms
        {
            return Err(format!(
                "cluster.renew_interval_ms must be above 0 and at most half of TTL minus the \
                 safety margin ({} ms)",
                (ttl_ms - self.safety_margin_ms) / 2
            ));
        }
        if !self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return Err(format!(
                "cluster.prefix {:?} must start with / and not end with /",
                self.prefix
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_timing_is_checked() {
        let mut c = ClusterConfig {
            etcd: vec!["http://127.0.0.1:2379".into()],
            ..Default::default()
        };
        assert_eq!(c.validate(), Ok(()));
        c.safety_margin_ms = 10_000;
        assert!(c.validate().is_err());
        c.safety_margin_ms = 2_000;
        c.renew_interval_ms = 5_000;
        assert!(c.validate().is_err());
        c.renew_interval_ms = 500;
        c.prefix = "tandem/".into();
        assert!(c.validate().is_err());
    }
}
