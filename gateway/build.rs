//! Records the git commit the binary is built from as `TANDEM_GIT_COMMIT` (for
//! `tandem_build_info`). A build outside a git checkout (a source package) takes it from the
//! `TANDEM_GIT_COMMIT` environment variable if set, else leaves it unset ("unknown").

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=TANDEM_GIT_COMMIT");
    if let Ok(c) = std::env::var("TANDEM_GIT_COMMIT") {
        println!("cargo:rustc-env=TANDEM_GIT_COMMIT={c}");
        return;
    }
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch it points at (a commit).
    for path in [
        Some("HEAD".to_string()),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(p) = git(&["rev-parse", "--git-path", &path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(c) = git(&["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=TANDEM_GIT_COMMIT={c}");
    }
}
