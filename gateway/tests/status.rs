//! The operator's view: a node serving one volume over iSCSI and NVMe/TCP, a host attached
//! over each (a raw iSCSI login over TCP, the Rust NVMe/TCP initiator), and the admin API's
//! `/v1/volumes`, `/metrics` and `tandem status` table listing each host under its protocol
//! with counters that move.

mod iscsi_common;
mod nvme_common;

use bytes::Bytes;
use gateway::config::PortalConfig;
use gateway::nvme::config::DEFAULT_NQN;
use gateway::status::{self, HostStatus, NodeView};
use iscsi_common::RawSession;
use nvme_common::{Node, HOST_B};
use nvme_initiator::{Controller, HostOptions};

const INITIATOR: &str = "iqn.2026-01.io.tandem:status-test";

fn the_host<'a>(list: &'a [HostStatus], name: &str) -> &'a HostStatus {
    list.iter()
        .find(|h| h.host == name)
        .unwrap_or_else(|| panic!("{name} not listed in {list:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_hosts_per_protocol_with_moving_counters() {
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
    let view = NodeView::new(&node.cfg, fronts);
    let readiness = view.readiness.clone();
    let admin = gateway::admin::start("127.0.0.1:0".parse().unwrap(), view, &node.shutdown)
        .await
        .unwrap();
    let fetch = move || tokio::task::spawn_blocking(move || status::fetch(admin.bound).unwrap());
    let get = move |path: &'static str| {
        tokio::task::spawn_blocking(move || status::get(admin.bound, path))
    };

    // alive at once; ready only when the daemon says so
    assert_eq!(get("/healthz").await.unwrap().unwrap(), "ok\n");
    let not_ready = get("/readyz").await.unwrap().unwrap_err().to_string();
    assert!(not_ready.contains("503"), "{not_ready}");
    readiness.set_ready();
    assert_eq!(get("/readyz").await.unwrap().unwrap(), "ready\n");

    let doc = fetch().await.unwrap();
    let v = &doc.volumes[0];
    assert_eq!(v.name, "default");
    assert!(v.hosts.iscsi.is_empty() && v.hosts.nvme.is_empty());
    assert_eq!(v.exports.iscsi[0].target, target);
    assert_eq!(v.exports.nvme[0].subsystem, DEFAULT_NQN);
    assert_eq!(v.role, "primary");

    // attach over both protocols and do some I/O
    let mut sess = RawSession::login(iscsi_addr, &target, INITIATOR).await;
    for _ in 0..3 {
        sess.read_block().await; // the first answers the power-on unit attention
    }
    let host = HostOptions {
        hostnqn: HOST_B.into(),
        ..HostOptions::default()
    };
    let c = Controller::connect(node.io[0], DEFAULT_NQN, &host)
        .await
        .unwrap();
    let bs = c.identify_namespace(1).await.unwrap().block_size;
    c.write(0, 1, 8, Bytes::from(vec![3u8; bs as usize]), bs, false)
        .await
        .unwrap();
    c.read(0, 1, 8, 1, bs).await.unwrap();

    let doc = fetch().await.unwrap();
    let v = &doc.volumes[0];
    let i = the_host(&v.hosts.iscsi, INITIATOR);
    assert!(i.via == target && i.address.starts_with("127.0.0.1:"));
    assert!(i.io.reads >= 2, "{i:?}");
    let n = the_host(&v.hosts.nvme, HOST_B);
    assert_eq!((n.io.reads, n.io.writes), (1, 1));
    assert_eq!(n.io.write_bytes, u64::from(bs));
    assert!(v.hosts.nvme.iter().all(|h| h.host != INITIATOR));
    assert!(v.engine.writes >= 1);

    // counters move, and so do the latency histograms of each protocol's reads only
    let m1 = get("/metrics").await.unwrap().unwrap();
    assert_eq!(sess.read_block().await, 0);
    c.read(0, 1, 8, 1, bs).await.unwrap();
    let m2 = get("/metrics").await.unwrap().unwrap();
    let count = |text: &str, protocol: &str, op: &str| {
        sample(
            text,
            &format!(
                r#"tandem_command_latency_seconds_count{{volume="default",protocol="{protocol}",op="{op}"}}"#
            ),
        )
    };
    assert!(count(&m1, "iscsi", "read") >= 2, "{m1}");
    assert_eq!(count(&m1, "nvme", "read"), 1, "{m1}");
    assert_eq!(count(&m1, "nvme", "write"), 1, "{m1}");
    assert_eq!(count(&m2, "iscsi", "read"), count(&m1, "iscsi", "read") + 1);
    assert_eq!(count(&m2, "nvme", "read"), 2);
    for unchanged in [("nvme", "write"), ("iscsi", "write"), ("nvme", "flush")] {
        let (p, o) = unchanged;
        assert_eq!(count(&m2, p, o), count(&m1, p, o), "{p} {o}");
    }
    // host series: by host name and protocol, never by address or volume
    let host = |text: &str, protocol: &str, name: &str, host: &str| {
        sample(
            text,
            &format!(r#"tandem_{name}{{protocol="{protocol}",host="{host}"}}"#),
        )
    };
    assert_eq!(host(&m2, "nvme", "host_connections", HOST_B), 1);
    assert_eq!(host(&m2, "iscsi", "host_connections", INITIATOR), 1);
    assert_eq!(
        host(&m2, "nvme", "host_commands_total", HOST_B),
        host(&m1, "nvme", "host_commands_total", HOST_B) + 1
    );
    assert!(host(&m2, "iscsi", "host_commands_total", INITIATOR) >= 3);
    for l in m2.lines().filter(|l| l.starts_with("tandem_host_")) {
        assert!(
            !l.contains("address=") && !l.contains("127.0.0.1") && !l.contains("volume="),
            "{l}"
        );
    }
    assert!(m2.contains(r#"tandem_volume_role{volume="default",state="primary"} 1"#));
    assert!(m2.contains(r#"tandem_volume_alua_state{volume="default",state="active_optimized"} 1"#));
    assert!(m2.contains(r#"tandem_volume_ana_state{volume="default",state="optimized"} 1"#));
    assert!(m2.contains("tandem_build_info{version="), "{m2}");
    let doc2 = fetch().await.unwrap();
    let v2 = &doc2.volumes[0];
    assert_eq!(
        the_host(&v2.hosts.iscsi, INITIATOR).io.reads,
        i.io.reads + 1
    );
    assert_eq!(the_host(&v2.hosts.nvme, HOST_B).io.reads, 2);

    // the table and the metrics show them too
    let table = status::table(&doc2, gateway::time::unix_now());
    let line = |proto: &str, host: &str| {
        table
            .lines()
            .any(|l| l.trim_start().starts_with(proto) && l.contains(host))
    };
    assert!(line("iscsi", INITIATOR), "{table}");
    assert!(line("nvme", HOST_B), "{table}");
    let metrics = tokio::task::spawn_blocking(move || status::get(admin.bound, "/metrics"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        metrics.contains(r#"tandem_volume_hosts{volume="default",protocol="iscsi"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"tandem_volume_hosts{volume="default",protocol="nvme"} 1"#));
    assert!(metrics.contains("tandem_volume_flusher_runs_total{volume=\"default\"}"));

    // and so does the `tandem status` command, as a table and as JSON
    let admin_addr = admin.bound.to_string();
    let run = move |json: bool| {
        let addr = admin_addr.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"));
            cmd.args(["status", "--admin", &addr]);
            if json {
                cmd.arg("--json");
            }
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        })
    };
    let printed = run(false).await.unwrap();
    assert!(printed.contains("volume default"), "{printed}");
    assert!(printed
        .lines()
        .any(|l| l.contains("iscsi") && l.contains(INITIATOR)));
    assert!(printed
        .lines()
        .any(|l| l.contains("nvme") && l.contains(HOST_B)));
    let json: status::VolumesDoc = serde_json::from_str(&run(true).await.unwrap()).unwrap();
    assert_eq!(the_host(&json.volumes[0].hosts.nvme, HOST_B).host, HOST_B);

    // a host that leaves disappears
    c.shutdown().await.unwrap();
    drop(c);
    drop(sess);
    let mut gone = false;
    for _ in 0..50 {
        let d = fetch().await.unwrap();
        if d.volumes[0].hosts.iscsi.is_empty() && d.volumes[0].hosts.nvme.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "hosts still listed after they left");
    node.stop().await;
}

/// The value of the sample named exactly `series` (name and labels) in a Prometheus text.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in {text}"))
        .parse()
        .unwrap()
}
