//! The control plane's persisted state: what the admin API changed, kept in the data directory
//! as `control-state.json` (mode 0600: it holds CHAP and DH-HMAC-CHAP secrets).
//!
//! It holds the sections the API manages, whole: the volumes, the iSCSI targets (LUNs,
//! initiator lists, CHAP) and discovery CHAP, the NVMe subsystems (namespaces, allowed hosts)
//! and DH-HMAC-CHAP hosts. Once it exists, those sections come from it at every start and the
//! configuration file's are ignored (a warning says so when they differ); everything else
//! (portals, limits, replication, the admin API itself) still comes from the file. It is
//! written atomically: a temporary file is written and synced, renamed over the old one, and
//! the directory is synced, so a crash leaves the old state or the new one, never a mix.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{ChapConfig, Config, TargetConfig, VolumeConfig};
use crate::nvme::config::{NamespaceConfig, NvmeHostConfig, SubsystemConfig};

/// The state file's name in the data directory.
pub const STATE_FILE: &str = "control-state.json";

/// The version of the state file's format this build writes and reads.
const VERSION: u32 = 1;

/// An NVMe subsystem as stored (with `any_host`, which the configuration file cannot say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredSubsystem {
    nqn: String,
    serial: Option<String>,
    allowed_hosts: Option<Vec<String>>,
    namespaces: Vec<NamespaceConfig>,
    any_host: bool,
}

/// The sections of the configuration the control plane manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    version: u32,
    volumes: Vec<VolumeConfig>,
    iscsi_targets: Vec<TargetConfig>,
    iscsi_discovery_chap: Option<ChapConfig>,
    nvme_subsystems: Vec<StoredSubsystem>,
    nvme_hosts: Vec<NvmeHostConfig>,
}

impl Stored {
    fn of(cfg: &Config) -> Stored {
        Stored {
            version: VERSION,
            volumes: cfg.volumes.clone(),
            iscsi_targets: cfg.iscsi.targets.clone(),
            iscsi_discovery_chap: cfg.iscsi.discovery_chap.clone(),
            nvme_subsystems: cfg
                .nvme
                .subsystems
                .iter()
                .map(|s| StoredSubsystem {
                    nqn: s.nqn.clone(),
                    serial: s.serial.clone(),
                    allowed_hosts: s.allowed_hosts.clone(),
                    namespaces: s.namespaces.clone(),
                    any_host: s.any_host,
                })
                .collect(),
            nvme_hosts: cfg.nvme.hosts.clone(),
        }
    }

    fn install(self, cfg: &mut Config) {
        cfg.volumes = self.volumes;
        cfg.iscsi.targets = self.iscsi_targets;
        cfg.iscsi.discovery_chap = self.iscsi_discovery_chap;
        cfg.nvme.subsystems = self
            .nvme_subsystems
            .into_iter()
            .map(|s| SubsystemConfig {
                nqn: s.nqn,
                serial: s.serial,
                allowed_hosts: s.allowed_hosts,
                namespaces: s.namespaces,
                any_host: s.any_host,
            })
            .collect();
        cfg.nvme.hosts = self.nvme_hosts;
    }
}

/// The state file of a node serving `cfg`.
pub fn path(cfg: &Config) -> PathBuf {
    cfg.data_dir.join(STATE_FILE)
}

/// Replaces the managed sections of `cfg` with the saved state, if there is one; returns
/// whether there was. A state file that cannot be read is an error (the node must not start
/// with exports or access lists other than the ones the operator set).
pub fn apply_saved(cfg: &mut Config) -> Result<bool, String> {
    let p = path(cfg);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("cannot read {}: {e}", p.display())),
    };
    let stored: Stored = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a control-plane state file: {e}", p.display()))?;
    if stored.version != VERSION {
        return Err(format!(
            "{} has format version {}, this tandem reads version {VERSION}",
            p.display(),
            stored.version
        ));
    }
    if Stored::of(cfg) != stored {
        tracing::warn!(state = %p.display(), "volumes, exports, host lists and CHAP come from the control plane's state file; the configuration file's differ and are ignored");
    }
    stored.install(cfg);
    Ok(true)
}

/// Writes the managed sections of `cfg` to its state file atomically.
pub fn save(cfg: &Config) -> Result<(), String> {
    let p = path(cfg);
    let text = serde_json::to_string_pretty(&Stored::of(cfg)).map_err(|e| e.to_string())?;
    write_atomically(&p, text.as_bytes()).map_err(|e| format!("cannot save {}: {e}", p.display()))
}

/// Writes `data` to `path` through a synced temporary file renamed over it, then syncs the
/// directory; the file is created with mode 0600.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(path);
    Ok(())
}

/// Syncs the directory holding `path`, so a file created or renamed there survives power
/// loss (best effort: a failure is logged).
pub fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot sync the directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_and_replaces_the_managed_sections_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        assert!(!apply_saved(&mut cfg).unwrap(), "no state yet");
        cfg.volumes
            .push(VolumeConfig::new("db", crate::config::Size(64 << 20)));
        cfg.iscsi.targets[0].allowed_initiators = Some(vec!["iqn.2026-11.h:a".into()]);
        cfg.nvme.subsystems[0].allowed_hosts = Some(vec!["nqn.2026-11.h:b".into()]);
        save(&cfg).unwrap();
        let mode = {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(path(&cfg)).unwrap().permissions().mode()
        };
        assert_eq!(mode & 0o777, 0o600);
        let mut fresh = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        fresh.admin.max_connections = 3;
        assert!(apply_saved(&mut fresh).unwrap());
        assert_eq!(fresh.volumes, cfg.volumes);
        assert_eq!(fresh.iscsi.targets, cfg.iscsi.targets);
        assert_eq!(fresh.nvme.subsystems, cfg.nvme.subsystems);
        assert!(fresh.nvme.subsystems[0].any_host);
        assert_eq!(fresh.admin.max_connections, 3, "not a managed section");
        fresh.validate().unwrap();
        std::fs::write(path(&cfg), "{").unwrap();
        assert!(apply_saved(&mut fresh)
            .unwrap_err()
            .contains("is not a control-plane state file"));
    }
}
