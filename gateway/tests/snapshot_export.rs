//! A snapshot exported as a write-protected disk over both protocols, end to end: a real
//! `tandem serve` process driven through the `tandem` CLI. A read-only view of a snapshot
//! (`tandem clone VOLUME SNAPSHOT NAME --read-only`) is exported as an iSCSI LUN and an NVMe
//! namespace; both show the snapshot's content while the origin keeps changing; SCSI reports
//! WP in MODE SENSE and answers every change DATA PROTECT / WRITE PROTECTED (07/27/00); NVMe
//! reports NSATTR bit 0 in Identify Namespace and answers Namespace Is Write Protected (0x20).
//! Exporting `VOLUME@SNAPSHOT` directly is refused with a pointer to `tandem clone`; deleting
//! a snapshot a view is made from is refused (409) until the view goes; the view survives a
//! restart.

#[path = "cli_daemon/mod.rs"]
mod cli_daemon;
#[path = "raw_iscsi/mod.rs"]
mod raw_iscsi;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cli_daemon::{Daemon, HOST_A, NQN_A};
use nvme_initiator::{Controller, Error as NvmeError, HostOptions};
use proto_nvmeof::Status;
use raw_iscsi::Raw;

const IQN_VIEW: &str = "iqn.2026-11.io.tandem:a-s1";
const INIT: &str = "iqn.2026-11.test:initiator-1";
const BS: u32 = 512;

fn host() -> HostOptions {
    HostOptions {
        hostnqn: HOST_A.into(),
        ..HostOptions::default()
    }
}

/// `blocks` blocks of a pattern of `seed`.
fn pattern(seed: u8, blocks: usize) -> Bytes {
    (0..blocks * BS as usize)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

fn cdb10(op: u8, lba: u32, blocks: u16, flags: u8) -> [u8; 10] {
    let mut c = [op, flags, 0, 0, 0, 0, 0, 0, 0, 0];
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// The (sense key, ASC, ASCQ) of fixed-format sense data.
fn sense_code(sense: &[u8]) -> (u8, u8, u8) {
    assert!(sense.len() >= 14, "sense data: {sense:?}");
    (sense[2] & 0x0F, sense[12], sense[13])
}

/// The status code (type and code, without DNR) an NVMe command failed with.
fn nvme_status<T: std::fmt::Debug>(r: Result<T, NvmeError>) -> u16 {
    match r {
        Err(NvmeError::Status { status, .. }) => {
            assert!(status.is_dnr(), "a write-protected answer is final");
            status.code()
        }
        other => panic!("expected an NVMe status, got {other:?}"),
    }
}

/// Checks the view over iSCSI: its content is `expect`, MODE SENSE reports WP, and every
/// command that would change it is DATA PROTECT / WRITE PROTECTED.
async fn check_iscsi_view(d: &Daemon, expect: &Bytes) {
    let mut s = Raw::login(d.iscsi, IQN_VIEW, INIT, [0x40, 0, 0, 0, 0, 7]).await;
    s.clear_unit_attentions(100).await;
    let (st, data) = s.run(1, &cdb10(0x28, 0, 8, 0), 8 * BS, &[]).await;
    assert_eq!(st, 0);
    assert_eq!(data, expect[..], "the view reads the snapshot");
    // MODE SENSE(6), all pages: the device-specific parameter's WP bit.
    let (st, data, _) = s.run_sense(2, &[0x1A, 0x08, 0x3F, 0, 255, 0], 255).await;
    assert_eq!(st, 0);
    assert_eq!(data[2] & 0x80, 0x80, "MODE SENSE(6) WP");
    let (st, data, _) = s
        .run_sense(3, &[0x5A, 0x08, 0x3F, 0, 0, 0, 0, 1, 0, 0], 256)
        .await;
    assert_eq!(st, 0);
    assert_eq!(data[3] & 0x80, 0x80, "MODE SENSE(10) WP");
    let one = pattern(99, 1);
    let mut unmap = vec![0u8; 24];
    unmap[0..2].copy_from_slice(&22u16.to_be_bytes());
    unmap[2..4].copy_from_slice(&16u16.to_be_bytes());
    unmap[16..20].copy_from_slice(&1u32.to_be_bytes());
    let mut w16 = [0u8; 16];
    w16[0] = 0x8A;
    w16[13] = 1;
    let changes: [(&str, Vec<u8>, Vec<u8>); 5] = [
        ("WRITE(10)", cdb10(0x2A, 0, 1, 0).to_vec(), one.to_vec()),
        ("WRITE(16)", w16.to_vec(), one.to_vec()),
        (
            "WRITE SAME(10)",
            cdb10(0x41, 0, 4, 0).to_vec(),
            one.to_vec(),
        ),
        (
            "UNMAP",
            vec![0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0],
            unmap.clone(),
        ),
        (
            "COMPARE AND WRITE",
            {
                let mut c = vec![0u8; 16];
                c[0] = 0x89;
                c[13] = 1;
                c
            },
            [expect[..BS as usize].to_vec(), one.to_vec()].concat(),
        ),
    ];
    for (i, (what, cdb, data)) in changes.iter().enumerate() {
        let (st, _, sense) = s.run_sense_with(10 + i as u32, cdb, 0, data).await;
        assert_eq!(st, 0x02, "{what}: CHECK CONDITION");
        assert_eq!(
            sense_code(&sense),
            (0x07, 0x27, 0x00),
            "{what}: DATA PROTECT, WRITE PROTECTED"
        );
    }
    // SYNCHRONIZE CACHE goes on.
    assert_eq!(s.run(20, &cdb10(0x35, 0, 0, 0), 0, &[]).await.0, 0);
    let (st, data) = s.run(21, &cdb10(0x28, 0, 8, 0), 8 * BS, &[]).await;
    assert_eq!((st, &data[..]), (0, &expect[..]), "nothing changed");
}

/// Checks the view as namespace 2 over NVMe/TCP: NSATTR write protected, content `expect`,
/// every change answered Namespace Is Write Protected.
async fn check_nvme_view(d: &Daemon, expect: &Bytes) {
    let c = Controller::connect(d.nvme, NQN_A, &host()).await.unwrap();
    let id = c.identify_raw(0x00, 2).await.unwrap();
    assert_eq!(id[99] & 1, 1, "Identify Namespace NSATTR bit 0");
    let id1 = c.identify_raw(0x00, 1).await.unwrap();
    assert_eq!(id1[99] & 1, 0, "the origin's namespace is writable");
    assert_eq!(c.read(0, 2, 0, 8, BS).await.unwrap(), expect);
    let wp = Status::NS_WRITE_PROTECTED.code();
    assert_eq!(
        nvme_status(c.write(0, 2, 0, pattern(98, 1), BS, false).await),
        wp
    );
    let mut wz = nvme_initiator::host::rw(0x08, 2, 0, 4, false);
    wz.set_cdw(12, 3);
    assert_eq!(
        nvme_status(c.io_command(0, wz, nvme_initiator::queue::Data::None).await),
        wp
    );
    let mut dsm = proto_nvmeof::Sqe::new(0x09, 0);
    dsm.set_nsid(2);
    dsm.set_cdw(11, 1 << 2);
    let mut range = vec![0u8; 16];
    range[4..8].copy_from_slice(&4u32.to_le_bytes());
    assert_eq!(
        nvme_status(
            c.io_command(0, dsm, nvme_initiator::queue::Data::Write(range.into()))
                .await
        ),
        wp
    );
    c.flush(0, 2).await.unwrap();
    assert_eq!(c.read(0, 2, 0, 8, BS).await.unwrap(), expect, "unchanged");
    c.shutdown().await.unwrap();
}

#[test]
fn a_snapshot_is_exported_write_protected_over_both_protocols() {
    cli_daemon::run_scenario(scenario);
}

async fn scenario() {
    let mut d = Daemon::start();
    let origin = Controller::connect(d.nvme, NQN_A, &host()).await.unwrap();
    let before = pattern(1, 8);
    origin
        .write(0, 1, 0, before.clone(), BS, true)
        .await
        .unwrap();
    d.ok(&["snapshot", "create", "a", "s1"]);
    origin
        .write(0, 1, 0, pattern(2, 8), BS, true)
        .await
        .unwrap();

    // A snapshot is not exported itself: the refusal says how.
    let e = d.fails(&["export", "add", "a@s1", "--protocol", "iscsi"]);
    assert!(
        e.contains("400") && e.contains("tandem clone a s1") && e.contains("--read-only"),
        "{e}"
    );
    // Its read-only view is, over both protocols.
    d.ok(&["clone", "a", "s1", "a-s1", "--read-only"]);
    d.ok(&[
        "export",
        "add",
        "a-s1",
        "--protocol",
        "iscsi",
        "--target",
        IQN_VIEW,
    ]);
    d.ok(&[
        "export",
        "add",
        "a-s1",
        "--protocol",
        "nvme",
        "--target",
        NQN_A,
        "--id",
        "2",
    ]);
    let list: gateway::status::VolumesDoc =
        serde_json::from_str(&d.ok(&["volume", "list", "--json"])).unwrap();
    let view = list.volumes.iter().find(|v| v.name == "a-s1").unwrap();
    let of = view
        .clone_of
        .as_ref()
        .expect("the view reports its snapshot");
    assert_eq!((of.volume.as_str(), of.read_only), ("a", true));
    let table = d.ok(&["volume", "list"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("a-s1 ") && l.contains("a@1 (ro)")),
        "{table}"
    );

    check_iscsi_view(&d, &before).await;
    check_nvme_view(&d, &before).await;
    // The origin goes on changing; the view does not.
    origin
        .write(0, 1, 0, pattern(3, 8), BS, true)
        .await
        .unwrap();
    assert_eq!(origin.read(0, 1, 0, 8, BS).await.unwrap(), pattern(3, 8));
    check_iscsi_view(&d, &before).await;
    check_nvme_view(&d, &before).await;

    // The snapshot stays while its view exists.
    let e = d.fails(&["snapshot", "delete", "a", "s1"]);
    assert!(
        e.contains("409") && e.contains("read-only view \"a-s1\""),
        "{e}"
    );
    origin.shutdown().await.unwrap();

    // After a restart the view is still a write-protected export of the snapshot.
    d.restart();
    check_iscsi_view(&d, &before).await;
    check_nvme_view(&d, &before).await;

    // Without its exports and its view the snapshot can go.
    d.ok(&["export", "remove", "a-s1", "--protocol", "iscsi"]);
    d.ok(&["export", "remove", "a-s1", "--protocol", "nvme"]);
    d.ok(&["volume", "delete", "a-s1"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.cli(&["snapshot", "delete", "a", "s1"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "snapshot s1 never freed by its deleted view"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
