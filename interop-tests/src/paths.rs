//! Where the harness keeps its files: the cargo target directory and the guest image cache.

use std::path::PathBuf;

/// Environment variable that overrides the guest cache directory (downloaded packages, built image).
pub const CACHE_DIR_ENV: &str = "TANDEM_GUEST_CACHE";

/// The cargo target directory the running test binary was built into.
///
/// Uses `CARGO_TARGET_DIR` when set; otherwise walks up from the test executable, which cargo
/// places in `<target>/<profile>/deps/`. Falls back to `./target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    profile_dir()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// The profile directory (`<target>/debug`) holding the workspace's built binaries.
pub fn profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent()?;
    }
    Some(dir.to_path_buf())
}

/// The guest cache directory: `$TANDEM_GUEST_CACHE`, else `<target>/guest-cache`.
///
/// Kept under the target directory so `cargo clean` removes it and it never lands in git.
pub fn cache_dir() -> PathBuf {
    std::env::var_os(CACHE_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("guest-cache"))
}
