//! Exports given on the command line: `tandem serve --volume NAME=SIZE --export NAME=iscsi,nvme`
//! adds volumes and exports them over either protocol or both, on top of the configuration.
//!
//! An iSCSI export becomes the next free LUN of the first target (the default target if the
//! configuration has none); an NVMe/TCP export becomes the next free namespace of the first
//! subsystem (the built-in default subsystem if there is none).

use crate::config::{Config, LunConfig, Size, TargetConfig, VolumeConfig, DEFAULT_IQN};
use crate::nvme::config::{NamespaceConfig, MAX_NSID};

/// Parses `NAME=SIZE` (`--volume`).
pub fn parse_volume(s: &str) -> Result<(String, Size), String> {
    let (name, size) = s
        .split_once('=')
        .ok_or_else(|| format!("--volume {s:?}: expected NAME=SIZE, e.g. db=10GiB"))?;
    Ok((name.to_string(), size.parse()?))
}

/// Parses `NAME=iscsi`, `NAME=nvme` or `NAME=iscsi,nvme` / `NAME=both` (`--export`).
pub fn parse_export(s: &str) -> Result<(String, bool, bool), String> {
    let (name, protos) = s
        .split_once('=')
        .ok_or_else(|| format!("--export {s:?}: expected VOLUME=iscsi|nvme|both"))?;
    let (mut iscsi, mut nvme) = (false, false);
    for p in protos.split(',') {
        match p.trim() {
            "iscsi" => iscsi = true,
            "nvme" | "nvme-tcp" => nvme = true,
            "both" => (iscsi, nvme) = (true, true),
            other => return Err(format!("--export {s:?}: unknown protocol {other:?}")),
        }
    }
    Ok((name.to_string(), iscsi, nvme))
}

/// Adds (or resizes the creation size of) a volume.
pub fn add_volume(cfg: &mut Config, name: &str, size: Size) {
    match cfg.volumes.iter_mut().find(|v| v.name == name) {
        Some(v) => v.size = size,
        None => cfg.volumes.push(VolumeConfig::new(name, size)),
    }
}

/// Exports `volume` over the chosen protocols, unless it is exported there already.
pub fn add_export(cfg: &mut Config, volume: &str, iscsi: bool, nvme: bool) -> Result<(), String> {
    if !cfg.volumes.iter().any(|v| v.name == volume) {
        return Err(format!(
            "--export: no volume {volume:?} (add it with --volume {volume}=SIZE)"
        ));
    }
    if iscsi {
        cfg.iscsi.enabled = true;
        if cfg.iscsi.targets.is_empty() {
            cfg.iscsi.targets.push(TargetConfig {
                iqn: DEFAULT_IQN.into(),
                luns: Vec::new(),
                chap: None,
                allowed_initiators: None,
            });
        }
        let t = &mut cfg.iscsi.targets[0];
        if !t.luns.iter().any(|l| l.volume == volume) {
            let id = (0..=u16::MAX)
                .find(|id| !t.luns.iter().any(|l| l.id == *id))
                .ok_or("--export: the target has no free LUN")?;
            t.luns.push(LunConfig {
                id,
                volume: volume.to_string(),
            });
        }
    }
    if nvme {
        cfg.nvme.enabled = true;
        if cfg.nvme.subsystems.is_empty() {
            let mut d = crate::nvme::config::NvmeConfig::default();
            let mut s = d.subsystems.remove(0);
            s.namespaces.clear();
            cfg.nvme.subsystems.push(s);
        }
        let volumes: Vec<String> = cfg.volumes.iter().map(|v| v.name.clone()).collect();
        let s = &mut cfg.nvme.subsystems[0];
        if s.any_host {
            // The built-in default names the volume "default"; drop it when there is none.
            s.namespaces.retain(|n| volumes.contains(&n.volume));
        }
        if !s.namespaces.iter().any(|n| n.volume == volume) {
            let nsid = (1..=MAX_NSID)
                .find(|id| !s.namespaces.iter().any(|n| n.nsid == *id))
                .ok_or("--export: the subsystem has no free namespace id")?;
            s.namespaces.push(NamespaceConfig {
                nsid,
                volume: volume.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::config::DEFAULT_NQN;

    #[test]
    fn a_volume_exported_over_both_protocols_from_the_command_line() {
        let mut cfg = Config::default();
        let (name, size) = parse_volume("db=64MiB").unwrap();
        add_volume(&mut cfg, &name, size);
        let (v, i, n) = parse_export("db=iscsi,nvme").unwrap();
        add_export(&mut cfg, &v, i, n).unwrap();
        cfg.validate().unwrap();
        let t = &cfg.iscsi.targets[0];
        assert_eq!(
            t.luns.iter().find(|l| l.volume == "db").map(|l| l.id),
            Some(1)
        );
        let s = &cfg.nvme.subsystems[0];
        assert_eq!(
            s.namespaces
                .iter()
                .find(|ns| ns.volume == "db")
                .map(|ns| ns.nsid),
            Some(2)
        );
        // Exporting again changes nothing.
        add_export(&mut cfg, "db", true, true).unwrap();
        assert_eq!(cfg.iscsi.targets[0].luns.len(), 2);
        assert_eq!(cfg.nvme.subsystems[0].namespaces.len(), 2);
    }

    #[test]
    fn one_protocol_only_and_clear_errors() {
        let mut cfg = Config::default();
        cfg.iscsi.targets.clear();
        cfg.nvme.subsystems.clear();
        cfg.volumes[0].name = "vol".into();
        add_export(&mut cfg, "vol", false, true).unwrap();
        assert!(cfg.iscsi.targets.is_empty());
        assert_eq!(cfg.nvme.subsystems[0].nqn, DEFAULT_NQN);
        assert_eq!(cfg.nvme.subsystems[0].namespaces[0].nsid, 1);
        assert_eq!(
            cfg.nvme.subsystems[0].namespaces.len(),
            1,
            "no namespace for a missing volume"
        );
        assert!(add_export(&mut cfg, "nope", true, false)
            .unwrap_err()
            .contains("no volume"));
        assert!(parse_export("db=fc")
            .unwrap_err()
            .contains("unknown protocol"));
        assert!(parse_export("db").is_err());
        assert!(parse_volume("db=12 parsecs").is_err());
        assert_eq!(
            parse_export("x=both").unwrap(),
            ("x".to_string(), true, true)
        );
    }
}
