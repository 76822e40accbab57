//! Helpers for tests against Tandem's iSCSI front end with host-side peers: start `tandem serve`
//! with a generated configuration on free loopback ports, and run libiscsi's conformance suite.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::error::{HarnessError, Result};
use crate::ports::free_tcp_port;
use crate::tandem::TandemProcess;

/// The IQN the helpers configure.
pub const TEST_IQN: &str = "iqn.2026-11.io.tandem:test";

/// A Tandem serving one volume over iSCSI on one or more loopback portals.
pub struct IscsiTarget {
    /// The process (killed on drop).
    pub process: TandemProcess,
    /// Portal ports, in configuration order.
    pub ports: Vec<u16>,
    _config_dir: tempfile::TempDir,
}

/// How to set up the target.
#[derive(Debug, Clone)]
pub struct TargetSetup {
    /// Number of portals.
    pub portals: usize,
    /// Volume size in bytes.
    pub size: u64,
    /// Logical block size.
    pub block_size: u32,
    /// Extra TOML inserted into the target table (for example a `[iscsi.target.chap]` table).
    pub target_extra: String,
    /// Extra keys of the target table itself, written before its LUNs (for example
    /// `allowed_initiators = [...]`).
    pub target_keys: String,
    /// Address advertised to hosts (for guests: 10.0.2.2).
    pub advertise: Option<String>,
}

impl Default for TargetSetup {
    fn default() -> Self {
        TargetSetup {
            portals: 1,
            size: 256 << 20,
            block_size: 512,
            target_extra: String::new(),
            target_keys: String::new(),
            advertise: None,
        }
    }
}

impl IscsiTarget {
    /// Starts `tandem serve` with the given setup and waits until the first portal accepts.
    pub fn start(setup: &TargetSetup) -> Result<IscsiTarget> {
        let ports = (0..setup.portals.max(1))
            .map(|_| free_tcp_port())
            .collect::<Result<Vec<u16>>>()?;
        let config_dir = tempfile::tempdir().map_err(|e| HarnessError::Process(e.to_string()))?;
        let mut toml = format!(
            "data_dir = \"data\"\n[[volume]]\nname = \"vol\"\nsize = {}\nblock_size = {}\nwal_size = \"32MiB\"\n[iscsi]\n",
            setup.size, setup.block_size
        );
        for (i, p) in ports.iter().enumerate() {
            toml.push_str(&format!(
                "[[iscsi.portal]]\nlisten = \"127.0.0.1:{p}\"\ntpgt = {}\n",
                i + 1
            ));
            if let Some(a) = &setup.advertise {
                toml.push_str(&format!("advertise = \"{a}:{p}\"\n"));
            }
        }
        toml.push_str(&format!(
            "[[iscsi.target]]\niqn = \"{TEST_IQN}\"\n{}\n[[iscsi.target.lun]]\nid = 0\nvolume = \"vol\"\n{}\n",
            setup.target_keys, setup.target_extra
        ));
        let cfg = config_dir.path().join("tandem.toml");
        std::fs::write(&cfg, toml).map_err(|e| HarnessError::Process(e.to_string()))?;
        let process = TandemProcess::start(
            vec![
                "serve".to_string(),
                "--config".into(),
                cfg.to_string_lossy().into_owned(),
            ],
            ports[0],
            Duration::from_secs(60),
        )?;
        Ok(IscsiTarget {
            process,
            ports,
            _config_dir: config_dir,
        })
    }

    /// `iscsi://[auth@]127.0.0.1:PORT/IQN/0[?args]` for portal `i`.
    pub fn url(&self, i: usize, auth: &str, args: &str) -> String {
        let at = if auth.is_empty() {
            String::new()
        } else {
            format!("{auth}@")
        };
        let q = if args.is_empty() {
            String::new()
        } else {
            format!("?{args}")
        };
        format!("iscsi://{at}127.0.0.1:{}/{TEST_IQN}/0{q}", self.ports[i])
    }
}

/// What one run of `iscsi-test-cu` reported.
#[derive(Debug, Clone, Default)]
pub struct SuiteResult {
    /// Tests run.
    pub ran: u32,
    /// Tests passed.
    pub passed: u32,
    /// Tests that failed, as `Suite.Test`.
    pub failed: BTreeSet<String>,
    /// Full output.
    pub output: String,
}

/// Runs the whole libiscsi conformance suite (destructive tests included) against `url`, with
/// `url2` as the second path for the multipath tests.
pub fn run_libiscsi_suite(url: &str, url2: Option<&str>) -> Result<SuiteResult> {
    let mut cmd = Command::new("iscsi-test-cu");
    cmd.args(["-d", "-n", "--test=ALL", url]);
    if let Some(u) = url2 {
        cmd.arg(u);
    }
    let out = cmd.output().map_err(|e| {
        HarnessError::Process(format!(
            "running iscsi-test-cu (apt-get install libiscsi-bin): {e}"
        ))
    })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(parse_suite_output(&text))
}

/// Parses CUnit's report: `Suite S, Test T had failures:` lines and the run summary.
pub fn parse_suite_output(text: &str) -> SuiteResult {
    let mut r = SuiteResult {
        output: text.to_string(),
        ..SuiteResult::default()
    };
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("Suite ") {
            if let Some((suite, test)) = rest.split_once(", Test ") {
                if let Some(test) = test.strip_suffix(" had failures:") {
                    r.failed.insert(format!("{suite}.{test}"));
                }
            }
        }
        if let Some(rest) = l.strip_prefix("tests") {
            let n: Vec<u32> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if n.len() >= 4 {
                r.ran = n[1];
                r.passed = n[2];
            }
        }
    }
    r
}

/// The failures a run is expected to have, from a file of `Suite.Test  reason` lines
/// (`#` comments allowed). Each entry must carry a reason.
pub fn expected_failures(path: &Path) -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| HarnessError::Process(format!("{}: {e}", path.display())))?;
    let mut set = BTreeSet::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let mut parts = l.splitn(2, char::is_whitespace);
        let name = parts.next().unwrap_or_default();
        let reason = parts.next().unwrap_or_default().trim();
        if reason.is_empty() {
            return Err(HarnessError::Process(format!(
                "{}: {name} has no reason",
                path.display()
            )));
        }
        set.insert(name.to_string());
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cunit_summary_and_failures() {
        let text = "Suite CompareAndWrite, Test Simple had failures:\n    1. x.c:71 - CU_ASSERT\n\nRun Summary:    Type  Total    Ran Passed Failed Inactive\n              suites     51     51    n/a      0        0\n               tests    230    230    229      1        0\n";
        let r = parse_suite_output(text);
        assert_eq!((r.ran, r.passed), (230, 229));
        assert_eq!(
            r.failed.iter().collect::<Vec<_>>(),
            vec!["CompareAndWrite.Simple"]
        );
    }
}
