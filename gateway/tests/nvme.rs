//! The Rust NVMe/TCP initiator against a Tandem node on loopback: discovery, identity,
//! data integrity at queue depth (in-capsule and R2T), digests, host allow-lists,
//! keep-alive expiry, ANA on a role change, and data shared with the engine.

mod nvme_common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::nvme::config::DEFAULT_NQN;
use nvme_common::{Node, HOST_A, HOST_B, LOCKED_NQN};
use nvme_initiator::bench::{self, Op, Pattern, Workload};
use nvme_initiator::{Controller, Digests, Error, HostOptions};
use proto_nvmeof::{Status, DISCOVERY_NQN};

fn host(nqn: &str) -> HostOptions {
    HostOptions {
        hostnqn: nqn.into(),
        ..HostOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_every_subsystem_on_every_portal() {
    let node = Node::start(2, |_| {}).await;
    for addr in [node.discovery, node.io[0]] {
        let d = Controller::connect(addr, DISCOVERY_NQN, &host(HOST_A))
            .await
            .unwrap();
        assert_eq!(d.identify.cntrltype, 2, "discovery controller");
        assert_eq!(d.identify.subnqn, DISCOVERY_NQN);
        let log = d.discovery_log().await.unwrap();
        for nqn in [DEFAULT_NQN, LOCKED_NQN] {
            let mut ports: Vec<String> = log
                .records
                .iter()
                .filter(|r| r.subnqn == nqn && r.subtype == 2)
                .inspect(|r| {
                    assert_eq!((r.trtype, r.adrfam, r.cntlid), (3, 1, 0xFFFF));
                    assert_eq!(r.traddr, "127.0.0.1");
                })
                .map(|r| r.trsvcid.clone())
                .collect();
            ports.sort();
            let mut want: Vec<String> = node.io.iter().map(|a| a.port().to_string()).collect();
            want.sort();
            assert_eq!(ports, want, "{nqn} on every portal");
        }
        // a host outside the allow-list does not see the locked subsystem
        let other = Controller::connect(addr, DISCOVERY_NQN, &host(HOST_B))
            .await
            .unwrap();
        let log = other.discovery_log().await.unwrap();
        assert!(log.records.iter().all(|r| r.subnqn != LOCKED_NQN));
        assert!(log.records.iter().any(|r| r.subnqn == DEFAULT_NQN));
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_discovery_log_gives_the_advertised_addresses() {
    let ip: std::net::IpAddr = "192.0.2.10".parse().unwrap();
    let node = Node::start(1, |c| {
        for p in &mut c.nvme.portals {
            p.advertise = Some(std::net::SocketAddr::new(ip, 0));
        }
        c.nvme.discovery_advertise = Some(ip);
    })
    .await;
    let d = Controller::connect(node.discovery, DISCOVERY_NQN, &host(HOST_A))
        .await
        .unwrap();
    let log = d.discovery_log().await.unwrap();
    let of = |subtype: u8| -> Vec<(String, String)> {
        log.records
            .iter()
            .filter(|r| r.subtype == subtype)
            .map(|r| (r.traddr.clone(), r.trsvcid.clone()))
            .collect()
    };
    let io_port = node.io[0].port().to_string();
    assert!(!of(2).is_empty());
    assert!(
        of(2)
            .iter()
            .all(|(a, p)| a == "192.0.2.10" && *p == io_port),
        "{:?}",
        of(2)
    );
    let disc_port = node.discovery.port().to_string();
    assert!(
        of(3).contains(&("192.0.2.10".to_string(), disc_port)),
        "{:?}",
        of(3)
    );
    assert!(of(3).iter().all(|(a, _)| a == "192.0.2.10"), "{:?}", of(3));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_reports_the_volume_identity_on_every_path() {
    let node = Node::start(2, |_| {}).await;
    let uuid = node.vols["default"].volume.uuid();
    let ids = proto_nvmeof::namespace_ids(&uuid, 0);
    let a = Controller::connect(node.io[0], DEFAULT_NQN, &host(HOST_A))
        .await
        .unwrap();
    let b = Controller::connect(node.io[1], DEFAULT_NQN, &host(HOST_B))
        .await
        .unwrap();
    assert_ne!(a.cntlid, b.cntlid);
    assert_eq!(a.identify.cntlid, a.cntlid);
    assert_eq!(
        a.identify.serial, b.identify.serial,
        "serial stable per subsystem"
    );
    assert!(!a.identify.serial.is_empty());
    assert_eq!(a.identify.subnqn, DEFAULT_NQN);
    assert_eq!(
        a.identify.cmic & 0b1010,
        0b1010,
        "CMIC multi-controller + ANA"
    );
    assert_eq!(a.identify.cntrltype, 1);
    assert_ne!(a.identify.kas, 0);
    assert!(a.identify.ioccsz >= 4 && a.identify.iorcsz >= 1 && a.identify.icdoff == 0);
    assert_eq!(a.identify.sgls & 3, 1);
    assert!(a.identify.in_capsule_bytes() >= 16384);
    assert_ne!(a.identify.oncs & (1 << 5), 0, "reservations offered");
    let ns = a.identify_namespace(1).await.unwrap();
    assert_eq!(ns.nmic & 1, 1, "shared namespace");
    assert_eq!(ns.anagrpid, 1);
    assert!(ns.anagrpid <= a.identify.anagrpmax);
    assert_eq!(ns.nguid, ids.nguid);
    assert_eq!(ns.eui64, ids.eui64);
    assert_eq!(ns.block_size, 512);
    assert_eq!(ns.nsze, node.vols["default"].volume.capacity_blocks());
    assert_eq!(
        ns,
        b.identify_namespace(1).await.unwrap(),
        "same on both paths"
    );
    let descs = a.ns_descriptors(1).await.unwrap();
    assert!(descs.contains(&(1, ids.eui64.to_vec())));
    assert!(descs.contains(&(2, ids.nguid.to_vec())));
    assert!(descs.contains(&(3, uuid.to_vec())));
    let ana = a.ana_log().await.unwrap();
    assert_eq!(ana.groups.len(), 1);
    assert_eq!((ana.groups[0].id, ana.groups[0].state), (1, 1));
    assert_eq!(ana.groups[0].nsids, vec![1]);
    node.stop().await;
}

async fn verify_workload(c: &Controller, io_size: u32, op: Op) {
    let w = Workload {
        nsid: 1,
        op,
        pattern: Pattern::Random,
        io_size,
        lba_size: 512,
        span_blocks: 64 << 11,
        queue_depth: 32,
        duration: Duration::from_millis(400),
        verify: true,
        fua: false,
        flush_every: 0,
    };
    let r = bench::run(&c.io, &w).await.unwrap();
    assert_eq!(r.errors, 0, "{io_size} bytes: {r:?}");
    assert!(r.ios >= 32, "{io_size} bytes: {r:?}");
}

async fn round_trip(c: &Controller, lba: u64, len: usize, seed: u8) {
    let data: Bytes = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    c.write(0, 1, lba, data.clone(), 512, seed.is_multiple_of(2))
        .await
        .unwrap();
    let back = c.read(0, 1, lba, (len / 512) as u32, 512).await.unwrap();
    assert!(back == data, "{len} bytes at {lba} read back differently");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_read_back_at_queue_depth_32_in_capsule_and_r2t() {
    let node = Node::start(1, |_| {}).await;
    let c = Controller::connect(node.io[0], DEFAULT_NQN, &host(HOST_A))
        .await
        .unwrap();
    round_trip(&c, 0, 4096, 1).await; // in-capsule
    round_trip(&c, 1000, 128 << 10, 2).await; // R2T + H2CData
    round_trip(&c, 5000, 1 << 20, 3).await; // several C2HData/H2CData PDUs
    c.flush(0, 1).await.unwrap();
    verify_workload(&c, 4096, Op::Write).await;
    verify_workload(&c, 128 << 10, Op::Write).await;
    // The benchmark's durable modes: FUA writes, and a Flush after every 4 writes per slot.
    let flushes_before = node.vols["default"].volume.stats().flushes;
    let w = Workload {
        nsid: 1,
        op: Op::Write,
        pattern: Pattern::Random,
        io_size: 4096,
        lba_size: 512,
        span_blocks: 64 << 11,
        queue_depth: 8,
        duration: Duration::from_millis(300),
        verify: false,
        fua: true,
        flush_every: 4,
    };
    let r = bench::run(&c.io, &w).await.unwrap();
    assert_eq!(r.errors, 0, "{r:?}");
    assert!(r.ios >= 8 && r.mean_latency() > Duration::ZERO, "{r:?}");
    let flushes = node.vols["default"].volume.stats().flushes - flushes_before;
    assert!(
        flushes >= (r.ios / 4).saturating_sub(8),
        "{flushes} flushes for {} writes",
        r.ios
    );
    // out of range is an LBA Out of Range error with DNR, not a dropped connection
    let cap = node.vols["default"].volume.capacity_blocks();
    match c.read(0, 1, cap - 1, 8, 512).await {
        Err(Error::Status { status, .. }) => {
            assert_eq!(status.code(), Status::LBA_OUT_OF_RANGE.code());
            assert!(status.is_dnr());
        }
        other => panic!("{other:?}"),
    }
    round_trip(&c, 8, 4096, 4).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_data_digests() {
    let node = Node::start(1, |_| {}).await;
    let opts = HostOptions {
        digests: Digests {
            header: true,
            data: true,
        },
        ..host(HOST_A)
    };
    let c = Controller::connect(node.io[0], DEFAULT_NQN, &opts)
        .await
        .unwrap();
    assert_eq!(c.io[0].digests(), opts.digests);
    round_trip(&c, 0, 4096, 5).await;
    round_trip(&c, 64, 128 << 10, 6).await;
    verify_workload(&c, 4096, Op::Write).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_refuses_other_hosts_cleanly() {
    let node = Node::start(1, |_| {}).await;
    match Controller::connect(node.io[0], LOCKED_NQN, &host(HOST_B)).await {
        Err(Error::Status { status, dw0 }) => {
            assert_eq!(status.code(), Status::CONNECT_INVALID_HOST.code());
            assert!(status.is_dnr());
            assert_eq!(dw0, (1 << 16) | 512, "IATTR data, IPO = HOSTNQN");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(node.nvme().controllers(LOCKED_NQN), 0);
    let ok = Controller::connect(node.io[0], LOCKED_NQN, &host(HOST_A))
        .await
        .unwrap();
    round_trip(&ok, 0, 4096, 7).await;
    node.stop().await;
}

/// SPDK's host (`spdk_nvme_perf` and every SPDK application) names no Host NQN by default:
/// its Connect data carries an empty HOSTNQN field, a random host id and a 10 s keep-alive.
/// Such an anonymous host gets in where any host may, and is refused where a list decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_host_as_spdk_connects_is_served_where_any_host_is() {
    let node = Node::start(1, |_| {}).await;
    let spdk = HostOptions {
        hostnqn: String::new(),
        host_id: [0x5a; 16],
        kato_ms: 10_000,
        ..HostOptions::default()
    };
    let c = Controller::connect(node.io[0], DEFAULT_NQN, &spdk)
        .await
        .expect("an anonymous host connects to a subsystem open to any host");
    round_trip(&c, 8, 8192, 3).await;
    let d = Controller::connect(node.io[0], DISCOVERY_NQN, &spdk)
        .await
        .expect("and to the discovery controller");
    let log = d.discovery_log().await.unwrap();
    assert!(log.records.iter().any(|r| r.subnqn == DEFAULT_NQN));
    assert!(log.records.iter().all(|r| r.subnqn != LOCKED_NQN));
    match Controller::connect(node.io[0], LOCKED_NQN, &spdk).await {
        Err(Error::Status { status, dw0 }) => {
            assert_eq!(status.code(), Status::CONNECT_INVALID_HOST.code());
            assert_eq!(dw0, (1 << 16) | 512, "IATTR data, IPO = HOSTNQN");
        }
        other => panic!("an allow-list must refuse an anonymous host, got {other:?}"),
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_host_is_dropped_after_kato() {
    let node = Node::start(1, |_| {}).await;
    let kato = Duration::from_millis(1000);
    let quiet = HostOptions {
        kato_ms: 1000,
        keep_alive: false,
        ..host(HOST_A)
    };
    let talking = HostOptions {
        kato_ms: 1000,
        ..host(HOST_B)
    };
    let start = Instant::now();
    let q = Controller::connect(node.io[0], DEFAULT_NQN, &quiet)
        .await
        .unwrap();
    let t = Controller::connect(node.io[0], DEFAULT_NQN, &talking)
        .await
        .unwrap();
    assert_eq!(node.nvme().controllers(DEFAULT_NQN), 2);
    while q.admin.closed().is_none() || q.io[0].closed().is_none() {
        assert!(
            start.elapsed() < kato + Duration::from_millis(1500),
            "still connected after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(start.elapsed() >= kato - Duration::from_millis(100));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(t.admin.closed().is_none(), "keep-alives keep it alive");
    round_trip(&t, 0, 4096, 8).await;
    assert_eq!(node.nvme().controllers(DEFAULT_NQN), 1, "CNTLID released");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_role_gives_retryable_ana_status_and_log() {
    let node = Node::start(1, |_| {}).await;
    let c = Controller::connect(node.io[0], DEFAULT_NQN, &host(HOST_A))
        .await
        .unwrap();
    round_trip(&c, 0, 4096, 9).await;
    let before = c.ana_log().await.unwrap().change_count;
    let v = &node.vols["default"].volume;
    v.set_role(blockstore::Role::Standby, 2).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = c.ana_log().await.unwrap();
        if log.groups[0].state == 3 {
            assert!(log.change_count > before, "CHGCNT must change");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ANA log never showed inaccessible"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match c.read(0, 1, 0, 8, 512).await {
        Err(Error::Status { status, .. }) => {
            assert_eq!(status.code(), Status::ANA_INACCESSIBLE.code());
            assert!(
                !status.is_dnr(),
                "the host must be allowed to retry elsewhere"
            );
        }
        other => panic!("{other:?}"),
    }
    v.set_role(blockstore::Role::Primary, 3).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.read(0, 1, 0, 8, 512).await.is_err() {
        assert!(Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_written_through_the_engine_reads_back_over_nvme() {
    let node = Node::start(1, |_| {}).await;
    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    node.vols["default"]
        .volume
        .write(300, data.clone(), true)
        .await
        .unwrap();
    let c = Controller::connect(node.io[0], DEFAULT_NQN, &host(HOST_A))
        .await
        .unwrap();
    assert_eq!(c.read(0, 1, 300, 16, 512).await.unwrap(), data);
    node.stop().await;
}
