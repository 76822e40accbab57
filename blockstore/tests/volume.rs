//! The async volume: a burst of writes from one task is appended as a batch on the caller's
//! thread, a FUA write among them is durable, and order per block is kept.

use std::sync::Arc;

use blockstore::engine::{create, CreateOptions};
use blockstore::sim::{SimRng, SimStorage};
use blockstore::testkit::power_loss::quiet;
use blockstore::testkit::{identify, write_data};
use blockstore::Volume;

fn sim_volume() -> Arc<SimStorage> {
    let disk = SimStorage::new();
    create(
        &disk,
        &CreateOptions {
            block_size: 512,
            capacity_bytes: 4096 * 512,
            wal_bytes: 4 << 20,
            ..CreateOptions::default()
        },
    )
    .unwrap();
    Arc::new(disk)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_burst_of_writes_costs_a_few_log_writes_and_keeps_order() {
    let disk = sim_volume();
    let v = Volume::open_storage(disk.clone(), quiet()).await.unwrap();
    let before = disk.ops_done();
    // 64 writes issued together (as a connection does with a host's queue), every block written
    // twice: the second write of a block must win.
    let writes = (0..128u64).map(|i| {
        let lba = (i % 64) * 7;
        let v = v.clone();
        async move { v.write(lba, write_data(i + 1, lba, 1, 512), false).await }
    });
    for r in futures_util::future::join_all(writes).await {
        r.unwrap();
    }
    let ops = disk.ops_done() - before;
    assert!(ops <= 4, "{ops} log writes for 128 host writes");
    for k in 0..64u64 {
        let lba = k * 7;
        let got = identify(&v.read(lba, 1).await.unwrap(), lba);
        assert_eq!(got, Ok(k + 64 + 1), "block {lba}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_fua_write_in_a_burst_is_durable_when_acknowledged() {
    let disk = sim_volume();
    let v = Volume::open_storage(disk.clone(), quiet()).await.unwrap();
    let writes = (0..32u64).map(|i| {
        let v = v.clone();
        async move { v.write(i, write_data(i + 1, i, 1, 512), i == 31).await }
    });
    for r in futures_util::future::join_all(writes).await {
        r.unwrap();
    }
    let crashed = disk.crash(&mut SimRng::new(11));
    drop(v);
    let v = Volume::open_storage(Arc::new(crashed), quiet())
        .await
        .unwrap();
    let got = identify(&v.read(31, 1).await.unwrap(), 31);
    assert_eq!(got, Ok(32));
}
