//! The README's test command checks every external program the tests run before it runs them
//! (`scripts/deps.sh --check`). These tests keep that check complete and show it passes here.

use std::path::{Path, PathBuf};

use interop_tests::host::{deps_script, HOST_TOOLS};

/// Every `.rs` file below `dir`, skipping build output.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == ".git" || name == "fuzz" {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Program names that the sources start by literal: `Command::new` with a string literal, and the
/// libiscsi tests' `tool` helper with a literal first argument.
fn spawned_programs(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for marker in ["Command::new(", "tool(&["] {
        let mut rest = text;
        while let Some(at) = rest.find(marker) {
            rest = rest[at + marker.len()..].trim_start();
            if let Some(lit) = rest.strip_prefix('"') {
                if let Some(end) = lit.find('"') {
                    names.push(lit[..end].to_string());
                }
            }
        }
    }
    names
}

#[test]
fn every_program_the_tests_run_is_checked_by_deps_sh() {
    let script = deps_script();
    let text = std::fs::read_to_string(&script).expect("read scripts/deps.sh");
    let check = &text[text
        .find("check_tools() {")
        .expect("check_tools in deps.sh")..];
    let root = script
        .parent()
        .and_then(Path::parent)
        .expect("repository root");
    let mut files = Vec::new();
    rust_files(root, &mut files);
    assert!(files.len() > 50, "found only {} source files", files.len());
    let mut programs: Vec<String> = HOST_TOOLS.iter().map(|(c, _)| c.to_string()).collect();
    // This file names the markers themselves.
    for file in files
        .iter()
        .filter(|f| !f.ends_with("interop-tests/tests/deps.rs"))
    {
        let src = std::fs::read_to_string(file).unwrap();
        programs.extend(spawned_programs(&src));
    }
    programs.sort();
    programs.dedup();
    for must in ["qemu-img", "iscsi-test-cu", "qemu-system-x86_64", "cpio"] {
        assert!(programs.iter().any(|p| p == must), "scan missed {must}");
    }
    let unchecked: Vec<&String> = programs
        .iter()
        .filter(|p| !p.starts_with('/'))
        .filter(|p| {
            !check
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .any(|word| word == p.as_str())
        })
        .collect();
    assert!(
        unchecked.is_empty(),
        "programs the tests run that scripts/deps.sh does not check: {unchecked:?}"
    );
}

#[test]
fn deps_sh_finds_every_tool_working() {
    let out = std::process::Command::new("bash")
        .arg(deps_script())
        .arg("--check")
        .output()
        .expect("run scripts/deps.sh --check");
    assert!(
        out.status.success(),
        "scripts/deps.sh --check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
