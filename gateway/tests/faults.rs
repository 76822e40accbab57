//! Disk faults as hosts and operators see them, on a node started in-process: a volume whose
//! file system fills up answers writes with NVMe Capacity Exceeded while reads and the other
//! volumes keep serving, and takes writes again once space is freed, with nothing acknowledged
//! lost; a volume that cannot open is reported unavailable and the others serve.

mod nvme_common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use blockstore::tmpfs::{fill, Tmpfs};
use bytes::Bytes;
use gateway::config::{Size, VolumeConfig};
use gateway::nvme::config::{NamespaceConfig, SubsystemConfig};
use nvme_common::{config, HOST_A};
use nvme_initiator::{Controller, HostOptions};
use proto_nvmeof::Status;

const NQN: &str = "nqn.2026-11.io.tandem:faults";
const BS: u32 = 4096;

fn block(i: u64) -> Bytes {
    Bytes::from(vec![(i % 251) as u8 + 1; BS as usize])
}

fn volume(name: &str, path: Option<PathBuf>) -> VolumeConfig {
    let mut v = VolumeConfig::new(name, Size(64 << 20));
    v.block_size = BS;
    v.wal_size = Size(2 << 20);
    v.path = path;
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_file_system_fails_writes_with_capacity_exceeded_and_other_volumes_serve() {
    let fs = Tmpfs::mount(16 << 20);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1);
    cfg.volumes = vec![
        volume("full", Some(fs.dir.join("full"))),
        volume("other", None),
        volume("broken", None),
        volume("gone", None),
    ];
    // A volume whose log file is missing: reported and left out too.
    let gone = blockstore::DirStorage::new(dir.path().join("gone"));
    blockstore::create(
        &gone,
        &blockstore::CreateOptions {
            capacity_bytes: 1 << 20,
            wal_bytes: 1 << 20,
            ..blockstore::CreateOptions::default()
        },
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("gone").join("wal")).unwrap();
    // A volume whose superblock is garbage: reported, left out, the others serve.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    for f in ["superblock", "wal", "extent"] {
        std::fs::write(broken.join(f), vec![0x5Au8; 8192]).unwrap();
    }
    cfg.iscsi.targets.clear();
    cfg.nvme.subsystems = vec![SubsystemConfig {
        nqn: NQN.into(),
        serial: None,
        allowed_hosts: Some(vec![HOST_A.into()]),
        namespaces: ["full", "other", "broken"]
            .iter()
            .enumerate()
            .map(|(i, v)| NamespaceConfig {
                nsid: i as u32 + 1,
                volume: (*v).into(),
            })
            .collect(),
        any_host: false,
    }];
    cfg.validate().unwrap();
    let opened = gateway::volumes::open_available(&cfg).await.unwrap();
    assert_eq!(opened.volumes.keys().collect::<Vec<_>>(), ["full", "other"]);
    assert_eq!(opened.unavailable.len(), 2);
    assert_eq!(opened.unavailable[0].name, "broken");
    assert!(
        opened.unavailable[0].reason.contains("corrupt superblock"),
        "{}",
        opened.unavailable[0].reason
    );
    assert_eq!(opened.unavailable[1].name, "gone");
    assert!(
        opened.unavailable[1].reason.contains("No such file"),
        "{}",
        opened.unavailable[1].reason
    );
    let vols = opened.volumes;
    let shutdown = tokio::sync::watch::channel(false).0;
    let fronts = gateway::frontends::start(&cfg, &vols, shutdown.clone())
        .await
        .unwrap();
    let view = gateway::status::NodeView::new(&cfg, &fronts);
    view.served.set_unavailable(opened.unavailable);
    let doc = view.volumes();
    assert_eq!(doc.unavailable.len(), 2, "{doc:?}");
    assert!(gateway::status::table(&doc, 0).contains("volume broken  UNAVAILABLE"));
    let addr = fronts.nvme.as_ref().unwrap().bound[0];
    let host = Controller::connect(
        addr,
        NQN,
        &HostOptions {
            hostnqn: HOST_A.into(),
            ..HostOptions::default()
        },
    )
    .await
    .unwrap();

    let filler = fill(&fs.dir, 256 << 10);
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..4096u64 {
        match host.write(0, 1, i, block(i), BS, false).await {
            Ok(()) => acked.push(i),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        // The volume on the other file system serves throughout.
        host.write(0, 2, i % 64, block(i), BS, false).await.unwrap();
    }
    match refused {
        Some(nvme_initiator::Error::Status { status, .. }) => {
            assert_eq!(status, Status::CAPACITY_EXCEEDED.dnr())
        }
        other => panic!("a full file system must refuse writes with Capacity Exceeded: {other:?}"),
    }
    for &i in &acked {
        assert_eq!(
            host.read(0, 1, i, 1, BS).await.unwrap(),
            block(i),
            "block {i}"
        );
    }
    host.flush(0, 1).await.unwrap();
    host.flush(0, 2).await.unwrap();

    std::fs::remove_file(&filler).unwrap();
    let next = acked.len() as u64;
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match host.write(0, 1, next, block(next), BS, false).await {
            Ok(()) => break,
            Err(e) if Instant::now() < until => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("writes did not resume once space was freed: {e:?}"),
        }
    }
    acked.push(next);
    host.flush(0, 1).await.unwrap();
    let _ = host.shutdown().await;
    let _ = shutdown.send(true);
    fronts.join().await;
    gateway::volumes::close_all(&vols).await;
    drop(vols);

    // Nothing acknowledged was lost: the volume reopens with every block.
    let vols = gateway::volumes::open_available(&cfg)
        .await
        .unwrap()
        .volumes;
    let full = &vols["full"].volume;
    for &i in &acked {
        assert_eq!(
            full.read(i, 1).await.unwrap(),
            block(i).to_vec(),
            "block {i}"
        );
    }
    gateway::volumes::close_all(&vols).await;
}

#[tokio::test]
async fn a_second_node_on_the_same_data_directory_stops_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1);
    let first = gateway::volumes::open_available(&cfg).await.unwrap();
    assert_eq!(first.volumes.len(), 1);
    let err = gateway::volumes::open_available(&cfg).await.unwrap_err();
    assert!(
        err.contains("is in use") && err.contains("another tandem"),
        "{err}"
    );
    gateway::volumes::close_all(&first.volumes).await;
    let again = gateway::volumes::open_available(&cfg).await.unwrap();
    assert_eq!(again.volumes.len(), 1, "free again once the first closed");
    gateway::volumes::close_all(&again.volumes).await;
}
