//! The Debian package: `cargo deb` builds it from gateway's `[package.metadata.deb]`, `dpkg -x`
//! unpacks it into a scratch root, and the installed `tandem` must run, with the example
//! configuration as a conffile and the documentation beside it.
//!
//! It lives here rather than in the gateway's tests because, like the rest of this crate, it
//! drives host tools (cargo-deb, dpkg) against the built binary, whose programs
//! `every_program_the_tests_run_is_checked_by_deps_sh` keeps checked by scripts/deps.sh. It
//! packages the debug binary the README's test command has already built (`--profile dev
//! --no-build`), so it takes seconds; a release package is `cargo deb -p gateway`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use interop_tests::tandem_bin;

/// The cargo-deb the test installs when `cargo deb` is missing (pinned: the test relies on its
/// flags and on it still accepting the dev profile).
const CARGO_DEB_VERSION: &str = "3.8.0";

fn cargo() -> Command {
    Command::new(env!("CARGO"))
}

/// Runs `cmd` to success and returns its standard output.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn cargo_deb_runs() -> bool {
    cargo()
        .args(["deb", "--version"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn the_debian_package_installs_a_working_tandem() {
    let root = workspace();
    if !cargo_deb_runs() {
        eprintln!("installing cargo-deb {CARGO_DEB_VERSION} (it compiles for a few minutes, once)");
        run(cargo().args([
            "install",
            "cargo-deb",
            "--locked",
            "--version",
            CARGO_DEB_VERSION,
        ]));
        assert!(
            cargo_deb_runs(),
            "`cargo deb` does not run after `cargo install cargo-deb`"
        );
    }
    if !tandem_bin().is_file() {
        run(cargo()
            .args(["build", "-p", "gateway", "--bin", "tandem"])
            .current_dir(&root));
    }
    let out = tempfile::tempdir().unwrap();
    run(cargo()
        .args(["deb", "-p", "gateway", "--no-build", "--profile", "dev"])
        .args(["--fast", "--no-dbgsym", "-o"])
        .arg(out.path())
        .current_dir(&root));
    let debs: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb = &debs[0];

    let field = |name: &str| run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name));
    assert_eq!(field("Package").trim(), "tandem");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        field("Version").starts_with(version),
        "{}",
        field("Version")
    );
    assert!(field("Depends").contains("libc6"), "{}", field("Depends"));
    let conffiles = run(Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles"));
    assert_eq!(conffiles.trim(), "/etc/tandem/tandem.toml");

    let scratch = tempfile::tempdir().unwrap();
    run(Command::new("dpkg").arg("-x").arg(deb).arg(scratch.path()));
    let installed = scratch.path().join("usr/bin/tandem");
    assert_eq!(
        run(Command::new(&installed).arg("--version")),
        format!("tandem {version}\n")
    );
    let conf = std::fs::read_to_string(scratch.path().join("etc/tandem/tandem.toml")).unwrap();
    assert_eq!(
        conf,
        run(Command::new(&installed).arg("example-config")),
        "/etc/tandem/tandem.toml is the installed binary's example configuration"
    );
    let doc = scratch.path().join("usr/share/doc/tandem");
    for f in [
        "README.md",
        "configuration.md",
        "migration.md",
        "operations.md",
        "dashboard.png",
        "grafana/tandem.json",
        "copyright",
    ] {
        assert!(
            doc.join(f).is_file(),
            "the package has no {}",
            doc.join(f).display()
        );
    }
    let unit = scratch.path().join("lib/systemd/system/tandem.service");
    let text = std::fs::read_to_string(&unit).expect("the package installs the systemd unit");
    assert!(
        text.contains("ExecStart=/usr/bin/tandem serve"),
        "the unit starts the installed binary"
    );
}
