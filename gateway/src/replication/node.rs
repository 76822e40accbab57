//! This node's stable identity: replication handshakes carry it, so a node must keep the same
//! id across restarts. Configured (`[node] id`) or generated once and kept in the data
//! directory as `node-id`.

use std::path::Path;

/// File in the data directory holding a generated node id (32 hex digits).
pub const NODE_ID_FILE: &str = "node-id";

/// Parses a node id: 16 bytes as 32 hex digits.
pub fn parse_id(s: &str) -> Result<[u8; 16], String> {
    let bytes = hex::decode(s.trim()).map_err(|e| format!("node id {s:?}: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| format!("node id {s:?} must be 16 bytes (32 hex digits)"))
}

/// The node id: the configured one, else the one persisted in `data_dir`, else a new random
/// one, persisted there first (written to a temporary file, synced, then renamed).
pub fn load_or_create(configured: Option<&str>, data_dir: &Path) -> Result<[u8; 16], String> {
    if let Some(id) = configured {
        return parse_id(id);
    }
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => return parse_id(&s).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let id: [u8; 16] = rand::random();
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        let tmp = data_dir.join(format!("{NODE_ID_FILE}.tmp"));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{}", hex::encode(id))?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| format!("{}: {e}", path.display()))?;
    tracing::info!(node_id = %hex::encode(id), path = %path.display(), "generated the node id");
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_id_is_kept_and_a_configured_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(None, dir.path()).unwrap();
        assert_eq!(load_or_create(None, dir.path()).unwrap(), a);
        let cfg = "000102030405060708090a0b0c0d0e0f";
        let b = load_or_create(Some(cfg), dir.path()).unwrap();
        assert_eq!(b[15], 15);
        assert!(parse_id("abcd").is_err());
    }
}
