//! The control plane's requests and the changes they make to the configuration: pure functions
//! on a [`Config`] (the transaction in [`super::Control`] validates, persists and applies the
//! result). Each refusal is an [`ApiError`] with the HTTP status and a message saying what to do.

use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::config::{ChapConfig, Config, LunConfig, Size, TargetConfig, VolumeConfig};
use crate::nvme::config::{NamespaceConfig, NvmeHostConfig, SubsystemConfig, MAX_NSID};

/// A protocol a volume is exported over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// An iSCSI LUN of a target.
    Iscsi,
    /// An NVMe/TCP namespace of a subsystem.
    Nvme,
}

/// `POST /v1/volumes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// The new volume's name (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// Its size in bytes (a number, or text with a unit: "10GiB").
    pub size: Size,
    /// Its logical block size (512 or 4096; default 512).
    #[serde(default)]
    pub block_size: Option<u32>,
    /// Its write-ahead log size (default 128 MiB).
    #[serde(default)]
    pub wal_size: Option<Size>,
    /// Its UUID, the identity both protocols report (NVMe namespace UUID/NGUID/EUI-64, SCSI
    /// designators); default: random. Lets an operator or a test harness that names a
    /// namespace by UUID (blktests does) create the volume under that name.
    #[serde(default)]
    pub uuid: Option<String>,
}

/// `POST /v1/exports` and `DELETE /v1/exports`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSpec {
    /// The volume.
    pub volume: String,
    /// Over which protocol.
    pub protocol: Protocol,
    /// The iSCSI target IQN or NVMe subsystem NQN (default: the only one there is; adding to
    /// a node with none creates the default one). Adding to one that does not exist creates it.
    #[serde(default)]
    pub target: Option<String>,
    /// The LUN or NSID (adding: default the lowest free one).
    #[serde(default)]
    pub id: Option<u32>,
}

/// One export as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    /// The volume.
    pub volume: String,
    /// The protocol.
    pub protocol: Protocol,
    /// The target IQN or subsystem NQN.
    pub target: String,
    /// The LUN or NSID.
    pub id: u32,
}

/// `POST /v1/hosts` (allow) and `DELETE /v1/hosts` (deny).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// The protocol.
    pub protocol: Protocol,
    /// The initiator name (IQN/EUI/NAA) or host NQN.
    pub host: String,
    /// The target IQN or subsystem NQN (default: the only one there is).
    #[serde(default)]
    pub target: Option<String>,
}

/// The access list of a target or subsystem after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessList {
    /// The protocol.
    pub protocol: Protocol,
    /// The target IQN or subsystem NQN.
    pub target: String,
    /// The hosts allowed; `null`: any host.
    pub allowed: Option<Vec<String>>,
}

/// `PUT /v1/iscsi/chap`: CHAP of a target (or of discovery sessions when `target` is absent).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetChap {
    /// The target IQN; absent: discovery sessions.
    #[serde(default)]
    pub target: Option<String>,
    /// The user name the initiator presents.
    pub username: String,
    /// The initiator's secret.
    pub secret: String,
    /// For mutual CHAP: the target's name.
    #[serde(default)]
    pub target_username: Option<String>,
    /// For mutual CHAP: the target's secret.
    #[serde(default)]
    pub target_secret: Option<String>,
    /// Allow MD5 (default true).
    #[serde(default)]
    pub allow_md5: Option<bool>,
}

impl SetChap {
    /// The credentials as the configuration holds them.
    pub fn chap(&self) -> ChapConfig {
        ChapConfig {
            username: self.username.clone(),
            secret: self.secret.clone(),
            target_username: self.target_username.clone(),
            target_secret: self.target_secret.clone(),
            allow_md5: self.allow_md5.unwrap_or(true),
        }
    }
}

/// `DELETE /v1/iscsi/chap`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearChap {
    /// The target IQN; absent: discovery sessions.
    #[serde(default)]
    pub target: Option<String>,
}

/// `DELETE /v1/nvme/dhchap`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearDhchap {
    /// The host NQN.
    pub host: String,
}

/// What a CHAP change left in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChapState {
    /// The target IQN, or `discovery`; for NVMe the host NQN.
    pub of: String,
    /// `none`, `one-way` or `mutual` (NVMe: `unidirectional` or `bidirectional`).
    pub chap: String,
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::bad_request(m)
}

/// Checks a new volume's (or snapshot's) name: what a directory and every tool can carry.
pub fn check_name(name: &str, what: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "{what} {name:?}: use 1 to 64 letters, digits, '.', '_' or '-' (not starting with '.')"
        )))
    }
}

/// Adds volume `req` to `cfg`.
pub fn create_volume(cfg: &mut Config, req: &CreateVolume) -> Result<VolumeConfig, ApiError> {
    check_name(&req.name, "volume name")?;
    if cfg.volumes.iter().any(|v| v.name == req.name) {
        return Err(ApiError::conflict(format!(
            "volume {:?} exists already (delete it first, or choose another name)",
            req.name
        )));
    }
    let mut v = VolumeConfig::new(&req.name, req.size);
    if let Some(b) = req.block_size {
        v.block_size = b;
    }
    if let Some(w) = req.wal_size {
        v.wal_size = w;
    }
    if let Some(u) = &req.uuid {
        v.uuid = Some(u.clone());
        let parsed = v.parsed_uuid().map_err(bad)?;
        let taken = cfg
            .volumes
            .iter()
            .find(|o| o.parsed_uuid().ok().flatten().is_some() && o.parsed_uuid() == Ok(parsed));
        if let Some(o) = taken {
            return Err(ApiError::conflict(format!(
                "volume {:?} has uuid {u} already: a uuid names one volume",
                o.name
            )));
        }
    }
    if v.block_size != 512 && v.block_size != 4096 {
        return Err(bad(format!("block_size {}: use 512 or 4096", v.block_size)));
    }
    if v.size.0 == 0 || !v.size.0.is_multiple_of(u64::from(v.block_size)) {
        return Err(bad(format!(
            "size {} bytes: give a positive multiple of the {}-byte block",
            v.size.0, v.block_size
        )));
    }
    let dir = cfg.volume_dir(&v);
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(ApiError::conflict(format!(
            "{} already holds files (a volume deleted from the configuration but not from disk?): remove the directory or choose another name",
            dir.display()
        )));
    }
    cfg.volumes.push(v.clone());
    Ok(v)
}

/// Every export of volume `name` in `cfg`.
pub fn exports_of(cfg: &Config, name: &str) -> Vec<Export> {
    let mut out = Vec::new();
    for t in &cfg.iscsi.targets {
        for l in t.luns.iter().filter(|l| l.volume == name) {
            out.push(Export {
                volume: name.into(),
                protocol: Protocol::Iscsi,
                target: t.iqn.clone(),
                id: u32::from(l.id),
            });
        }
    }
    for s in &cfg.nvme.subsystems {
        for n in s.namespaces.iter().filter(|n| n.volume == name) {
            out.push(Export {
                volume: name.into(),
                protocol: Protocol::Nvme,
                target: s.nqn.clone(),
                id: n.nsid,
            });
        }
    }
    out
}

/// Removes volume `name` from `cfg`; an exported volume only with `force` (its exports go
/// too), a replicated one never (its replication runs until the node restarts). Returns the
/// exports removed.
pub fn delete_volume(cfg: &mut Config, name: &str, force: bool) -> Result<Vec<Export>, ApiError> {
    let Some(v) = cfg.volumes.iter().find(|v| v.name == name) else {
        return Err(ApiError::not_found(format!("no volume {name:?}")));
    };
    if let Some(peer) = &v.peer {
        return Err(ApiError::conflict(format!(
            "volume {name:?} is replicated with {peer}: remove it from both nodes' configuration \
             and restart them (the control plane does not stop replication)"
        )));
    }
    let exports = exports_of(cfg, name);
    if !exports.is_empty() && !force {
        let list: Vec<String> = exports
            .iter()
            .map(|e| format!("{} {} id {}", protocol_name(e.protocol), e.target, e.id))
            .collect();
        return Err(ApiError::conflict(format!(
            "volume {name:?} is exported ({}): remove the exports first (tandem export remove), \
             or delete with force to remove them too",
            list.join(", ")
        )));
    }
    for t in &mut cfg.iscsi.targets {
        t.luns.retain(|l| l.volume != name);
    }
    for s in &mut cfg.nvme.subsystems {
        s.namespaces.retain(|n| n.volume != name);
    }
    cfg.volumes.retain(|v| v.name != name);
    Ok(exports)
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Iscsi => "iscsi",
        Protocol::Nvme => "nvme",
    }
}

/// The target (or subsystem) a request means: the one it names, else the only one there is.
fn pick<'a>(
    names: impl Iterator<Item = &'a str>,
    given: Option<&str>,
    what: &str,
) -> Result<Option<String>, ApiError> {
    let names: Vec<&str> = names.collect();
    match given {
        Some(g) => Ok(Some(g.to_string())),
        None if names.len() == 1 => Ok(Some(names[0].to_string())),
        None if names.is_empty() => Ok(None),
        None => Err(bad(format!(
            "this node has several {what}s ({}): name one with target",
            names.join(", ")
        ))),
    }
}

/// Exports a volume (`req`); creates the target or subsystem when it does not exist.
pub fn add_export(cfg: &mut Config, req: &ExportSpec) -> Result<Export, ApiError> {
    if let Some((vol, snap)) = req.volume.split_once('@') {
        return Err(ApiError::bad_request(format!(
            "a snapshot is not exported itself: export a view of it, read-only (tandem clone \
             {vol} {snap} NAME --read-only) or writable (a clone: tandem clone {vol} {snap} NAME), \
             then tandem export add NAME"
        )));
    }
    if !cfg.volumes.iter().any(|v| v.name == req.volume) {
        return Err(ApiError::not_found(format!(
            "no volume {:?} (create it first: tandem volume create)",
            req.volume
        )));
    }
    match req.protocol {
        Protocol::Iscsi => {
            let iqn = pick(
                cfg.iscsi.targets.iter().map(|t| t.iqn.as_str()),
                req.target.as_deref(),
                "target",
            )?
            .unwrap_or_else(|| crate::config::DEFAULT_IQN.to_string());
            if !cfg.iscsi.targets.iter().any(|t| t.iqn == iqn) {
                cfg.iscsi.targets.push(TargetConfig {
                    iqn: iqn.clone(),
                    luns: Vec::new(),
                    chap: None,
                    allowed_initiators: None,
                });
            }
            let t = cfg
                .iscsi
                .targets
                .iter_mut()
                .find(|t| t.iqn == iqn)
                .ok_or_else(|| bad("no target"))?;
            if let Some(l) = t.luns.iter().find(|l| l.volume == req.volume) {
                return Err(ApiError::conflict(format!(
                    "volume {:?} is already LUN {} of {iqn}",
                    req.volume, l.id
                )));
            }
            let id = match req.id {
                Some(id) => {
                    u16::try_from(id).map_err(|_| bad(format!("LUN {id}: use 0..=65535")))?
                }
                None => (0..=u16::MAX)
                    .find(|id| !t.luns.iter().any(|l| l.id == *id))
                    .ok_or_else(|| ApiError::conflict(format!("target {iqn} has no free LUN")))?,
            };
            if let Some(l) = t.luns.iter().find(|l| l.id == id) {
                return Err(ApiError::conflict(format!(
                    "LUN {id} of {iqn} already exports volume {:?}: choose another id",
                    l.volume
                )));
            }
            t.luns.push(LunConfig {
                id,
                volume: req.volume.clone(),
            });
            Ok(Export {
                volume: req.volume.clone(),
                protocol: Protocol::Iscsi,
                target: iqn,
                id: u32::from(id),
            })
        }
        Protocol::Nvme => {
            let nqn = pick(
                cfg.nvme.subsystems.iter().map(|s| s.nqn.as_str()),
                req.target.as_deref(),
                "subsystem",
            )?
            .unwrap_or_else(|| crate::nvme::config::DEFAULT_NQN.to_string());
            if !cfg.nvme.subsystems.iter().any(|s| s.nqn == nqn) {
                // A new subsystem admits no host until one is allowed (tandem host allow).
                cfg.nvme.subsystems.push(SubsystemConfig {
                    nqn: nqn.clone(),
                    serial: None,
                    allowed_hosts: Some(Vec::new()),
                    namespaces: Vec::new(),
                    any_host: false,
                });
            }
            let names: Vec<String> = cfg.volumes.iter().map(|v| v.name.clone()).collect();
            let s = cfg
                .nvme
                .subsystems
                .iter_mut()
                .find(|s| s.nqn == nqn)
                .ok_or_else(|| bad("no subsystem"))?;
            // The built-in default subsystem names a volume "default" the node may not have.
            s.namespaces.retain(|n| names.contains(&n.volume));
            if let Some(n) = s.namespaces.iter().find(|n| n.volume == req.volume) {
                return Err(ApiError::conflict(format!(
                    "volume {:?} is already namespace {} of {nqn}",
                    req.volume, n.nsid
                )));
            }
            let nsid = match req.id {
                Some(id) if (1..=MAX_NSID).contains(&id) => id,
                Some(id) => return Err(bad(format!("nsid {id}: use 1..={MAX_NSID}"))),
                None => (1..=MAX_NSID)
                    .find(|id| !s.namespaces.iter().any(|n| n.nsid == *id))
                    .ok_or_else(|| {
                        ApiError::conflict(format!("subsystem {nqn} has no free namespace id"))
                    })?,
            };
            if let Some(n) = s.namespaces.iter().find(|n| n.nsid == nsid) {
                return Err(ApiError::conflict(format!(
                    "namespace {nsid} of {nqn} already exports volume {:?}: choose another id",
                    n.volume
                )));
            }
            s.namespaces.push(NamespaceConfig {
                nsid,
                volume: req.volume.clone(),
            });
            Ok(Export {
                volume: req.volume.clone(),
                protocol: Protocol::Nvme,
                target: nqn,
                id: nsid,
            })
        }
    }
}

/// Removes the exports of volume `req.volume` over `req.protocol` (on `req.target` only, when
/// given); returns them.
pub fn remove_export(cfg: &mut Config, req: &ExportSpec) -> Result<Vec<Export>, ApiError> {
    let removed: Vec<Export> = exports_of(cfg, &req.volume)
        .into_iter()
        .filter(|e| e.protocol == req.protocol)
        .filter(|e| req.target.as_ref().is_none_or(|t| &e.target == t))
        .filter(|e| req.id.is_none_or(|id| e.id == id))
        .collect();
    if removed.is_empty() {
        return Err(ApiError::not_found(format!(
            "volume {:?} has no {} export{}",
            req.volume,
            protocol_name(req.protocol),
            req.target
                .as_ref()
                .map_or(String::new(), |t| format!(" on {t}"))
        )));
    }
    for e in &removed {
        match e.protocol {
            Protocol::Iscsi => {
                for t in cfg.iscsi.targets.iter_mut().filter(|t| t.iqn == e.target) {
                    t.luns.retain(|l| u32::from(l.id) != e.id);
                }
            }
            Protocol::Nvme => {
                for s in cfg.nvme.subsystems.iter_mut().filter(|s| s.nqn == e.target) {
                    s.namespaces.retain(|n| n.nsid != e.id);
                }
            }
        }
    }
    Ok(removed)
}

fn no_target(p: Protocol, t: &str) -> ApiError {
    ApiError::not_found(match p {
        Protocol::Iscsi => format!("no iSCSI target {t:?} (tandem export add creates one)"),
        Protocol::Nvme => format!("no NVMe subsystem {t:?} (tandem export add creates one)"),
    })
}

/// Allows (`allow`) or denies host `req.host` on a target or subsystem.
pub fn change_host(cfg: &mut Config, req: &HostSpec, allow: bool) -> Result<AccessList, ApiError> {
    let host = req.host.trim().to_string();
    match req.protocol {
        Protocol::Iscsi => {
            let iqn = pick(
                cfg.iscsi.targets.iter().map(|t| t.iqn.as_str()),
                req.target.as_deref(),
                "target",
            )?
            .ok_or_else(|| {
                ApiError::not_found("this node has no iSCSI target (tandem export add creates one)")
            })?;
            let t = cfg
                .iscsi
                .targets
                .iter_mut()
                .find(|t| t.iqn == iqn)
                .ok_or_else(|| no_target(req.protocol, &iqn))?;
            let list = t.allowed_initiators.get_or_insert_with(Vec::new);
            let present = list.iter().any(|h| h.eq_ignore_ascii_case(&host));
            if allow {
                if !present {
                    list.push(host);
                }
            } else {
                if !present {
                    return Err(ApiError::not_found(format!(
                        "{host} is not on the initiator list of {iqn}"
                    )));
                }
                if list.len() == 1 {
                    return Err(ApiError::conflict(format!(
                        "{host} is the last initiator allowed on {iqn}: without it the target would admit any initiator. \
                         Allow another initiator first, or remove the target's exports"
                    )));
                }
                list.retain(|h| !h.eq_ignore_ascii_case(&host));
            }
            Ok(AccessList {
                protocol: req.protocol,
                target: iqn,
                allowed: t.allowed_initiators.clone(),
            })
        }
        Protocol::Nvme => {
            let nqn = pick(
                cfg.nvme.subsystems.iter().map(|s| s.nqn.as_str()),
                req.target.as_deref(),
                "subsystem",
            )?
            .ok_or_else(|| {
                ApiError::not_found(
                    "this node has no NVMe subsystem (tandem export add creates one)",
                )
            })?;
            let s = cfg
                .nvme
                .subsystems
                .iter_mut()
                .find(|s| s.nqn == nqn)
                .ok_or_else(|| no_target(req.protocol, &nqn))?;
            let list = s.allowed_hosts.get_or_insert_with(Vec::new);
            let present = list.contains(&host);
            if allow {
                if !present {
                    list.push(host);
                }
            } else {
                if !present {
                    return Err(ApiError::not_found(format!(
                        "{host} is not on the host list of {nqn}"
                    )));
                }
                list.retain(|h| h != &host);
            }
            Ok(AccessList {
                protocol: req.protocol,
                target: nqn,
                allowed: s.allowed_hosts.clone(),
            })
        }
    }
}

fn chap_kind(c: &Option<ChapConfig>) -> String {
    match c {
        None => "none",
        Some(c) if c.target_username.is_some() => "mutual",
        Some(_) => "one-way",
    }
    .into()
}

/// Sets (`Some`) or clears (`None`) the CHAP credentials of a target or of discovery.
pub fn set_chap(
    cfg: &mut Config,
    target: Option<&str>,
    chap: Option<ChapConfig>,
) -> Result<ChapState, ApiError> {
    let slot = match target {
        None => &mut cfg.iscsi.discovery_chap,
        Some(iqn) => {
            &mut cfg
                .iscsi
                .targets
                .iter_mut()
                .find(|t| t.iqn == iqn)
                .ok_or_else(|| no_target(Protocol::Iscsi, iqn))?
                .chap
        }
    };
    *slot = chap;
    Ok(ChapState {
        of: target.unwrap_or("discovery").to_string(),
        chap: chap_kind(slot),
    })
}

/// Sets the DH-HMAC-CHAP secrets of an NVMe host.
pub fn set_dhchap(cfg: &mut Config, host: NvmeHostConfig) -> Result<ChapState, ApiError> {
    let state = ChapState {
        of: host.nqn.clone(),
        chap: if host.dhchap_ctrl_secret.is_some() {
            "bidirectional"
        } else {
            "unidirectional"
        }
        .into(),
    };
    cfg.nvme.hosts.retain(|h| h.nqn != host.nqn);
    cfg.nvme.hosts.push(host);
    Ok(state)
}

/// Removes the DH-HMAC-CHAP secrets of an NVMe host (it connects without authenticating).
pub fn clear_dhchap(cfg: &mut Config, host: &str) -> Result<ChapState, ApiError> {
    if !cfg.nvme.hosts.iter().any(|h| h.nqn == host) {
        return Err(ApiError::not_found(format!(
            "host {host:?} has no DH-HMAC-CHAP secret"
        )));
    }
    cfg.nvme.hosts.retain(|h| h.nqn != host);
    Ok(ChapState {
        of: host.to_string(),
        chap: "none".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        let mut c = Config {
            data_dir: std::path::PathBuf::from("/nonexistent/tandem-test"),
            ..Config::default()
        };
        c.volumes.clear();
        c.iscsi.targets.clear();
        c.nvme.subsystems.clear();
        c
    }

    fn create(c: &mut Config, name: &str) {
        create_volume(
            c,
            &CreateVolume {
                name: name.into(),
                size: Size(64 << 20),
                block_size: None,
                wal_size: None,
                uuid: None,
            },
        )
        .unwrap();
    }

    #[test]
    fn volumes_are_created_once_with_sane_names_and_sizes() {
        let mut c = cfg();
        create(&mut c, "db");
        let again = CreateVolume {
            name: "db".into(),
            size: Size(1 << 20),
            block_size: None,
            wal_size: None,
            uuid: None,
        };
        assert_eq!(create_volume(&mut c, &again).unwrap_err().status, 409);
        for name in ["", "../x", ".hidden", "a b"] {
            let e = create_volume(
                &mut c,
                &CreateVolume {
                    name: name.into(),
                    ..again.clone()
                },
            )
            .unwrap_err();
            assert_eq!(e.status, 400, "{name}: {}", e.message);
        }
        let odd = CreateVolume {
            name: "odd".into(),
            size: Size(1000),
            ..again.clone()
        };
        assert!(create_volume(&mut c, &odd)
            .unwrap_err()
            .message
            .contains("multiple"));
        c.validate().unwrap();
    }

    #[test]
    fn a_volume_takes_a_given_uuid_once() {
        let mut c = cfg();
        let with = |name: &str, uuid: &str| CreateVolume {
            name: name.into(),
            size: Size(64 << 20),
            block_size: None,
            wal_size: None,
            uuid: Some(uuid.into()),
        };
        let u = "91fdba0d-f87b-4c25-b80f-db7be1418b9e";
        let v = create_volume(&mut c, &with("a", u)).unwrap();
        assert_eq!(
            v.parsed_uuid().unwrap(),
            Some(*uuid::Uuid::parse_str(u).unwrap().as_bytes())
        );
        assert_eq!(
            create_volume(&mut c, &with("b", u)).unwrap_err().status,
            409
        );
        let e = create_volume(&mut c, &with("c", "not-a-uuid")).unwrap_err();
        assert_eq!(e.status, 400, "{}", e.message);
        assert!(c.volumes.iter().all(|v| v.name == "a"));
        c.validate().unwrap();
    }

    #[test]
    fn exports_are_added_removed_and_guard_deletion() {
        let mut c = cfg();
        create(&mut c, "db");
        let add = |c: &mut Config, p| {
            add_export(
                c,
                &ExportSpec {
                    volume: "db".into(),
                    protocol: p,
                    target: None,
                    id: None,
                },
            )
        };
        let e = add(&mut c, Protocol::Iscsi).unwrap();
        assert_eq!((e.target.as_str(), e.id), (crate::config::DEFAULT_IQN, 0));
        assert_eq!(add(&mut c, Protocol::Iscsi).unwrap_err().status, 409);
        let n = add(&mut c, Protocol::Nvme).unwrap();
        assert_eq!(n.id, 1);
        c.validate().unwrap();
        let e = delete_volume(&mut c, "db", false).unwrap_err();
        assert_eq!(e.status, 409);
        assert!(e.message.contains("is exported"), "{}", e.message);
        let spec = ExportSpec {
            volume: "db".into(),
            protocol: Protocol::Nvme,
            target: None,
            id: None,
        };
        assert_eq!(remove_export(&mut c, &spec).unwrap().len(), 1);
        assert_eq!(remove_export(&mut c, &spec).unwrap_err().status, 404);
        assert_eq!(delete_volume(&mut c, "db", true).unwrap().len(), 1);
        assert!(c.volumes.is_empty() && c.iscsi.targets[0].luns.is_empty());
        c.validate().unwrap();
        assert_eq!(delete_volume(&mut c, "db", true).unwrap_err().status, 404);
    }

    #[test]
    fn host_lists_change_and_the_last_initiator_cannot_be_denied() {
        let mut c = cfg();
        create(&mut c, "db");
        add_export(
            &mut c,
            &ExportSpec {
                volume: "db".into(),
                protocol: Protocol::Iscsi,
                target: None,
                id: None,
            },
        )
        .unwrap();
        let h = |host: &str| HostSpec {
            protocol: Protocol::Iscsi,
            host: host.into(),
            target: None,
        };
        let l = change_host(&mut c, &h("iqn.2026-11.h:a"), true).unwrap();
        assert_eq!(l.allowed, Some(vec!["iqn.2026-11.h:a".to_string()]));
        change_host(&mut c, &h("iqn.2026-11.h:b"), true).unwrap();
        let l = change_host(&mut c, &h("IQN.2026-11.h:A"), false).unwrap();
        assert_eq!(l.allowed, Some(vec!["iqn.2026-11.h:b".to_string()]));
        assert_eq!(
            change_host(&mut c, &h("iqn.2026-11.h:b"), false)
                .unwrap_err()
                .status,
            409
        );
        c.validate().unwrap();
        let e = change_host(&mut c, &h("host1"), true).unwrap();
        assert!(e.allowed.is_some());
        assert!(
            c.validate().is_err(),
            "not an iSCSI name: validation refuses it"
        );
    }
}
