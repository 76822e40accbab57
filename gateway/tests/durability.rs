//! What the one block executor acknowledges as durable survives a power loss: FUA writes,
//! COMPARE AND WRITE with FUA, and Write Zeroes / WRITE SAME that deallocate with FUA. The
//! volumes live on the simulated disk, which drops, applies or tears every write not yet
//! synced when the power goes; each case runs over many crash outcomes.

use std::sync::Arc;

use block_core::{BlockOp, BlockResult};
use blockstore::engine::{create, CreateOptions, OpenOptions};
use blockstore::sim::{SimRng, SimStorage};
use blockstore::Volume;
use bytes::Bytes;
use gateway::metrics::{Metrics, Protocol};
use gateway::target::VolumeTarget;
use gateway::volumes::ServedVolume;

const BS: usize = 512;

async fn target_on(disk: &SimStorage) -> Arc<VolumeTarget> {
    let volume = Volume::open_storage(
        Arc::new(disk.clone()),
        OpenOptions {
            // Nothing reaches the disk behind the test's back: only what the executor syncs.
            background_flusher: false,
            ..OpenOptions::default()
        },
    )
    .await
    .unwrap();
    let served = Arc::new(ServedVolume {
        name: "v".into(),
        volume,
    });
    VolumeTarget::open(served, &Metrics::new()).await.unwrap()
}

async fn read(t: &VolumeTarget, lba: u64, blocks: u32) -> Vec<u8> {
    match t
        .execute(Protocol::Nvme, BlockOp::Read { lba, blocks })
        .await
    {
        BlockResult::Data(d) => d.to_vec(),
        other => panic!("read failed: {other:?}"),
    }
}

/// Runs `op` after a durable write of a pattern over LBAs 0..4, cuts the power at once, and
/// returns what LBAs 0..4 hold after recovery, for `seeds` crash outcomes.
async fn after_power_loss(op: impl Fn() -> BlockOp, seeds: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for seed in 0..seeds {
        let disk = SimStorage::new();
        create(
            &disk,
            &CreateOptions {
                capacity_bytes: 64 * BS as u64,
                wal_bytes: 64 << 10,
                ..CreateOptions::default()
            },
        )
        .unwrap();
        let t = target_on(&disk).await;
        let old = Bytes::from(vec![0xA5u8; 4 * BS]);
        let w = BlockOp::Write {
            lba: 0,
            data: old,
            fua: true,
        };
        assert_eq!(t.execute(Protocol::Nvme, w).await, BlockResult::Ok);
        assert_eq!(t.execute(Protocol::Nvme, op()).await, BlockResult::Ok);
        let after = disk.crash(&mut SimRng::new(seed));
        drop(t);
        let t = target_on(&after).await;
        out.push(read(&t, 0, 4).await);
    }
    out
}

#[tokio::test]
async fn write_zeroes_that_deallocate_with_fua_survive_power_loss() {
    let op = || BlockOp::WriteZeroes {
        lba: 0,
        blocks: 4,
        deallocate: true,
        fua: true,
    };
    for (seed, got) in after_power_loss(op, 24).await.into_iter().enumerate() {
        assert!(
            got.iter().all(|&b| b == 0),
            "crash outcome {seed}: acknowledged zeroes were lost"
        );
    }
}

#[tokio::test]
async fn compare_and_write_with_fua_survives_power_loss() {
    let op = || BlockOp::CompareAndWrite {
        lba: 0,
        blocks: 4,
        compare: Bytes::from(vec![0xA5u8; 4 * BS]),
        write: Bytes::from(vec![0x3Cu8; 4 * BS]),
        fua: true,
    };
    for (seed, got) in after_power_loss(op, 24).await.into_iter().enumerate() {
        assert!(
            got.iter().all(|&b| b == 0x3C),
            "crash outcome {seed}: the acknowledged COMPARE AND WRITE was lost"
        );
    }
}

#[tokio::test]
async fn a_write_with_fua_survives_power_loss_and_one_without_may_not() {
    let write = |fua| {
        move || BlockOp::Write {
            lba: 0,
            data: Bytes::from(vec![0x77u8; 4 * BS]),
            fua,
        }
    };
    for (seed, got) in after_power_loss(write(true), 24)
        .await
        .into_iter()
        .enumerate()
    {
        assert!(
            got.iter().all(|&b| b == 0x77),
            "crash outcome {seed}: an acknowledged FUA write was lost"
        );
    }
    // The simulation can tell: without FUA (a write the cache may still hold) some crash
    // outcome loses it, so the cases above could fail.
    let outcomes = after_power_loss(write(false), 24).await;
    assert!(
        outcomes.iter().any(|got| got.iter().any(|&b| b != 0x77)),
        "no crash outcome lost an unsynced write: the simulation proves nothing"
    );
}
