//! Refusals are counted per volume, protocol and kind in `/metrics`: reservation conflicts
//! (SCSI's from the logical unit, NVMe's from the reservation check) and ALUA / ANA refusals
//! (the logical unit's NOT READY, the NVMe core's ANA path status), with the volume's role,
//! epoch and access state gauges following a role change.

mod nvme_common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::nvme::config::DEFAULT_NQN;
use gateway::status::NodeView;
use nvme_common::{Node, HOST_B};
use nvme_initiator::{Controller, Error, HostOptions};
use proto_iscsi::scsi::{Nexus, SenseKey, Status as ScsiStatus};

fn nexus(id: u64) -> Nexus {
    Nexus {
        id,
        initiator_port: format!("iqn.2026-01.io.tandem:refusals-{id},i,0x00023d000001"),
        target_port_group: 1,
        relative_port: 1,
    }
}

/// Runs one CDB from `nexus` on the volume's logical unit, past unit attentions.
async fn scsi(
    node: &Node,
    nexus: &Nexus,
    cdb: &[u8],
    out: &[u8],
) -> (ScsiStatus, Option<SenseKey>) {
    let lu = node.lu("default");
    loop {
        let (c, _) = lu
            .execute(
                nexus,
                cdb,
                Bytes::copy_from_slice(out),
                out.len() as u32,
                &gateway::counters::IoCounters::default(),
            )
            .await;
        let key = c.sense.as_ref().map(|s| s.key);
        if key != Some(SenseKey::UnitAttention) {
            return (c.status, key);
        }
    }
}

fn pr_out_params(key: u64, sa_key: u64) -> [u8; 24] {
    let mut p = [0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p
}

const WRITE10: [u8; 10] = [0x2A, 0, 0, 0, 0, 8, 0, 0, 1, 0];
const READ10: [u8; 10] = [0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0];

/// The value of sample `series` (exact name and labels) in the node's `/metrics` text.
fn sample(view: &NodeView, series: &str) -> u64 {
    let text = gateway::exposition::node_text(view);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in {text}"))
        .parse()
        .unwrap()
}

fn errors(view: &NodeView, protocol: &str, kind: &str) -> u64 {
    sample(
        view,
        &format!(
            r#"tandem_command_errors_total{{volume="default",protocol="{protocol}",kind="{kind}"}}"#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservation_conflicts_are_counted_per_protocol() {
    let node = Node::start(1, |_| {}).await;
    let view = NodeView::new(&node.cfg, node.fronts.as_ref().unwrap());
    let holder = nexus(1);
    let bs = node.lu("default").volume.volume.block_size() as usize;
    // REGISTER, then RESERVE Write Exclusive, from the holder
    let reg = pr_out_params(0, 0xAB);
    let st = scsi(&node, &holder, &[0x5F, 0, 0, 0, 0, 0, 0, 0, 24, 0], &reg).await;
    assert_eq!(st.0, ScsiStatus::Good);
    let res = pr_out_params(0xAB, 0);
    let st = scsi(&node, &holder, &[0x5F, 1, 1, 0, 0, 0, 0, 0, 24, 0], &res).await;
    assert_eq!(st.0, ScsiStatus::Good);
    for p in ["iscsi", "nvme"] {
        assert_eq!(errors(&view, p, "reservation_conflict"), 0);
    }

    // another SCSI initiator's write conflicts
    let other = nexus(2);
    let st = scsi(&node, &other, &WRITE10, &vec![1u8; bs]).await;
    assert_eq!(st.0, ScsiStatus::ReservationConflict);
    assert_eq!(errors(&view, "iscsi", "reservation_conflict"), 1);
    assert_eq!(errors(&view, "nvme", "reservation_conflict"), 0);

    // and so does an NVMe host's
    let host = HostOptions {
        hostnqn: HOST_B.into(),
        ..HostOptions::default()
    };
    let c = Controller::connect(node.io[0], DEFAULT_NQN, &host)
        .await
        .unwrap();
    let w = c
        .write(0, 1, 8, Bytes::from(vec![2u8; bs]), bs as u32, false)
        .await;
    assert!(matches!(w, Err(Error::Status { .. })), "{w:?}");
    assert_eq!(errors(&view, "nvme", "reservation_conflict"), 1);
    assert_eq!(errors(&view, "iscsi", "reservation_conflict"), 1);
    // a read is allowed under Write Exclusive, and refuses nothing
    c.read(0, 1, 8, 1, bs as u32).await.unwrap();
    assert_eq!(errors(&view, "nvme", "reservation_conflict"), 1);
    assert_eq!(errors(&view, "nvme", "access_state"), 0);
    c.shutdown().await.unwrap();
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alua_and_ana_refusals_are_counted_and_states_exported() {
    let node = Node::start(1, |_| {}).await;
    let view = NodeView::new(&node.cfg, node.fronts.as_ref().unwrap());
    let host = HostOptions {
        hostnqn: HOST_B.into(),
        ..HostOptions::default()
    };
    let c = Controller::connect(node.io[0], DEFAULT_NQN, &host)
        .await
        .unwrap();
    let bs = c.identify_namespace(1).await.unwrap().block_size;
    c.read(0, 1, 0, 1, bs).await.unwrap();
    let me = nexus(3);
    assert_eq!(scsi(&node, &me, &READ10, &[]).await.0, ScsiStatus::Good);
    let state = |name: &str, state: &str| {
        sample(
            &view,
            &format!(r#"tandem_volume_{name}{{volume="default",state="{state}"}}"#),
        )
    };
    assert_eq!(state("alua_state", "active_optimized"), 1);
    assert_eq!(state("alua_state", "standby"), 0);
    assert_eq!(sample(&view, r#"tandem_volume_epoch{volume="default"}"#), 1);

    node.vols["default"]
        .volume
        .set_role(blockstore::Role::Standby, 2)
        .await
        .unwrap();
    assert_eq!(state("role", "standby"), 1);
    assert_eq!(state("role", "primary"), 0);
    assert_eq!(state("alua_state", "standby"), 1);
    assert_eq!(state("alua_state", "active_optimized"), 0);
    assert_eq!(state("ana_state", "inaccessible"), 1);
    assert_eq!(state("ana_state", "optimized"), 0);
    assert_eq!(sample(&view, r#"tandem_volume_epoch{volume="default"}"#), 2);

    // NVMe: once the subsystem follows, the core answers ANA inaccessible by itself
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match c.read(0, 1, 0, 1, bs).await {
            Ok(_) => {
                assert!(Instant::now() < deadline, "never refused");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(Error::Status { status, .. }) => {
                assert_eq!(status.code(), proto_nvmeof::Status::ANA_INACCESSIBLE.code());
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(errors(&view, "nvme", "access_state"), 1);

    // SCSI: once the logical unit follows, NOT READY (LU not accessible, standby)
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match scsi(&node, &me, &READ10, &[]).await {
            (ScsiStatus::Good, _) => {
                assert!(Instant::now() < deadline, "never refused");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ScsiStatus::CheckCondition, Some(SenseKey::NotReady)) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(errors(&view, "iscsi", "access_state"), 1);
    assert_eq!(errors(&view, "nvme", "access_state"), 1);
    assert_eq!(errors(&view, "iscsi", "reservation_conflict"), 0);
    c.shutdown().await.unwrap();
    node.stop().await;
}
