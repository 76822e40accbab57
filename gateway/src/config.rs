//! The daemon's configuration: volumes, iSCSI targets and portals, NVMe/TCP subsystems.
//!
//! Read from TOML (see docs/configuration.md). Every field has a default, so `tandem serve` with
//! no file at all serves one 1 GiB volume on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod limits;
pub use limits::LimitsConfig;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid configuration {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What serde said.
        source: Box<toml::de::Error>,
    },
    /// The values contradict each other.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory under which volumes without an explicit path live.
    pub data_dir: PathBuf,
    /// The volumes this node serves.
    #[serde(rename = "volume")]
    pub volumes: Vec<VolumeConfig>,
    /// The iSCSI front end.
    pub iscsi: IscsiConfig,
    /// The NVMe/TCP front end.
    pub nvme: crate::nvme::config::NvmeConfig,
    /// The admin HTTP API (`tandem status`, Prometheus metrics).
    pub admin: AdminConfig,
    /// This node's identity (for replication handshakes).
    pub node: NodeConfig,
    /// The replication listener and timeout, used when a volume names a `peer`.
    pub replication: ReplicationConfig,
    /// What peers may hold of this node (connections, login time, buffered commands).
    pub limits: LimitsConfig,
    /// How the volumes' storage behaves under pressure.
    pub storage: StorageConfig,
    /// Automatic failover through etcd (`[cluster] etcd`); none by default.
    pub cluster: crate::cluster::ClusterConfig,
}

/// The hosts' command timeout both protocols' Linux initiators use by default (SCSI disk
/// timeout, NVMe io_timeout): every wait a command may sit in must end well before it.
pub const HOST_COMMAND_TIMEOUT_MS: u64 = 30_000;

/// How the volumes' storage behaves under pressure.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// How long a write waits for room in a full write-ahead log (the flusher cannot keep up)
    /// before it fails. It must end below the hosts' command timeouts (30 s), so a host gets an
    /// answer instead of timing the command out and aborting it.
    pub log_full_timeout_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            log_full_timeout_ms: blockstore::engine::DEFAULT_LOG_FULL_TIMEOUT.as_millis() as u64,
        }
    }
}

/// This node's identity. Replication handshakes carry it so each side knows which node it talks
/// to; without a configured id one is generated on first start and kept in the data directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// 16 bytes as 32 hex digits; default: generated once and persisted as `<data_dir>/node-id`.
    pub id: Option<String>,
    /// This node's path group: its ALUA target port group id, the base of its relative target
    /// port ids and of its default NVMe controller id range (`crate::paths::ids`). The two
    /// nodes of a replicated volume need different values (e.g. 1 and 2).
    pub path_group: u16,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: None,
            path_group: 1,
        }
    }
}

/// Replication between this node and the peers named by volumes (`[[volume]] peer`). Nothing
/// listens and nothing dials unless a volume has a peer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Where this node accepts its primaries' connections (for every replicated volume: a standby
    /// applies what the primary ships; any other role still meets its epoch).
    pub listen: SocketAddr,
    /// How long a flush waits for an in-sync standby before the standby is durably declared out
    /// of sync and flushes go on without it. Keep it well below the hosts' command timeouts
    /// (SCSI 30 s, Linux NVMe io_timeout 30 s), so hosts never time out while it runs.
    pub timeout_ms: u64,
    /// Upper bound on the data a full resync (rebuild of a standby whose records were
    /// recycled) copies per second, in MiB/s, so the rebuild leaves disk and network to the
    /// hosts' I/O; 0 (the default) copies as fast as the standby takes it.
    pub resync_rate_mib_s: u64,
}

impl ReplicationConfig {
    /// The rebuild's rate limit in bytes per second (`None`: unlimited).
    pub fn resync_rate_bytes(&self) -> Option<u64> {
        (self.resync_rate_mib_s > 0).then(|| self.resync_rate_mib_s.saturating_mul(1 << 20))
    }
}

/// Where the replication listener binds by default (a port of its own beside the admin API's).
pub const DEFAULT_REPLICATION_LISTEN: &str = "127.0.0.1:9750";

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9750)),
            timeout_ms: 10_000,
            resync_rate_mib_s: 0,
        }
    }
}

/// The role a replicated volume starts in on this node (when it is created; afterwards the
/// persisted role, changed by promote / demote, decides).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeRole {
    /// Serves hosts and ships its log to the peer (dials it).
    #[default]
    Primary,
    /// Receives the primary's log (accepts it on `[replication] listen`); refuses host I/O.
    Standby,
}

/// The admin HTTP API: `GET /v1/volumes` (what `tandem status` shows), `GET /metrics`, and
/// the control plane (docs/api.md), whose mutating requests need the bearer token. It listens
/// on loopback unless told otherwise.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve the admin API at all.
    pub enabled: bool,
    /// Listen address.
    pub listen: SocketAddr,
    /// How long a client may take to send a request's headers, and may stay idle between
    /// requests, before its connection is closed (slow-loris protection).
    pub header_read_timeout_ms: u64,
    /// How long answering one request may take before it is answered 503.
    pub request_timeout_ms: u64,
    /// Connections served at the same time; more are answered 503 and closed.
    pub max_connections: usize,
    /// The file holding the bearer token mutating requests must carry (generated with mode
    /// 0600 on first start when missing); default `<data_dir>/admin-token`.
    pub token_file: Option<PathBuf>,
    /// The file holding the peer node's admin token, which a switchover sends when it asks the
    /// peer to take over; default: this node's own token (both nodes given the same one).
    pub peer_token_file: Option<PathBuf>,
}

/// Where the admin API listens by default (and where `tandem status` looks).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9740";

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9740)),
            header_read_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
            max_connections: 64,
            token_file: None,
            peer_token_file: None,
        }
    }
}

/// One volume.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// Name used by targets, the CLI and metrics.
    pub name: String,
    /// Directory of the volume (default: `<data_dir>/<name>`).
    pub path: Option<PathBuf>,
    /// Size of the volume, e.g. "1GiB" or a number of bytes: the size it is created with; a
    /// larger one at a later start grows it, a smaller one is refused in the log
    /// (`crate::volumes`).
    #[serde(default = "default_size")]
    pub size: Size,
    /// Logical block size when created: 512 or 4096.
    #[serde(default = "default_block_size")]
    pub block_size: u32,
    /// Write-ahead log size when created.
    #[serde(default = "default_wal_size")]
    pub wal_size: Size,
    /// Role on this node when the volume is created (replicated volumes only).
    #[serde(default)]
    pub role: VolumeRole,
    /// The other node's replication address ("host:port"): a primary dials it, a standby
    /// expects its primary from there. Without it the volume is not replicated.
    #[serde(default)]
    pub peer: Option<String>,
    /// The volume UUID (both nodes must create the volume with the same one); required with
    /// `peer`, optional otherwise (default: random at creation).
    #[serde(default)]
    pub uuid: Option<String>,
}

impl VolumeConfig {
    /// A plain (not replicated) volume with the default block and log sizes.
    pub fn new(name: &str, size: Size) -> VolumeConfig {
        VolumeConfig {
            name: name.to_string(),
            path: None,
            size,
            block_size: default_block_size(),
            wal_size: default_wal_size(),
            role: VolumeRole::Primary,
            peer: None,
            uuid: None,
        }
    }

    /// The configured UUID, parsed.
    pub fn parsed_uuid(&self) -> Result<Option<[u8; 16]>, String> {
        self.uuid
            .as_deref()
            .map(|u| {
                uuid::Uuid::parse_str(u)
                    .map(|u| *u.as_bytes())
                    .map_err(|e| format!("volume {:?}: uuid {u:?}: {e}", self.name))
            })
            .transpose()
    }
}

/// A byte count written as a number or with a binary unit suffix (KiB, MiB, GiB, TiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" => 1 << 10,
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            "TiB" | "T" => 1 << 40,
            u => {
                return Err(format!(
                    "unknown size unit {u:?} in {s:?} (use KiB, MiB, GiB, TiB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(Size)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

fn default_size() -> Size {
    Size(1 << 30)
}
fn default_block_size() -> u32 {
    512
}
fn default_wal_size() -> Size {
    Size(128 << 20)
}

/// The iSCSI front end.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IscsiConfig {
    /// Serve iSCSI at all.
    pub enabled: bool,
    /// Listening portals.
    #[serde(rename = "portal")]
    pub portals: Vec<PortalConfig>,
    /// Targets and their LUNs.
    #[serde(rename = "target")]
    pub targets: Vec<TargetConfig>,
    /// CHAP for discovery sessions (none when absent).
    pub discovery_chap: Option<ChapConfig>,
}

/// One listening address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Address given to hosts in SendTargets (default: the listen address). Set it when hosts
    /// reach this node through another address (NAT, a VM's user network).
    pub advertise: Option<SocketAddr>,
    /// Target portal group tag of this portal.
    #[serde(default = "default_tpgt")]
    pub tpgt: u16,
}

fn default_tpgt() -> u16 {
    1
}

/// One iSCSI target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The target's IQN.
    pub iqn: String,
    /// LUN number to volume name.
    #[serde(rename = "lun")]
    pub luns: Vec<LunConfig>,
    /// CHAP for this target (none when absent).
    pub chap: Option<ChapConfig>,
    /// Initiator names (IQN/EUI/NAA) allowed to log in to this target and to see it in
    /// SendTargets; absent: any initiator.
    pub allowed_initiators: Option<Vec<String>>,
}

/// One LUN of a target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LunConfig {
    /// LUN number.
    pub id: u16,
    /// Name of the volume it exports.
    pub volume: String,
}

/// CHAP credentials. Secrets belong in the config file, never in the repository.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChapConfig {
    /// The user name the initiator presents.
    pub username: String,
    /// The secret it proves knowledge of (12 to 16 characters recommended by RFC 7143).
    pub secret: String,
    /// For mutual CHAP: the target's own name and secret.
    pub target_username: Option<String>,
    /// For mutual CHAP: the target's own secret.
    pub target_secret: Option<String>,
    /// Allow MD5 (off for hosts in FIPS mode, which refuse it anyway).
    #[serde(default = "yes")]
    pub allow_md5: bool,
}

fn yes() -> bool {
    true
}

impl ChapConfig {
    /// Refuses settings a login could only fail with, or that weaken CHAP: mutual CHAP with
    /// only one of `target_username` / `target_secret`, an initiator secret equal to the
    /// target's (RFC 7143 section 12.1.3 forbids it: a reflection of the target's challenge
    /// would authenticate), and empty names or secrets. `what` names the section in messages.
    pub fn validate(&self, what: &str) -> Result<(), String> {
        if self.username.is_empty() || self.secret.is_empty() {
            return Err(format!("{what}: username and secret must not be empty"));
        }
        match (&self.target_username, &self.target_secret) {
            (None, None) => Ok(()),
            (Some(_), None) | (None, Some(_)) => Err(format!(
                "{what}: mutual CHAP needs both target_username and target_secret \
                 (only one of them is set)"
            )),
            (Some(n), Some(s)) if n.is_empty() || s.is_empty() => Err(format!(
                "{what}: target_username and target_secret must not be empty"
            )),
            (Some(_), Some(s)) if s == &self.secret => Err(format!(
                "{what}: target_secret must differ from the initiator's secret \
                 (RFC 7143 12.1.3: identical secrets let a reflected challenge authenticate)"
            )),
            _ => Ok(()),
        }
    }
}

/// Whether `n` has the form of an iSCSI name (`iqn.`, `eui.` or `naa.`).
fn iscsi_name(n: &str) -> bool {
    ["iqn.", "eui.", "naa."]
        .iter()
        .any(|p| n.get(..4).is_some_and(|h| h.eq_ignore_ascii_case(p)))
        && n.len() <= 223
}

/// The IQN of the default target.
pub const DEFAULT_IQN: &str = "iqn.2026-11.io.tandem:default";

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("tandem-data"),
            volumes: vec![VolumeConfig::new("default", default_size())],
            iscsi: IscsiConfig::default(),
            nvme: Default::default(),
            admin: AdminConfig::default(),
            node: NodeConfig::default(),
            replication: ReplicationConfig::default(),
            limits: LimitsConfig::default(),
            storage: StorageConfig::default(),
            cluster: Default::default(),
        }
    }
}

impl Default for IscsiConfig {
    fn default() -> Self {
        IscsiConfig {
            enabled: true,
            portals: vec![PortalConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 3260)),
                advertise: None,
                tpgt: 1,
            }],
            targets: vec![TargetConfig {
                iqn: DEFAULT_IQN.into(),
                luns: vec![LunConfig {
                    id: 0,
                    volume: "default".into(),
                }],
                chap: None,
                allowed_initiators: None,
            }],
            discovery_chap: None,
        }
    }
}

impl Config {
    /// Loads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates TOML text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_path_buf(),
            source: Box::new(source),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks cross-references and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let mut names = std::collections::HashSet::new();
        let mut dirs = std::collections::HashMap::new();
        for v in &self.volumes {
            // Two volumes in one directory would open the same files twice.
            if let Some(other) = dirs.insert(lexical(&self.volume_dir(v)), v.name.as_str()) {
                return bad(format!(
                    "volumes {other:?} and {:?} name the same directory {}",
                    v.name,
                    self.volume_dir(v).display()
                ));
            }
            if v.name.is_empty() || v.name.contains('/') {
                return bad(format!(
                    "volume name {:?} must be non-empty without '/'",
                    v.name
                ));
            }
            if !names.insert(v.name.as_str()) {
                return bad(format!("volume {:?} is defined twice", v.name));
            }
            if v.block_size != 512 && v.block_size != 4096 {
                return bad(format!(
                    "volume {:?}: block_size must be 512 or 4096",
                    v.name
                ));
            }
            v.parsed_uuid().map_err(ConfigError::Invalid)?;
            if v.peer.is_some() && v.uuid.is_none() {
                return bad(format!(
                    "volume {:?} has a peer but no uuid: both nodes must create it with the same uuid",
                    v.name
                ));
            }
        }
        self.cluster.validate().map_err(ConfigError::Invalid)?;
        let mut iqns = std::collections::HashSet::new();
        for t in &self.iscsi.targets {
            if !iscsi_name(&t.iqn) {
                return bad(format!(
                    "target name {:?} is not an iqn./eui./naa. name",
                    t.iqn
                ));
            }
            if !iqns.insert(t.iqn.as_str()) {
                return bad(format!("target {:?} is defined twice", t.iqn));
            }
            if let Some(c) = &t.chap {
                c.validate(&format!("target {:?} chap", t.iqn))
                    .map_err(ConfigError::Invalid)?;
            }
            if let Some(list) = &t.allowed_initiators {
                if list.is_empty() {
                    return bad(format!(
                        "target {:?}: allowed_initiators is empty, so no initiator could log in \
                         (leave it out to admit any initiator)",
                        t.iqn
                    ));
                }
                if let Some(n) = list.iter().find(|n| !iscsi_name(n)) {
                    return bad(format!(
                        "target {:?}: allowed_initiators entry {n:?} is not an iqn./eui./naa. name",
                        t.iqn
                    ));
                }
            }
            let mut ids = std::collections::HashSet::new();
            for l in &t.luns {
                if !names.contains(l.volume.as_str()) {
                    return bad(format!(
                        "target {:?} LUN {} names unknown volume {:?}",
                        t.iqn, l.id, l.volume
                    ));
                }
                if !ids.insert(l.id) {
                    return bad(format!("target {:?} has LUN {} twice", t.iqn, l.id));
                }
            }
        }
        if let Some(c) = &self.iscsi.discovery_chap {
            c.validate("discovery_chap").map_err(ConfigError::Invalid)?;
        }
        if self.iscsi.enabled && self.iscsi.portals.is_empty() {
            return bad("iSCSI is enabled but has no portal".into());
        }
        if let Some(id) = &self.node.id {
            crate::replication::node::parse_id(id).map_err(ConfigError::Invalid)?;
        }
        crate::paths::ids::check(self.node.path_group, self.iscsi.portals.len())
            .map_err(ConfigError::Invalid)?;
        let a = &self.admin;
        if a.header_read_timeout_ms == 0 || a.request_timeout_ms == 0 || a.max_connections == 0 {
            return bad(
                "[admin] header_read_timeout_ms, request_timeout_ms and max_connections must be positive"
                    .into(),
            );
        }
        self.limits.check().map_err(ConfigError::Invalid)?;
        let t = self.storage.log_full_timeout_ms;
        if t == 0 || t >= HOST_COMMAND_TIMEOUT_MS {
            return bad(format!(
                "[storage] log_full_timeout_ms = {t} must be positive and below the hosts' \
                 {HOST_COMMAND_TIMEOUT_MS} ms command timeout"
            ));
        }
        if self.replication.timeout_ms == 0 {
            return bad("[replication] timeout_ms must be positive".into());
        }
        self.nvme
            .validate(&names, self.node.path_group)
            .map_err(ConfigError::Invalid)
    }

    /// Whether any volume is replicated (names a peer): only then does the node listen for
    /// replication.
    pub fn replicated(&self) -> bool {
        self.volumes.iter().any(|v| v.peer.is_some())
    }

    /// The directory of a volume.
    pub fn volume_dir(&self, v: &VolumeConfig) -> PathBuf {
        v.path
            .clone()
            .unwrap_or_else(|| self.data_dir.join(&v.name))
    }
}

/// `path` with `.` components and repeated or trailing separators removed (without touching
/// the file system, which may not hold the directory yet), so spellings of one directory compare
/// equal.
fn lexical(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_serves_one_volume_on_loopback() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.volumes[0].size, Size(1 << 30));
        assert_eq!(c.iscsi.portals[0].listen.to_string(), "127.0.0.1:3260");
        assert_eq!(
            c.volume_dir(&c.volumes[0]),
            PathBuf::from("tandem-data/default")
        );
    }

    #[test]
    fn sizes_parse_with_units_and_errors_are_clear() {
        assert_eq!("64MiB".parse::<Size>(), Ok(Size(64 << 20)));
        assert_eq!("4096".parse::<Size>(), Ok(Size(4096)));
        assert!("3 parsecs".parse::<Size>().unwrap_err().contains("unit"));
        assert!("99999999999TiB"
            .parse::<Size>()
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn the_path_group_sets_the_default_cntlid_range_and_explicit_bounds_win() {
        let c = Config::parse("[node]\npath_group = 2\n", Path::new("t.toml")).unwrap();
        assert_eq!(c.node.path_group, 2);
        assert_eq!(c.nvme.cntlids(c.node.path_group), 4097..=8191);
        let c = Config::parse(
            "[node]\npath_group = 2\n[nvme]\ncntlid_min = 100\ncntlid_max = 200\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.nvme.cntlids(2), 100..=200);
        assert_eq!(Config::default().node.path_group, 1);
        assert_eq!(Config::default().nvme.cntlids(1), 1..=4095);
        let bad = Config::parse("[node]\npath_group = 0\n", Path::new("t.toml"));
        assert!(bad.unwrap_err().to_string().contains("path_group"));
    }

    #[test]
    fn a_full_file_parses_and_bad_references_are_refused() {
        let text = r#"
            data_dir = "/var/lib/tandem"
            [[volume]]
            name = "db"
            size = "10GiB"
            block_size = 4096
            [iscsi]
            [[iscsi.portal]]
            listen = "0.0.0.0:3260"
            advertise = "192.0.2.10:3260"
            tpgt = 2
            [[iscsi.target]]
            iqn = "iqn.2026-11.io.tandem:db"
            [[iscsi.target.lun]]
            id = 0
            volume = "db"
        "#;
        let c = Config::parse(text, Path::new("t.toml")).unwrap();
        assert_eq!(c.volumes[0].size, Size(10 << 30));
        assert_eq!(c.iscsi.portals[0].tpgt, 2);
        let bad = text.replace("volume = \"db\"\n", "volume = \"nope\"\n");
        let e = Config::parse(&bad, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown volume"), "{e}");
        let e = Config::parse("bogus = 1", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml"), "{e}");
    }

    const CHAP_TARGET: &str = r#"
            [[iscsi.target]]
            iqn = "iqn.2026-11.io.tandem:db"
            [[iscsi.target.lun]]
            id = 0
            volume = "default"
            [iscsi.target.chap]
            username = "host1"
            secret = "initiator-secret-1"
            target_username = "tandem"
            target_secret = "target-secret-22"
        "#;

    #[test]
    fn one_sided_mutual_chap_and_identical_secrets_are_refused() {
        Config::parse(CHAP_TARGET, Path::new("t.toml")).unwrap();
        let e = Config::parse(
            &CHAP_TARGET.replace("target_username = \"tandem\"", ""),
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("needs both target_username and target_secret"),
            "{e}"
        );
        let e = Config::parse(
            &CHAP_TARGET.replace("target_secret = \"target-secret-22\"", ""),
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("needs both target_username and target_secret"),
            "{e}"
        );
        let e = Config::parse(
            &CHAP_TARGET.replace("target-secret-22", "initiator-secret-1"),
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("must differ from the initiator's secret"), "{e}");
        // discovery CHAP is checked the same way
        let disc = "[iscsi.discovery_chap]\nusername = \"h\"\nsecret = \"s-123456789012\"\ntarget_secret = \"t-123456789012\"\n";
        let e = Config::parse(disc, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("discovery_chap: mutual CHAP needs both"), "{e}");
    }

    #[test]
    fn allowed_initiators_must_be_iscsi_names_and_not_empty() {
        let with = |list: &str| {
            CHAP_TARGET.replace(
                "iqn = \"iqn.2026-11.io.tandem:db\"",
                &format!("iqn = \"iqn.2026-11.io.tandem:db\"\nallowed_initiators = {list}"),
            )
        };
        let c = Config::parse(
            &with("[\"iqn.1994-05.com.redhat:h1\"]"),
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(
            c.iscsi.targets[0].allowed_initiators.as_deref(),
            Some(&["iqn.1994-05.com.redhat:h1".to_string()][..])
        );
        let e = Config::parse(&with("[]"), Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("allowed_initiators is empty"), "{e}");
        let e = Config::parse(&with("[\"host1\"]"), Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an iqn./eui./naa. name"), "{e}");
    }

    #[test]
    fn the_log_full_wait_stays_below_host_command_timeouts() {
        let c = Config::default();
        assert_eq!(c.storage.log_full_timeout_ms, 20_000);
        let e = Config::parse(
            "[storage]\nlog_full_timeout_ms = 60000\n",
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("below the hosts'"), "{e}");
        let c = Config::parse(
            "[storage]\nlog_full_timeout_ms = 5000\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.storage.log_full_timeout_ms, 5000);
    }

    #[test]
    fn a_volume_directory_named_twice_is_refused() {
        let text = r#"
            data_dir = "/var/lib/tandem"
            [[volume]]
            name = "default"
            [[volume]]
            name = "b"
            path = "/var/lib/tandem/./default/"
        "#;
        let e = Config::parse(text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("same directory"), "{e}");
        let ok = text.replace("/./default/", "/b");
        Config::parse(&ok, Path::new("t.toml")).unwrap();
    }

    #[test]
    fn replicated_volumes_need_a_uuid_and_defaults_stay_single_node() {
        let c = Config::default();
        assert!(!c.replicated());
        assert_eq!(c.replication.timeout_ms, 10_000);
        let text = r#"
            [node]
            id = "000102030405060708090a0b0c0d0e0f"
            [replication]
            listen = "127.0.0.1:9751"
            timeout_ms = 1000
            resync_rate_mib_s = 40
            [[volume]]
            name = "default"
            role = "standby"
            peer = "127.0.0.1:9750"
            uuid = "6f1c1f0e-8d3a-4a43-9a55-7d9a0b1f0c11"
        "#;
        let c = Config::parse(text, Path::new("t.toml")).unwrap();
        assert!(c.replicated());
        assert_eq!(c.volumes[0].role, VolumeRole::Standby);
        assert_eq!(c.replication.listen.port(), 9751);
        assert_eq!(c.replication.resync_rate_bytes(), Some(40 << 20));
        assert_eq!(Config::default().replication.resync_rate_bytes(), None);
        let e = Config::parse(
            &text.replace("uuid = \"6f1c1f0e-8d3a-4a43-9a55-7d9a0b1f0c11\"", ""),
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no uuid"), "{e}");
        let e = Config::parse(&text.replace("0e0f", "0e"), Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("node id"), "{e}");
    }
}

/// The commented example configuration (also in docs/configuration.md).
pub const EXAMPLE: &str = include_str!("example.toml");

#[cfg(test)]
mod fields;

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_example_parses_and_matches_the_docs() {
        let c = Config::parse(EXAMPLE, Path::new("example.toml")).unwrap();
        assert_eq!(c.volumes.len(), 1);
        let docs = include_str!("../../docs/configuration.md");
        assert!(
            docs.contains(EXAMPLE),
            "docs/configuration.md must embed example.toml"
        );
        assert_eq!(
            include_str!("../../packaging/tandem.toml"),
            EXAMPLE,
            "packaging/tandem.toml (the Debian package's /etc/tandem/tandem.toml) is \
             `tandem example-config`'s output: regenerate it"
        );
    }

    /// The field paths of docs/configuration.md's reference table (its rows' first cells).
    fn documented_fields(docs: &str) -> std::collections::BTreeSet<String> {
        let table = &docs[docs
            .find("## Reference")
            .expect("a \"## Reference\" section")..];
        table
            .lines()
            .take_while(|l| !l.starts_with("```"))
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|row| row.split_once('`'))
            .map(|(path, _)| path.to_string())
            .collect()
    }

    #[test]
    fn the_reference_table_has_a_row_for_every_field_and_no_other() {
        let fields = fields::paths::<Config>();
        for must in [
            "data_dir",
            "volume.wal_size",
            "iscsi.target.chap.allow_md5",
            "nvme.subsystem.namespace.nsid",
            "nvme.discovery_advertise",
            "admin.listen",
        ] {
            assert!(fields.contains(must), "the walk missed {must}: {fields:?}");
        }
        assert!(
            !fields.contains("nvme.subsystem.any_host"),
            "not a file key"
        );
        let rows = documented_fields(include_str!("../../docs/configuration.md"));
        let undocumented: Vec<_> = fields.difference(&rows).collect();
        let unknown: Vec<_> = rows.difference(&fields).collect();
        assert!(
            undocumented.is_empty(),
            "fields without a row in docs/configuration.md: {undocumented:?}"
        );
        assert!(
            unknown.is_empty(),
            "rows in docs/configuration.md naming no field: {unknown:?}"
        );
    }
}
