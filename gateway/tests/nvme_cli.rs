//! `tandem serve` as a process: with no configuration it serves the default volume over
//! NVMe/TCP, prints the nvme-cli commands for it, and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::nvme::config::DEFAULT_NQN;
use nvme_initiator::{Controller, HostOptions};

#[test]
fn default_serve_prints_nvme_commands_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "serve",
            "--iscsi-listen",
            "127.0.0.1:0",
            "--nvme-listen",
            "127.0.0.1:0",
            "--nvme-discovery-listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut connect, mut discover) = (None, None);
    let start = Instant::now();
    while connect.is_none() && start.elapsed() < Duration::from_secs(30) {
        let Some(Ok(l)) = lines.next() else { break };
        if l.trim_start().starts_with("nvme discover -t tcp") {
            discover = Some(l.clone());
        }
        if l.trim_start().starts_with("nvme connect -t tcp") {
            connect = Some(l);
        }
    }
    let connect = connect.expect("an nvme connect line");
    assert!(discover.is_some(), "an nvme discover line");
    let words: Vec<&str> = connect.split_whitespace().collect();
    let arg = |flag: &str| words[words.iter().position(|w| *w == flag).unwrap() + 1];
    assert_eq!(arg("-n"), DEFAULT_NQN);
    let addr: SocketAddr = format!("{}:{}", arg("-a"), arg("-s")).parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = Controller::connect(addr, DEFAULT_NQN, &HostOptions::default())
            .await
            .unwrap();
        let data = Bytes::from(vec![0xC3u8; 4096]);
        c.write(0, 1, 10, data.clone(), 512, false).await.unwrap();
        assert_eq!(c.read(0, 1, 10, 8, 512).await.unwrap(), data);
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.admin.closed().is_none() {
            assert!(
                Instant::now() < deadline,
                "connection not closed on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "tandem exited with {s}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tandem did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
