//! The admin API's bearer token: mutating requests (`POST`, `PUT`, `DELETE`) must carry
//! `Authorization: Bearer <token>`. The daemon generates the token on first start into a file
//! only its user may read (mode 0600, `<data_dir>/admin-token` unless `[admin] token_file`
//! names another); the CLI reads the same file, and a node calling its peer's admin API (the
//! second half of a switchover) reads `[admin] peer_token_file`.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The name of the token file in the data directory.
pub const TOKEN_FILE: &str = "admin-token";

/// The token file a node uses: `[admin] token_file`, else `<data_dir>/admin-token`.
pub fn path(cfg: &crate::config::Config) -> PathBuf {
    cfg.admin
        .token_file
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join(TOKEN_FILE))
}

/// Reads the token in `path` (surrounding white space ignored); an empty file is an error.
pub fn read(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the admin token {}: {e}", path.display()))?;
    let t = text.trim();
    if t.is_empty() || t.len() > 512 || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the admin token file {} must hold one token of printable characters",
            path.display()
        ));
    }
    Ok(t.to_string())
}

/// The token in `path`, created (32 random bytes as hex, mode 0600, synced) when the file does
/// not exist yet. An existing file that others may read is used but warned about.
pub fn load_or_create(path: &Path) -> Result<String, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut f) => {
            f.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("cannot write the admin token {}: {e}", path.display()))?;
            crate::control::state::sync_dir(path);
            tracing::info!(file = %path.display(), "generated the admin API token");
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if let Ok(m) = std::fs::metadata(path) {
                if m.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(file = %path.display(), "the admin token file is readable by other users: chmod 600 it");
                }
            }
            read(path)
        }
        Err(e) => Err(format!(
            "cannot create the admin token {}: {e}",
            path.display()
        )),
    }
}

/// Whether an `Authorization` header value carries `token` (compared in constant time).
pub fn authorizes(header: Option<&[u8]>, token: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let Some(h) = header else { return false };
    let Some(given) = h
        .strip_prefix(b"Bearer ")
        .or_else(|| h.strip_prefix(b"bearer "))
    else {
        return false;
    };
    let given = given.trim_ascii();
    given.len() == token.len() && bool::from(given.ct_eq(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_created_once_private_and_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join(TOKEN_FILE);
        let t = load_or_create(&p).unwrap();
        assert_eq!(t.len(), 64);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&p).unwrap(), t);
        assert_eq!(read(&p).unwrap(), t);
        std::fs::write(&p, "  \n").unwrap();
        assert!(read(&p).unwrap_err().contains("must hold one token"));
    }

    #[test]
    fn only_the_right_bearer_token_authorizes() {
        assert!(authorizes(Some(b"Bearer abc"), "abc"));
        assert!(!authorizes(Some(b"Bearer abd"), "abc"));
        assert!(!authorizes(Some(b"Bearer ab"), "abc"));
        assert!(!authorizes(Some(b"Basic abc"), "abc"));
        assert!(!authorizes(None, "abc"));
    }
}
