//! Online grow of a replicated volume between two real `tandem serve` processes: `tandem
//! volume resize` on the primary while an NVMe/TCP writer runs, writes beyond the old end
//! acknowledged by a flush, then a switchover: the promoted standby serves the new size
//! (Identify Namespace) and every acknowledged write, those beyond the old end included.
//! A resize asked of the standby, and a shrink of a replicated volume, are refused.

mod repl_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use repl_common::{block, connect, identify, pair, read_span, writer, Node, BS};

/// The test volume's size (repl_common's configuration) and the size it grows to.
const OLD_BYTES: u64 = 16 << 20;
const NEW_BYTES: u64 = 24 << 20;

/// Waits until node `at` acknowledged `more` further flushes.
fn wait_flushes(node: &Node, more: u64) {
    let start = node.vol().engine.flushes;
    node.wait("taking flushes", Duration::from_secs(20), |v| {
        v.engine.flushes >= start + more
    });
}

/// Blocks beyond the old end the test writes (and the last block of the new size).
fn beyond() -> Vec<u64> {
    let old = OLD_BYTES / u64::from(BS);
    let new = NEW_BYTES / u64::from(BS);
    vec![old, old + 1, old + 7, old + 1000, new - 1]
}

#[test]
fn a_replicated_volume_grows_under_a_writer_and_the_promoted_standby_keeps_size_and_data() {
    let (a, b) = pair(3000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seed: u64 = rand::random();
    println!("writer seed {seed}");
    let stop = Arc::new(AtomicBool::new(false));
    let task = rt.spawn(writer([a.nvme, b.nvme], seed, stop.clone()));
    wait_flushes(&a, 20);

    // Refused, changing nothing: a resize on the standby, a shrink of a replicated volume.
    let out = b.cli(&["resize", "default", "24MiB"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("409") && err.contains("primary"),
        "{err}"
    );
    let out = a.cli(&["resize", "default", "8MiB", "--force"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("409") && err.contains("replicated"),
        "{err}"
    );
    assert_eq!(
        (a.vol().size_bytes, b.vol().size_bytes),
        (OLD_BYTES, OLD_BYTES)
    );

    // The grow, under the writer.
    let out = a.cli(&["resize", "default", "24MiB"]);
    assert!(
        out.status.success(),
        "{}\n--- A:\n{}\n--- B:\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.log(),
        b.log()
    );
    assert_eq!(a.vol().size_bytes, NEW_BYTES);
    // Published only once the in-sync standby held the record durably: it is grown already.
    assert_eq!(b.vol().size_bytes, NEW_BYTES, "{}", b.log());
    assert_eq!(a.sync_state().as_deref(), Some("in_sync"));

    // Writes beyond the old end, acknowledged by a flush, while the writer goes on.
    let new_blocks = NEW_BYTES / u64::from(BS);
    rt.block_on(async {
        let c = connect(a.nvme).await.unwrap();
        assert_eq!(c.identify_namespace(1).await.unwrap().nsze, new_blocks);
        for (i, &lba) in beyond().iter().enumerate() {
            let data = Bytes::from(block(1_000_000 + i as u64, lba));
            c.write(0, 1, lba, data, BS, false).await.unwrap();
        }
        c.flush(0, 1).await.unwrap();
    });
    wait_flushes(&a, 20);
    stop.store(true, Ordering::SeqCst);
    let m = rt.block_on(task).unwrap();
    assert!(
        m.fatal.is_empty(),
        "errors that reach a filesystem: {:?}",
        m.fatal
    );

    // The standby is promoted: it serves the new size and every acknowledged write.
    let out = a.switchover_to(&b);
    assert!(out.contains("epoch 3"), "{out}");
    assert_eq!(b.vol().size_bytes, NEW_BYTES);
    rt.block_on(async {
        let c = connect(b.nvme).await.unwrap();
        assert_eq!(
            c.identify_namespace(1).await.unwrap().nsze,
            new_blocks,
            "the promoted node's namespace size"
        );
        for (i, &lba) in beyond().iter().enumerate() {
            let got = c.read(0, 1, lba, 1, BS).await.unwrap();
            assert_eq!(
                identify(&got, lba),
                Ok(1_000_000 + i as u64),
                "block {lba} beyond the old end on the promoted node"
            );
        }
        // Never written: zeros.
        let got = c.read(0, 1, new_blocks - 2, 1, BS).await.unwrap();
        assert!(got.iter().all(|&x| x == 0));
    });
    let on_b = rt.block_on(read_span(b.nvme));
    for lba in m.history.keys() {
        m.check(*lba, &on_b[*lba as usize]);
    }
    println!(
        "grown under a writer: {} flushes acknowledged, {} retried errors",
        m.flushes,
        m.retried.len()
    );
}

#[test]
fn a_replaced_standby_smaller_than_its_primary_grows_first_then_takes_a_full_resync() {
    let (a, mut b) = pair(1000);
    let out = a.cli(&["resize", "default", "24MiB"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The standby's disk is replaced: it comes back at the configured (old) size.
    b.wipe_data();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = connect(a.nvme).await.unwrap();
        for (i, &lba) in beyond().iter().enumerate() {
            let data = Bytes::from(block(2_000_000 + i as u64, lba));
            c.write(0, 1, lba, data, BS, false).await.unwrap();
        }
        // Goes on without the absent standby once the replication timeout ran out.
        c.flush(0, 1).await.unwrap();
        // More than the log holds for an absent standby (half of its 4 MiB): the new
        // standby cannot catch up from the log, it gets a full resync.
        let chunk = 128u32;
        let data = Bytes::from(vec![0x5a; chunk as usize * BS as usize]);
        for i in 0..48u64 {
            c.write(0, 1, 1024 + i * u64::from(chunk), data.clone(), BS, false)
                .await
                .unwrap();
        }
        c.flush(0, 1).await.unwrap();
    });
    // Let the flusher checkpoint past what the absent standby would need.
    std::thread::sleep(Duration::from_millis(1500));
    b.restart();
    a.wait("the new standby in sync", Duration::from_secs(60), |v| {
        v.replication
            .as_ref()
            .is_some_and(|r| r.sync_state.is_some_and(|s| s.as_str() == "in_sync"))
    });
    assert_eq!(b.vol().size_bytes, NEW_BYTES, "{}", b.log());
    assert!(
        b.log().contains("the primary's volume is larger"),
        "{}",
        b.log()
    );
    assert!(
        b.log().contains("full resync complete"),
        "the replaced standby was not rebuilt by a full resync:\n{}",
        b.log()
    );
    a.switchover_to(&b);
    rt.block_on(async {
        let c = connect(b.nvme).await.unwrap();
        assert_eq!(
            c.identify_namespace(1).await.unwrap().nsze,
            NEW_BYTES / u64::from(BS)
        );
        for (i, &lba) in beyond().iter().enumerate() {
            let got = c.read(0, 1, lba, 1, BS).await.unwrap();
            assert_eq!(identify(&got, lba), Ok(2_000_000 + i as u64), "block {lba}");
        }
    });
}
