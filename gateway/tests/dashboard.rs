//! The operator's kit against a live node: one host on iSCSI (a raw login) and one on
//! NVMe/TCP (the Rust initiator) reading all the time. The dashboard page is loaded in Debian's
//! headless Chromium and checked for what it shows (and screenshotted: with
//! `TANDEM_UPDATE_SCREENSHOT=1` the picture is written to docs/dashboard.png); the Grafana
//! dashboard's every query is checked against the daemon's `/metrics`.

mod iscsi_common;
mod nvme_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::config::PortalConfig;
use gateway::dashboard::DashboardDoc;
use gateway::nvme::config::DEFAULT_NQN;
use gateway::status::{self, NodeView};
use iscsi_common::RawSession;
use nvme_common::{Node, HOST_B};
use nvme_initiator::{Controller, HostOptions};

const INITIATOR: &str = "iqn.2026-01.io.tandem:rack1-db";

/// A node with its admin API and two hosts doing I/O until [`Fleet::stop`].
struct Fleet {
    node: Node,
    admin: SocketAddr,
    running: Arc<AtomicBool>,
    io: Vec<tokio::task::JoinHandle<u64>>,
}

impl Fleet {
    async fn start() -> Fleet {
        let node = Node::start(1, |cfg| {
            cfg.iscsi.enabled = true;
            cfg.iscsi.portals = vec![PortalConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                advertise: None,
                tpgt: 1,
            }];
        })
        .await;
        let fronts = node.fronts.as_ref().unwrap();
        let iscsi_addr = fronts.iscsi.as_ref().unwrap().bound[0];
        let target = node.cfg.iscsi.targets[0].iqn.clone();
        let admin = gateway::admin::start(
            "127.0.0.1:0".parse().unwrap(),
            NodeView::new(&node.cfg, fronts),
            &node.shutdown,
        )
        .await
        .unwrap()
        .bound;
        let running = Arc::new(AtomicBool::new(true));
        let mut sess = RawSession::login(iscsi_addr, &target, INITIATOR).await;
        sess.read_block().await; // answers the power-on unit attention
        let host = HostOptions {
            hostnqn: HOST_B.into(),
            ..HostOptions::default()
        };
        let c = Controller::connect(node.io[0], DEFAULT_NQN, &host)
            .await
            .unwrap();
        let bs = c.identify_namespace(1).await.unwrap().block_size;
        let r = Arc::clone(&running);
        let iscsi = tokio::spawn(async move {
            let mut n = 0;
            while r.load(Ordering::Relaxed) {
                assert_eq!(sess.read_block().await, 0, "iSCSI read failed");
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            n
        });
        let r = Arc::clone(&running);
        let nvme = tokio::spawn(async move {
            let mut n = 0;
            while r.load(Ordering::Relaxed) {
                c.read(0, 1, 8 * (n % 64), 8, bs).await.unwrap();
                n += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            c.shutdown().await.unwrap();
            n
        });
        Fleet {
            node,
            admin,
            running,
            io: vec![iscsi, nvme],
        }
    }

    async fn get(&self, path: &'static str) -> String {
        let admin = self.admin;
        tokio::task::spawn_blocking(move || status::get(admin, path))
            .await
            .unwrap()
            .unwrap()
    }

    /// Waits until the dashboard's history has a sample with reads on both protocols.
    async fn wait_for_rates(&self) -> DashboardDoc {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let doc: DashboardDoc = serde_json::from_str(&self.get("/v1/dashboard").await).unwrap();
            let last = doc.series[0].samples.last().copied();
            if last.is_some_and(|s| s.iscsi.reads > 0.0 && s.nvme.reads > 0.0) {
                return doc;
            }
            assert!(
                Instant::now() < deadline,
                "no sample with reads on both protocols: {:?}",
                doc.series
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn stop(self) {
        self.running.store(false, Ordering::Relaxed);
        for t in self.io {
            assert!(t.await.unwrap() > 0, "a host did no I/O");
        }
        self.node.stop().await;
    }
}

/// Runs Debian's headless Chromium with `args` (plus the flags it needs here as root, and a
/// fresh profile); returns its standard output. Killed after a minute.
fn chromium(args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium (scripts/deps.sh installs Debian's chromium package)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium {args:?} did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "chromium {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The inner HTML of the first element after `marker` (an attribute inside its start tag) up to
/// its end tag `end`.
fn element<'a>(dom: &'a str, marker: &str, end: &str) -> &'a str {
    let at = dom
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in the page:\n{dom}"));
    let rest = &dom[at..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest[open..].find(end).unwrap_or_else(|| panic!("{end}"));
    &rest[open..open + close]
}

fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    (be(&png[16..20]), be(&png[20..24]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_each_host_under_its_protocol_and_live_rates() {
    let fleet = Fleet::start().await;
    let mut doc = fleet.wait_for_rates().await;
    // a few seconds of history, so the charts show lines rather than a point
    while doc.series[0].samples.len() < 8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        doc = serde_json::from_str(&fleet.get("/v1/dashboard").await).unwrap();
    }
    assert_eq!(
        (doc.migration.iscsi_hosts, doc.migration.nvme_hosts),
        (1, 1)
    );
    assert_eq!(doc.migration.still_on_iscsi, [INITIATOR]);
    let last = doc.series[0].samples.last().unwrap();
    assert!(
        last.nvme.read_bytes >= 4096.0 * last.nvme.reads - 1.0,
        "{last:?}"
    );
    // the mean latency of each protocol's commands over the interval
    for (proto, rates) in [("iscsi", last.iscsi), ("nvme", last.nvme)] {
        assert!(
            rates.latency_us.is_some_and(|us| us > 0.0),
            "no {proto} latency in {last:?}"
        );
    }
    // the server-rendered page (what a browser without the script shows)
    let served = fleet.get("/").await;
    assert!(served.contains(INITIATOR) && served.contains(HOST_B));

    let url = format!("http://{}/", fleet.admin);
    let dom = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            chromium(&["--virtual-time-budget=5000", "--dump-dom", &url])
        })
        .await
        .unwrap()
    };
    // The script ran, fetched /v1/dashboard and redrew the page.
    assert!(
        dom.contains("data-live=\"yes\""),
        "script did not update:\n{dom}"
    );
    assert!(element(&dom, "id=\"updated\"", "</span>").starts_with("live"));
    let volume = element(&dom, "data-volume=\"default\"", "</section>");
    assert!(volume.contains("<b class=\"role\">primary</b>"), "{volume}");
    assert!(volume.contains("<b class=\"epoch\">"), "{volume}");
    assert!(volume.contains("class=\"state optimized\""), "{volume}");
    let iscsi = element(volume, "data-protocol=\"iscsi\"", "</ul>");
    let nvme = element(volume, "data-protocol=\"nvme\"", "</ul>");
    assert!(
        iscsi.contains(INITIATOR) && !iscsi.contains(HOST_B),
        "{iscsi}"
    );
    assert!(nvme.contains(HOST_B) && !nvme.contains(INITIATOR), "{nvme}");
    // The migration: one host on each protocol, and which one still uses iSCSI.
    assert_eq!(element(&dom, "id=\"on-iscsi\"", "</b>"), "1");
    assert_eq!(element(&dom, "id=\"on-nvme\"", "</b>"), "1");
    assert_eq!(element(&dom, "id=\"moved-pct\"", "</b>"), "50%");
    let still = element(&dom, "id=\"still-iscsi\"", "</ul>");
    assert!(
        still.contains(INITIATOR) && !still.contains(HOST_B),
        "{still}"
    );
    // Live throughput and latency: in the three charts a line per protocol that rises above
    // zero (the charts' zero line is at y = 132), and a current rate in the legends.
    assert!(volume.contains("Latency (mean, \u{b5}s)"), "{volume}");
    for chart in [
        "data-chart=\"bytes\"",
        "data-chart=\"iops\"",
        "data-chart=\"latency\"",
    ] {
        let svg = element(volume, chart, "</svg>");
        for proto in ["iscsi", "nvme"] {
            let at = svg
                .find(&format!("<polyline class=\"{proto}\""))
                .unwrap_or_else(|| panic!("no {proto} line in {chart}: {svg}"));
            let tag = &svg[at..at + svg[at..].find('>').unwrap()];
            let points = tag.split("points=\"").nth(1).unwrap_or_default();
            let above_zero = points.split_whitespace().any(|p| {
                p.split_once(',')
                    .and_then(|(_, y)| y.trim_end_matches('"').parse::<f64>().ok())
                    .is_some_and(|y| y < 131.0)
            });
            assert!(above_zero, "{proto} never above zero in {chart}: {svg}");
        }
    }
    let legend = element(volume, "class=\"legend\"", "</div>");
    assert!(
        legend.contains("B/s") && !legend.contains("-</span>"),
        "{legend}"
    );

    let shots = tempfile::tempdir().unwrap();
    let png = shots.path().join("dashboard.png");
    let shot_arg = format!("--screenshot={}", png.display());
    tokio::task::spawn_blocking(move || {
        chromium(&[
            "--virtual-time-budget=5000",
            "--window-size=1280,900",
            &shot_arg,
            &url,
        ])
    })
    .await
    .unwrap();
    let bytes = std::fs::read(&png).expect("chromium wrote no screenshot");
    assert_eq!(png_size(&bytes), (1280, 900));
    if std::env::var_os("TANDEM_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
        std::fs::write(&docs, &bytes).unwrap();
        eprintln!("wrote {}", docs.display());
    }
    fleet.stop().await;
}

/// Every metric name in a PromQL expression: identifiers that are not functions, keywords,
/// label names (inside `{}` or `by (...)`) or durations.
fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "and",
        "or",
        "unless",
        // aggregation operators, which may come before their parentheses (`sum by (x) (...)`)
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let mut names = Vec::new();
    let chars: Vec<char> = expr.chars().collect();
    let (mut i, mut braces, mut label_list) = (0, 0, false);
    let mut prev_word = String::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += 1 + usize::from(chars[i] == '\\');
                }
            }
            '{' | '[' => braces += 1,
            '}' | ']' => braces -= 1,
            '(' => label_list = matches!(prev_word.as_str(), "by" | "without" | "on" | "ignoring"),
            ')' => label_list = false,
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i]))
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                let is_function = next == Some(&'(');
                if braces == 0
                    && !label_list
                    && !is_function
                    && !KEYWORDS.contains(&word.as_str())
                    && !word.starts_with('$')
                {
                    names.push(word.clone());
                }
                prev_word = word;
                continue;
            }
            _ => {}
        }
        if !c.is_whitespace() && c != '(' {
            prev_word.clear();
        }
        i += 1;
    }
    names
}

/// Every PromQL expression of a Grafana dashboard: panel targets' `expr` (rows and nested
/// panels included) and query variables.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) if s.contains("label_values") => {
                        out.push(s.clone())
                    }
                    _ => exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

/// Every `metric{label=..., ...}` selector of a PromQL expression: the metric and the label
/// names it matches on.
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let name: String = rest[..open]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || "_:".contains(*c))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let body = &rest[open + 1..open + close];
        let mut labels = Vec::new();
        for part in body.split(',') {
            let label: String = part
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !label.is_empty() {
                labels.push(label);
            }
        }
        if !name.is_empty() {
            out.push((name, labels));
        }
        rest = &rest[open + close + 1..];
    }
    out
}

#[test]
fn selectors_are_found_in_promql() {
    assert_eq!(
        selectors(r#"rate(a_total{volume=~"$volume", protocol="nvme"}[1m]) / b{x!="1"}"#),
        [
            (
                "a_total".to_string(),
                vec!["volume".to_string(), "protocol".to_string()]
            ),
            ("b".to_string(), vec!["x".to_string()])
        ]
    );
}

#[test]
fn metric_names_are_found_in_promql() {
    assert_eq!(
        metric_names(
            r#"sum by (volume, protocol) (rate(tandem_host_commands_total{volume=~"$volume", protocol="nvme"}[1m])) / on (volume) group_left tandem_volume_hosts"#
        ),
        ["tandem_host_commands_total", "tandem_volume_hosts"]
    );
    assert_eq!(
        metric_names("label_values(tandem_volume_hosts, volume)"),
        ["tandem_volume_hosts", "volume"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grafana_query_names_a_metric_the_daemon_exports() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/grafana/tandem.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let panels = dash["panels"].as_array().expect("panels");
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    assert!(
        all.len() >= panels.len(),
        "panels without queries: {titles:?}"
    );

    let fleet = Fleet::start().await;
    fleet.wait_for_rates().await;
    let metrics = fleet.get("/metrics").await;
    let exported: Vec<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut checked = 0;
    for expr in &all {
        let mut names = metric_names(expr);
        if expr.starts_with("label_values(") {
            names.truncate(1); // the second argument is a label
        }
        assert!(!names.is_empty(), "no metric in {expr:?}");
        for name in names {
            assert!(
                exported.contains(&name.as_str()),
                "{expr:?} names {name}, which /metrics does not export:\n{metrics}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} metric references");
    // Every label a selector matches on exists on some series of that metric: a query on a
    // label the daemon does not export matches nothing.
    let mut labels: std::collections::HashMap<&str, std::collections::HashSet<String>> =
        std::collections::HashMap::new();
    for l in metrics.lines().filter(|l| !l.starts_with('#')) {
        if let Some((name, body)) = l.split_once('{') {
            let body = body.split('}').next().unwrap_or("");
            let set = labels.entry(name).or_default();
            for part in body.split(',') {
                if let Some((k, _)) = part.split_once('=') {
                    set.insert(k.trim().to_string());
                }
            }
        }
    }
    for expr in &all {
        for (metric, used) in selectors(expr) {
            let have = labels.get(metric.as_str()).cloned().unwrap_or_default();
            for label in used {
                assert!(
                    have.contains(&label),
                    "{expr:?} selects {metric} by {label:?}, which its series do not carry ({have:?})"
                );
            }
        }
    }
    fleet.stop().await;
}
