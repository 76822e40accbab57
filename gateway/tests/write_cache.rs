//! The NVMe volatile write cache end to end: once the host turns it off with Set Features, a
//! plain write (no FUA, no Flush) is durable in the volume's log when its completion arrives,
//! and survives the node's restart.

mod nvme_common;

use bytes::Bytes;
use gateway::nvme::config::DEFAULT_NQN;
use nvme_common::Node;
use nvme_initiator::{Controller, Data, HostOptions};
use proto_nvmeof::Sqe;

const SET_FEATURES: u8 = 0x09;
const VWC: u32 = 0x06;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_write_cache_off_a_plain_write_is_durable_when_it_completes() {
    let node = Node::start(1, |_| {}).await;
    let host = Controller::connect(node.io[0], DEFAULT_NQN, &HostOptions::default())
        .await
        .unwrap();
    let mut sqe = Sqe::new(SET_FEATURES, 0);
    sqe.set_cdw(10, VWC);
    sqe.set_cdw(11, 0);
    host.admin
        .submit(sqe, Data::None)
        .await
        .unwrap()
        .ok()
        .unwrap();
    let engine = node.vols["default"].volume.engine().clone();
    for i in 0..32u64 {
        let data = Bytes::from(vec![i as u8 + 1; 512]);
        host.write(0, 1, i * 8, data, 512, false).await.unwrap();
        assert!(
            engine.all_durable(),
            "write {i} completed before it was durable although the host turned the cache off"
        );
    }
    let _ = host.shutdown().await;
    let dir = node.stop_keeping_data().await;
    let node = Node::start_in(dir, 1, |_| {}).await;
    let v = &node.vols["default"].volume;
    for i in 0..32u64 {
        assert_eq!(v.read(i * 8, 1).await.unwrap(), vec![i as u8 + 1; 512]);
    }
    node.stop().await;
}
