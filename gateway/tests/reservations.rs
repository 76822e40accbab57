//! One reservation state per volume across protocols: SCSI persistent reservations taken
//! through the volume's logical unit (the one every iSCSI session uses) and NVMe
//! reservations from the Rust initiator over NVMe/TCP exclude each other, release lifts the
//! exclusion, and the state survives a restart.

mod nvme_common;

use bytes::Bytes;
use gateway::nvme::config::DEFAULT_NQN;
use nvme_common::{Node, HOST_B};
use nvme_initiator::{Controller, Data, Error, HostOptions};
use proto_iscsi::scsi::{Nexus, Status as ScsiStatus};
use proto_nvmeof::{Sqe, Status};

const HOST_ID_B: [u8; 16] = [0xB0; 16];

fn host_b() -> HostOptions {
    HostOptions {
        hostnqn: HOST_B.into(),
        host_id: HOST_ID_B,
        ..HostOptions::default()
    }
}

fn nexus() -> Nexus {
    Nexus {
        id: 77,
        initiator_port: "iqn.2026-01.io.tandem:test,i,0x00023d000001".into(),
        target_port_group: 1,
        relative_port: 1,
    }
}

/// Runs one CDB on the volume's logical unit; returns status and data-in.
async fn scsi(node: &Node, cdb: &[u8], out: &[u8]) -> (ScsiStatus, Bytes) {
    let lu = node.lu("default");
    let (c, _) = lu
        .execute(
            &nexus(),
            cdb,
            Bytes::copy_from_slice(out),
            out.len() as u32,
            &gateway::counters::IoCounters::default(),
        )
        .await;
    (c.status, c.data)
}

/// PERSISTENT RESERVE OUT with its 24-byte parameter list.
async fn pr_out(node: &Node, sa: u8, kind: u8, key: u64, sa_key: u64) -> ScsiStatus {
    let mut p = [0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    scsi(node, &[0x5F, sa, kind, 0, 0, 0, 0, 0, 24, 0], &p)
        .await
        .0
}

async fn scsi_write(node: &Node) -> ScsiStatus {
    let bs = node.lu("default").volume.volume.block_size() as usize;
    scsi(node, &[0x2A, 0, 0, 0, 0, 8, 0, 0, 1, 0], &vec![0x5C; bs])
        .await
        .0
}

async fn scsi_read(node: &Node) -> ScsiStatus {
    scsi(node, &[0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0], &[]).await.0
}

fn keys(a: u64, b: u64) -> Data {
    let mut d = a.to_le_bytes().to_vec();
    d.extend_from_slice(&b.to_le_bytes());
    Data::Write(Bytes::from(d))
}

/// An NVMe reservation command on namespace 1.
async fn resv(c: &Controller, opcode: u8, cdw10: u32, data: Data) -> Result<Bytes, Error> {
    let mut sqe = Sqe::new(opcode, 0);
    sqe.set_nsid(1);
    sqe.set_cdw(10, cdw10);
    if let Data::Read(len) = data {
        sqe.set_cdw(10, len / 4 - 1);
        sqe.set_cdw(11, 1); // extended data structure
    }
    c.io_command(0, sqe, data).await.map(|c| c.data)
}

fn status_of<T: std::fmt::Debug>(r: Result<T, Error>) -> u16 {
    match r {
        Err(Error::Status { status, .. }) => {
            (u16::from(status.sct()) << 8) | u16::from(status.sc())
        }
        other => panic!("expected an NVMe error status, got {other:?}"),
    }
}

const CONFLICT: u16 = Status::RESERVATION_CONFLICT.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scsi_write_exclusive_conflicts_nvme_writes_not_reads() {
    let node = Node::start(1, |_| {}).await;
    assert_eq!(
        scsi(&node, &[0; 6], &[]).await.0,
        ScsiStatus::CheckCondition,
        "power-on UA"
    );
    assert_eq!(
        pr_out(&node, 0, 0, 0, 0xAB).await,
        ScsiStatus::Good,
        "REGISTER"
    );
    assert_eq!(
        pr_out(&node, 1, 1, 0xAB, 0).await,
        ScsiStatus::Good,
        "RESERVE WE"
    );

    let c = Controller::connect(node.io[0], DEFAULT_NQN, &host_b())
        .await
        .unwrap();
    let ctrl = c.identify_raw(1, 0).await.unwrap();
    assert_ne!(
        u16::from_le_bytes([ctrl[520], ctrl[521]]) & (1 << 5),
        0,
        "ONCS reservations"
    );
    let ns = c.identify_namespace(1).await.unwrap();
    assert_ne!(ns.rescap, 0, "RESCAP");
    let bs = ns.block_size;
    let w = c
        .write(0, 1, 0, Bytes::from(vec![1u8; bs as usize]), bs, false)
        .await;
    assert_eq!(status_of(w), CONFLICT);
    c.read(0, 1, 0, 1, bs)
        .await
        .expect("reads pass Write Exclusive");

    // the NVMe report shows the SCSI holder: one registrant, WE, holding
    let r = resv(&c, 0x0E, 0, Data::Read(4096)).await.unwrap();
    assert_eq!(r[4], 1, "RTYPE Write Exclusive");
    assert_eq!(u16::from_le_bytes([r[5], r[6]]), 1, "REGCTL");
    assert_eq!(r[64 + 2] & 1, 1, "holder");
    assert_eq!(&r[72..80], &0xABu64.to_le_bytes());

    // an NVMe host cannot acquire what the SCSI nexus holds, even once registered
    resv(&c, 0x0D, 0, keys(0, 0x22)).await.unwrap();
    assert_eq!(
        status_of(resv(&c, 0x11, 1 << 8, keys(0x22, 0)).await),
        CONFLICT
    );

    // SCSI RELEASE lifts the conflict
    assert_eq!(
        pr_out(&node, 2, 1, 0xAB, 0).await,
        ScsiStatus::Good,
        "RELEASE"
    );
    c.write(0, 1, 0, Bytes::from(vec![1u8; bs as usize]), bs, false)
        .await
        .expect("write after release");
    c.shutdown().await.unwrap();
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nvme_write_exclusive_conflicts_scsi_writes_and_survives_restart() {
    let node = Node::start(1, |_| {}).await;
    assert_eq!(
        scsi(&node, &[0; 6], &[]).await.0,
        ScsiStatus::CheckCondition,
        "power-on UA"
    );
    let c = Controller::connect(node.io[0], DEFAULT_NQN, &host_b())
        .await
        .unwrap();
    resv(&c, 0x0D, 0, keys(0, 0x11)).await.expect("register");
    assert_eq!(
        status_of(resv(&c, 0x11, 1 << 8, keys(0x12, 0)).await),
        CONFLICT,
        "wrong key"
    );
    resv(&c, 0x11, 1 << 8, keys(0x11, 0))
        .await
        .expect("acquire WE");
    assert_eq!(scsi_write(&node).await, ScsiStatus::ReservationConflict);
    assert_eq!(scsi_read(&node).await, ScsiStatus::Good);
    // PR IN READ RESERVATION over SCSI reports the NVMe host's key and type
    let (st, d) = scsi(&node, &[0x5E, 1, 0, 0, 0, 0, 0, 0, 64, 0], &[]).await;
    assert_eq!(st, ScsiStatus::Good);
    assert_eq!(&d[8..16], &0x11u64.to_be_bytes());
    assert_eq!(d[21] & 0x0F, 1);
    c.shutdown().await.unwrap();

    let dir = node.stop_keeping_data().await;
    let node = Node::start_in(dir, 1, |_| {}).await;
    assert_eq!(
        scsi(&node, &[0; 6], &[]).await.0,
        ScsiStatus::CheckCondition,
        "power-on UA"
    );
    assert_eq!(
        scsi_write(&node).await,
        ScsiStatus::ReservationConflict,
        "after restart"
    );
    let c = Controller::connect(node.io[0], DEFAULT_NQN, &host_b())
        .await
        .unwrap();
    let r = resv(&c, 0x0E, 0, Data::Read(4096)).await.unwrap();
    assert_eq!(r[4], 1);
    assert_eq!(
        &r[64 + 16..64 + 32],
        &HOST_ID_B,
        "the NVMe registrant's host id"
    );
    // the host still holds it: its writes pass; then release lifts the SCSI conflict
    let bs = c.identify_namespace(1).await.unwrap().block_size;
    c.write(0, 1, 0, Bytes::from(vec![2u8; bs as usize]), bs, false)
        .await
        .expect("holder writes");
    assert_eq!(
        status_of(resv(&c, 0x15, 3 << 8, keys(0x11, 0)).await),
        Status::INVALID_FIELD.0
    );
    resv(&c, 0x15, 1 << 8, keys(0x11, 0))
        .await
        .expect("release");
    assert_eq!(scsi_write(&node).await, ScsiStatus::Good);
    c.shutdown().await.unwrap();
    node.stop().await;
}

/// Reads one Reservation Notification log page: (count, type, NSID).
async fn notice(c: &Controller) -> (u64, u8, u32) {
    let p = c.log_page(0x80, 0, 0, 64).await.unwrap();
    (
        u64::from_le_bytes(p[0..8].try_into().unwrap()),
        p[8],
        u32::from_le_bytes(p[12..16].try_into().unwrap()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scsi_preempt_reaches_the_nvme_host_as_a_reservation_notification() {
    let node = Node::start(1, |_| {}).await;
    let c = Controller::connect(node.io[0], DEFAULT_NQN, &host_b())
        .await
        .unwrap();
    assert_eq!(notice(&c).await, (0, 0, 0), "nothing yet: empty page");
    // The NVMe host registers and takes Write Exclusive.
    resv(&c, 0x0D, 0, keys(0, 0x22)).await.unwrap();
    resv(&c, 0x11, 1 << 8, keys(0x22, 0)).await.unwrap();
    // A SCSI initiator registers and preempts the NVMe host's registration and reservation.
    let _ = scsi(&node, &[0; 6], &[]).await; // power-on UA
    assert_eq!(pr_out(&node, 0, 0, 0, 0xAB).await, ScsiStatus::Good);
    assert_eq!(
        pr_out(&node, 4, 1, 0xAB, 0x22).await,
        ScsiStatus::Good,
        "PREEMPT"
    );
    // The NVMe host learns it from its own controller: registration preempted on NSID 1
    // (the SCSI side raises its unit attention for the same event). Delivery is
    // asynchronous: poll briefly.
    let mut got = (0, 0, 0);
    for _ in 0..100 {
        got = notice(&c).await;
        if got.1 != 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!((got.1, got.2), (1, 1), "registration preempted on NSID 1");
    assert!(got.0 >= 1);
    // Its writes now conflict (it is no longer registered, and the SCSI host holds WE).
    let bs = c.identify_namespace(1).await.unwrap().block_size;
    let w = c
        .write(0, 1, 0, Bytes::from(vec![1u8; bs as usize]), bs, false)
        .await;
    assert_eq!(status_of(w), CONFLICT);
    c.shutdown().await.unwrap();
    node.stop().await;
}
