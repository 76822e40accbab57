//! NVMe in-band authentication (DH-HMAC-CHAP) end to end: a node whose `[[nvme.host]]` gives
//! hosts secrets, and the Rust initiator connecting with the right secret, a wrong one, none,
//! and with bidirectional authentication (right and wrong controller secret), on the admin
//! and I/O queues, with and without a DH exchange.

mod nvme_common;

use bytes::Bytes;
use gateway::nvme::config::{NvmeHostConfig, DEFAULT_NQN};
use nvme_common::{Node, HOST_A, HOST_B, LOCKED_NQN};
use nvme_initiator::{Controller, Error, HostOptions};
use proto_nvmeof::auth::{DhchapSecret, HashId};

fn secret(fill: u8, transform: Option<HashId>) -> String {
    DhchapSecret {
        transform,
        key: vec![fill; transform.map_or(48, HashId::digest_len)],
    }
    .to_text()
}

fn host_secret() -> String {
    secret(0x11, Some(HashId::Sha256))
}

fn ctrl_secret() -> String {
    secret(0x22, None)
}

async fn node() -> Node {
    Node::start(1, |cfg| {
        cfg.nvme.hosts = vec![
            NvmeHostConfig {
                nqn: HOST_A.into(),
                dhchap_secret: host_secret(),
                dhchap_ctrl_secret: Some(ctrl_secret()),
                dhchap_hashes: None,
                dhchap_dhgroups: None,
            },
            NvmeHostConfig {
                nqn: HOST_B.into(),
                dhchap_secret: secret(0x33, Some(HashId::Sha512)),
                dhchap_ctrl_secret: None,
                dhchap_hashes: Some(vec!["sha512".into()]),
                dhchap_dhgroups: Some(vec!["null".into()]),
            },
        ];
    })
    .await
}

fn opts(secret: Option<String>, ctrl: Option<String>, groups: &[u8]) -> HostOptions {
    HostOptions {
        hostnqn: HOST_A.into(),
        dhchap_secret: secret,
        dhchap_ctrl_secret: ctrl,
        dhchap_dhgroups: groups.to_vec(),
        io_queues: 2,
        ..HostOptions::default()
    }
}

/// Connects, writes and reads a block back over each I/O queue.
async fn connect_and_use(node: &Node, nqn: &str, o: &HostOptions) -> Result<(), Error> {
    let c = Controller::connect(node.io[0], nqn, o).await?;
    let bs = c.identify_namespace(1).await?.block_size;
    let data = Bytes::from(vec![0x5Au8; bs as usize]);
    // every I/O queue authenticated on its own
    for q in 0..c.io.len() {
        c.write(q, 1, 3 + q as u64, data.clone(), bs, false).await?;
        assert_eq!(c.read(q, 1, 3 + q as u64, 1, bs).await?, data);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_secret_connects_with_and_without_a_dh_exchange() {
    let node = node().await;
    // ffdhe2048 (the target's first choice), then only the null group offered
    for groups in [&[][..], &[0u8][..], &[3u8][..]] {
        let o = opts(Some(host_secret()), None, groups);
        connect_and_use(&node, DEFAULT_NQN, &o)
            .await
            .unwrap_or_else(|e| panic!("groups {groups:?}: {e}"));
    }
    // every subsystem the host may use asks for authentication
    connect_and_use(&node, LOCKED_NQN, &opts(Some(host_secret()), None, &[]))
        .await
        .unwrap();
    // another host, another hash function (SHA-512 only, no DH)
    let b = HostOptions {
        hostnqn: HOST_B.into(),
        dhchap_secret: Some(secret(0x33, Some(HashId::Sha512))),
        ..HostOptions::default()
    };
    connect_and_use(&node, DEFAULT_NQN, &b).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_secret_is_refused() {
    let node = node().await;
    let wrong = opts(Some(secret(0x12, Some(HashId::Sha256))), None, &[]);
    let e = connect_and_use(&node, DEFAULT_NQN, &wrong)
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Auth(m) if m.contains("refused")), "{e}");
    let none = opts(None, None, &[]);
    let e = connect_and_use(&node, DEFAULT_NQN, &none)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Auth(m) if m.contains("requires authentication")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_authentication_checks_the_controller() {
    let node = node().await;
    let both = opts(Some(host_secret()), Some(ctrl_secret()), &[]);
    connect_and_use(&node, DEFAULT_NQN, &both).await.unwrap();
    let both_null = opts(Some(host_secret()), Some(ctrl_secret()), &[0]);
    connect_and_use(&node, DEFAULT_NQN, &both_null)
        .await
        .unwrap();
    // the host expects another controller secret: it does not trust the controller
    let wrong_ctrl = opts(Some(host_secret()), Some(secret(0x23, None)), &[]);
    let e = connect_and_use(&node, DEFAULT_NQN, &wrong_ctrl)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Auth(m) if m.contains("controller failed to authenticate")),
        "{e}"
    );
    // HOST_B has no controller secret configured: asking for bidirectional is refused
    let b = HostOptions {
        hostnqn: HOST_B.into(),
        dhchap_secret: Some(secret(0x33, Some(HashId::Sha512))),
        dhchap_ctrl_secret: Some(ctrl_secret()),
        ..HostOptions::default()
    };
    let e = connect_and_use(&node, DEFAULT_NQN, &b).await.unwrap_err();
    assert!(matches!(&e, Error::Auth(m) if m.contains("refused")), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_queue_runs_no_command() {
    let node = node().await;
    // Connect the admin queue by hand and skip authentication: Property Get must fail with
    // Authentication Required, not run.
    let q = nvme_initiator::Queue::open(node.io[0], Default::default(), 8)
        .await
        .unwrap();
    let (sqe, data) = proto_nvmeof::fabrics::Connect {
        recfmt: 0,
        qid: 0,
        sqsize: 7,
        cattr: 0,
        kato_ms: 5000,
        host_id: [1; 16],
        cntlid: proto_nvmeof::fabrics::CNTLID_DYNAMIC,
        subnqn: DEFAULT_NQN.into(),
        hostnqn: HOST_A.into(),
    }
    .encode(0);
    let done = q
        .submit(sqe, nvme_initiator::Data::InCapsule(Bytes::from(data)))
        .await
        .unwrap()
        .ok()
        .unwrap();
    assert_ne!(
        done.cqe.dw0() & proto_nvmeof::auth::CONNECT_ATR,
        0,
        "ATR not set"
    );
    let get = proto_nvmeof::fabrics::PropertyAccess {
        eight_bytes: true,
        offset: 0,
        value: 0,
    }
    .encode(0, false);
    let r = q.submit(get, nvme_initiator::Data::None).await.unwrap();
    assert_eq!(r.cqe.status.sc(), 0x91, "{:?}", r.cqe.status);
    assert_eq!(r.cqe.status.sct(), 1, "{:?}", r.cqe.status);
}
