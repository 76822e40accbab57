//! The `[nvme]` section: NVMe/TCP portals, the discovery listeners, subsystems with their
//! namespaces and host allow-lists, and this node's CNTLID range.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

/// NQN of the subsystem `tandem serve` exports when the configuration names none.
pub const DEFAULT_NQN: &str = "nqn.2026-11.io.tandem:default";

/// The NVMe/TCP front end.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NvmeConfig {
    /// Serve NVMe/TCP at all.
    pub enabled: bool,
    /// I/O portals (they also answer discovery connects).
    #[serde(rename = "portal")]
    pub portals: Vec<NvmePortalConfig>,
    /// Addresses of the discovery-only listeners (conventionally port 8009).
    pub discovery_listen: Vec<SocketAddr>,
    /// Address the discovery log gives hosts for the discovery listeners themselves (with each
    /// listener's port; default: the listen address). Set it when listening on a wildcard
    /// address or when hosts reach this node through another address.
    pub discovery_advertise: Option<IpAddr>,
    /// Subsystems this node exports.
    #[serde(rename = "subsystem")]
    pub subsystems: Vec<SubsystemConfig>,
    /// Hosts that must authenticate (DH-HMAC-CHAP) on every subsystem they connect to.
    #[serde(rename = "host")]
    pub hosts: Vec<NvmeHostConfig>,
    /// First controller id this node hands out (default: the start of this node's path
    /// group's range, `crate::paths::ids::cntlid_range`). Every node exporting the same
    /// subsystem needs a disjoint range: native multipath needs CNTLIDs unique across it.
    pub cntlid_min: Option<u16>,
    /// Last controller id this node hands out, at most 0xFFEF (default: the end of the path
    /// group's range).
    pub cntlid_max: Option<u16>,
    /// Write data bytes a host may put inside an I/O command capsule (IOCCSZ). Larger writes
    /// cost an R2T round trip; 0 forces every write through R2T.
    pub in_capsule_size: u32,
}

/// One NVMe/TCP listening address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmePortalConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Address the discovery log gives hosts (default: the listen address). Set it when hosts
    /// reach this node through another address, or when listening on a wildcard address.
    pub advertise: Option<SocketAddr>,
}

/// A host that authenticates with DH-HMAC-CHAP (NVMe in-band authentication). Secrets are
/// in the `DHHC-1:hh:base64:` form `nvme gen-dhchap-key` prints; keep them out of version
/// control.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmeHostConfig {
    /// The host's NQN.
    pub nqn: String,
    /// The host's secret (`nvme connect --dhchap-secret`).
    pub dhchap_secret: String,
    /// The controller's secret (`--dhchap-ctrl-secret`), for hosts that also authenticate
    /// the controller (bidirectional); without it such hosts are refused.
    pub dhchap_ctrl_secret: Option<String>,
    /// Hash functions accepted, preferred first (`sha256`, `sha384`, `sha512`; default: all,
    /// SHA-256 first).
    pub dhchap_hashes: Option<Vec<String>>,
    /// DH groups accepted, preferred first (`ffdhe2048` .. `ffdhe8192`, `null` for none;
    /// default: all, ffdhe2048 first and `null` last).
    pub dhchap_dhgroups: Option<Vec<String>>,
}

impl NvmeHostConfig {
    /// The controller-side policy for this host, or why the entry is unusable.
    pub fn policy(&self) -> Result<proto_nvmeof::auth::DhchapPolicy, String> {
        use proto_nvmeof::auth::{DhGroup, DhchapPolicy, DhchapSecret, HashId};
        let what = format!("nvme host {:?}", self.nqn);
        let host = DhchapSecret::parse(&self.dhchap_secret)
            .map_err(|e| format!("{what}: dhchap_secret: {e}"))?;
        let ctrl = self
            .dhchap_ctrl_secret
            .as_deref()
            .map(|c| DhchapSecret::parse(c).map_err(|e| format!("{what}: dhchap_ctrl_secret: {e}")))
            .transpose()?;
        if ctrl.as_ref().is_some_and(|c| c.key == host.key) {
            return Err(format!(
                "{what}: dhchap_ctrl_secret must differ from dhchap_secret (with one key \
                 for both directions a reflected challenge would authenticate)"
            ));
        }
        let mut p = DhchapPolicy::new(host, ctrl);
        if let Some(hs) = &self.dhchap_hashes {
            p.hashes = hs
                .iter()
                .map(|h| {
                    HashId::from_name(h).ok_or_else(|| {
                        format!("{what}: unknown hash {h:?} (sha256, sha384, sha512)")
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(gs) = &self.dhchap_dhgroups {
            p.dhgroups = gs
                .iter()
                .map(|g| {
                    DhGroup::from_name(g).ok_or_else(|| {
                        format!("{what}: unknown DH group {g:?} (null, ffdhe2048 .. ffdhe8192)")
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if p.hashes.is_empty() || p.dhgroups.is_empty() {
            return Err(format!(
                "{what}: dhchap_hashes and dhchap_dhgroups must not be empty"
            ));
        }
        Ok(p)
    }
}

/// One NVM subsystem.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsystemConfig {
    /// Subsystem NQN (the same on every node exporting it).
    pub nqn: String,
    /// Serial number (at most 20 ASCII characters; default: derived from the NQN, so it is
    /// the same on every node and across restarts).
    pub serial: Option<String>,
    /// Host NQNs allowed to connect. Required for configured subsystems; only the built-in
    /// default subsystem admits any host.
    pub allowed_hosts: Option<Vec<String>>,
    /// Namespaces.
    #[serde(rename = "namespace", default)]
    pub namespaces: Vec<NamespaceConfig>,
    /// Set only on the built-in default subsystem: any host may connect.
    #[serde(skip)]
    pub any_host: bool,
}

/// One namespace of a subsystem.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Namespace id (1..=128; it is also the namespace's ANA group).
    pub nsid: u32,
    /// Name of the volume it exports.
    pub volume: String,
}

/// Highest namespace id: each namespace is its own ANA group, and ANAGRPMAX is 128.
pub const MAX_NSID: u32 = 128;

impl Default for NvmeConfig {
    fn default() -> Self {
        NvmeConfig {
            enabled: true,
            portals: vec![NvmePortalConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 4420)),
                advertise: None,
            }],
            discovery_listen: vec![SocketAddr::from(([127, 0, 0, 1], 8009))],
            discovery_advertise: None,
            subsystems: vec![SubsystemConfig {
                nqn: DEFAULT_NQN.into(),
                serial: None,
                allowed_hosts: None,
                namespaces: vec![NamespaceConfig {
                    nsid: 1,
                    volume: "default".into(),
                }],
                any_host: true,
            }],
            hosts: Vec::new(),
            cntlid_min: None,
            cntlid_max: None,
            in_capsule_size: 16384,
        }
    }
}

fn valid_nqn(n: &str) -> bool {
    n.starts_with("nqn.") && n.len() < 224 && n.bytes().all(|b| b.is_ascii_graphic())
}

impl NvmeConfig {
    /// The controller ids this node hands out: the configured bounds, each defaulting to the
    /// range of `path_group` (so the two nodes of a volume never hand out the same CNTLID).
    pub fn cntlids(&self, path_group: u16) -> std::ops::RangeInclusive<u16> {
        let d = crate::paths::ids::cntlid_range(path_group);
        self.cntlid_min.unwrap_or(*d.start())..=self.cntlid_max.unwrap_or(*d.end())
    }

    /// Checks names, ranges and volume references (`volumes`: the configured volume names;
    /// `path_group`: this node's, for the default CNTLID range).
    pub fn validate(&self, volumes: &HashSet<&str>, path_group: u16) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if self.portals.is_empty() {
            return Err("NVMe/TCP is enabled but has no portal".into());
        }
        let r = self.cntlids(path_group);
        if *r.start() == 0 || r.start() > r.end() || *r.end() > 0xFFEF {
            return Err(format!(
                "nvme: CNTLID range {}..={} must lie within 1..=65519",
                r.start(),
                r.end()
            ));
        }
        if self.in_capsule_size > 1 << 20 || !self.in_capsule_size.is_multiple_of(16) {
            return Err("nvme: in_capsule_size must be a multiple of 16, at most 1 MiB".into());
        }
        let mut hosts = HashSet::new();
        for h in &self.hosts {
            if !valid_nqn(&h.nqn) {
                return Err(format!("nvme: host {:?} is not a host NQN", h.nqn));
            }
            if !hosts.insert(h.nqn.as_str()) {
                return Err(format!("nvme: host {:?} is defined twice", h.nqn));
            }
            h.policy()?;
        }
        let mut nqns = HashSet::new();
        for s in &self.subsystems {
            if !valid_nqn(&s.nqn) || s.nqn == proto_nvmeof::DISCOVERY_NQN {
                return Err(format!("nvme: {:?} is not a usable subsystem NQN", s.nqn));
            }
            if !nqns.insert(s.nqn.as_str()) {
                return Err(format!("nvme: subsystem {:?} is defined twice", s.nqn));
            }
            if let Some(sn) = &s.serial {
                if sn.is_empty() || sn.len() > 20 || !sn.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(format!(
                        "nvme: subsystem {:?}: serial must be 1 to 20 printable ASCII characters",
                        s.nqn
                    ));
                }
            }
            match &s.allowed_hosts {
                None if !s.any_host => {
                    return Err(format!(
                        "nvme: subsystem {:?} needs allowed_hosts (a list of host NQNs)",
                        s.nqn
                    ))
                }
                Some(hosts) => {
                    if let Some(h) = hosts.iter().find(|h| !valid_nqn(h)) {
                        return Err(format!(
                            "nvme: subsystem {:?}: {h:?} is not a host NQN",
                            s.nqn
                        ));
                    }
                }
                None => {}
            }
            let mut ids = HashSet::new();
            for n in &s.namespaces {
                if n.nsid == 0 || n.nsid > MAX_NSID {
                    return Err(format!(
                        "nvme: subsystem {:?}: nsid {} must be 1..={MAX_NSID}",
                        s.nqn, n.nsid
                    ));
                }
                if !ids.insert(n.nsid) {
                    return Err(format!(
                        "nvme: subsystem {:?} has nsid {} twice",
                        s.nqn, n.nsid
                    ));
                }
                // The built-in default exports the volume named "default" when there is one; a
                // file that renames its volumes without configuring NVMe just exports nothing.
                if !volumes.contains(n.volume.as_str()) && !s.any_host {
                    return Err(format!(
                        "nvme: subsystem {:?} nsid {} names unknown volume {:?}",
                        s.nqn, n.nsid, n.volume
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A serial number derived from the NQN (FNV-1a), identical on every node and every start.
pub fn derived_serial(nqn: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in nqn.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("TDM{h:016X}")
}

/// The address hosts are given for a portal: `advertise` (its port 0 meaning the bound
/// port, so `--nvme-advertise` works with ephemeral ports), else the bound address.
pub fn advertised(p: &NvmePortalConfig, bound: SocketAddr) -> SocketAddr {
    match p.advertise {
        Some(a) if a.port() == 0 => SocketAddr::new(a.ip(), bound.port()),
        Some(a) => a,
        None => bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn the_default_exports_the_default_volume_to_any_host() {
        let c = Config::default();
        c.validate().unwrap();
        let s = &c.nvme.subsystems[0];
        assert_eq!(s.nqn, DEFAULT_NQN);
        assert!(s.any_host && s.allowed_hosts.is_none());
        assert_eq!(c.nvme.portals[0].listen.to_string(), "127.0.0.1:4420");
        assert_eq!(c.nvme.discovery_listen[0].to_string(), "127.0.0.1:8009");
    }

    #[test]
    fn configured_subsystems_need_an_allow_list() {
        let text = r#"
            [[volume]]
            name = "db"
            [iscsi]
            enabled = false
            target = []
            [nvme]
            [[nvme.subsystem]]
            nqn = "nqn.2026-11.io.tandem:db"
            [[nvme.subsystem.namespace]]
            nsid = 1
            volume = "db"
        "#;
        let e = Config::parse(text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("allowed_hosts"), "{e}");
        let ok = text.replace(
            "nqn = \"nqn.2026-11.io.tandem:db\"",
            "nqn = \"nqn.2026-11.io.tandem:db\"\nallowed_hosts = [\"nqn.2014-08.org.nvmexpress:uuid:a\"]",
        );
        let c = Config::parse(&ok, Path::new("t.toml")).unwrap();
        assert!(!c.nvme.subsystems[0].any_host);
        let bad = ok.replace("nsid = 1", "nsid = 129");
        assert!(Config::parse(&bad, Path::new("t.toml")).is_err());
        assert!(crate::nvme::exports_anything(&c));
        // an iSCSI-only file without a "default" volume opens no NVMe/TCP port
        let iscsi_only = "[[volume]]\nname = \"vol\"\n[iscsi]\n[[iscsi.target]]\niqn = \"iqn.2026-11.io.tandem:v\"\n[[iscsi.target.lun]]\nid = 0\nvolume = \"vol\"\n";
        let c = Config::parse(iscsi_only, Path::new("t.toml")).unwrap();
        assert!(!crate::nvme::exports_anything(&c));
        assert!(crate::nvme::exports_anything(&Config::default()));
    }

    #[test]
    fn dhchap_hosts_parse_and_bad_secrets_are_refused_clearly() {
        // Secrets as `nvme gen-dhchap-key` prints them (32 bytes, SHA-256 indicator / none).
        let host = "DHHC-1:01:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:";
        let ctrl = proto_nvmeof::auth::DhchapSecret {
            transform: None,
            key: vec![9; 32],
        }
        .to_text();
        let text = format!(
            "[[nvme.host]]\nnqn = \"nqn.2014-08.org.nvmexpress:uuid:h1\"\n\
             dhchap_secret = \"{host}\"\ndhchap_ctrl_secret = \"{ctrl}\"\n\
             dhchap_dhgroups = [\"ffdhe3072\", \"null\"]\n"
        );
        let c = Config::parse(&text, Path::new("t.toml")).unwrap();
        let p = c.nvme.hosts[0].policy().unwrap();
        assert_eq!(
            p.dhgroups,
            [
                proto_nvmeof::auth::DhGroup::Ffdhe3072,
                proto_nvmeof::auth::DhGroup::Null
            ]
        );
        assert!(p.ctrl_secret.is_some());
        let err = |t: String| {
            Config::parse(&t, Path::new("t.toml"))
                .unwrap_err()
                .to_string()
        };
        let e = err(text.replace("KfiaR", "KfiaS"));
        assert!(e.contains("dhchap_secret") && e.contains("CRC-32"), "{e}");
        let e = err(text.replace(&ctrl, host));
        assert!(e.contains("must differ from dhchap_secret"), "{e}");
        let e = err(text.replace("ffdhe3072", "ffdhe1024"));
        assert!(e.contains("unknown DH group \"ffdhe1024\""), "{e}");
        let e = err(text.replace("DHHC-1:01", "DHHC-1:09"));
        assert!(e.contains("hash indicator"), "{e}");
        let e = err(format!("{text}{text}"));
        assert!(e.contains("defined twice"), "{e}");
    }

    #[test]
    fn serials_are_stable_and_fit_identify() {
        let a = derived_serial(DEFAULT_NQN);
        assert_eq!(a, derived_serial(DEFAULT_NQN));
        assert_ne!(a, derived_serial("nqn.2026-11.io.tandem:other"));
        assert!(a.len() <= 20);
    }
}
