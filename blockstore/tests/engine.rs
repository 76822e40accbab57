//! Behaviour of the engine on its own: log damage, group commit, a full log, roles and fencing,
//! thin provisioning, resize and typed errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blockstore::engine::{create, CreateOptions, Engine, OpenOptions};
use blockstore::sim::{SimRng, SimStorage};
use blockstore::storage::Storage;
use blockstore::testkit::power_loss::quiet;
use blockstore::testkit::{identify, torn_tail, write_data};
use blockstore::testkit::{record_len, Header};
use blockstore::{AccessState, DirStorage, Error, Role};

fn sim_volume(bs: u32, blocks: u64, wal: u64) -> SimStorage {
    let disk = SimStorage::new();
    create(
        &disk,
        &CreateOptions {
            block_size: bs,
            capacity_bytes: blocks * u64::from(bs),
            wal_bytes: wal,
            ..CreateOptions::default()
        },
    )
    .unwrap();
    disk
}

/// Offsets and LSNs of the valid records of the newest generation in the log.
fn records(disk: &SimStorage, wal_size: u64) -> Vec<(u64, Header)> {
    let wal = disk.open("wal").unwrap();
    let mut log = vec![0u8; wal_size as usize];
    wal.read_at(&mut log, 0).unwrap();
    let mut out = Vec::new();
    let mut off = 0;
    while off + 64 <= log.len() {
        if let Some((h, _)) = Header::parse(&log[off..off + 64], 1 << 20) {
            out.push((off as u64, h));
        }
        off += 512;
    }
    let gen = out.iter().map(|(_, h)| h.generation).max().unwrap_or(0);
    out.retain(|(_, h)| h.generation == gen);
    out.sort_by_key(|(_, h)| h.lsn);
    out
}

#[test]
fn damage_to_a_durable_record_in_the_middle_refuses_to_open_and_says_where() {
    let disk = sim_volume(512, 64, 64 * 1024);
    let e = Engine::open(&disk, quiet()).unwrap();
    for id in 1..=3u64 {
        e.write(id * 4, &write_data(id, id * 4, 2, 512), true)
            .unwrap();
    }
    let disk = disk.crash(&mut SimRng::new(1));
    drop(e);
    let recs = records(&disk, 64 * 1024);
    assert_eq!(recs.len(), 3);
    let (off, h) = recs[1];
    disk.corrupt_byte("wal", off + 64 + 100);
    match Engine::open(&disk, quiet()) {
        Err(Error::CorruptLog { lsn, offset, .. }) => {
            assert_eq!(lsn, h.lsn);
            assert_eq!(offset, off);
        }
        other => panic!("expected CorruptLog, got {other:?}"),
    }
}

#[test]
fn a_torn_tail_is_discarded_and_the_volume_opens() {
    let disk = sim_volume(512, 64, 64 * 1024);
    let e = Engine::open(&disk, quiet()).unwrap();
    e.write(0, &write_data(1, 0, 4, 512), true).unwrap();
    e.write(0, &write_data(2, 0, 4, 512), false).unwrap();
    // Power is lost with the second write synced as a whole, then its last sector damaged.
    e.flush().unwrap();
    let disk = disk.crash(&mut SimRng::new(2));
    drop(e);
    let recs = records(&disk, 64 * 1024);
    let (off, h) = *recs.last().unwrap();
    assert_eq!(h.data_len, 4 * 512);
    assert!(record_len(h.data_len as usize) > 64 + 2000);
    assert_eq!(torn_tail(&disk).unwrap(), None, "a clean end of the log");
    disk.corrupt_byte("wal", off + 64 + 2000);
    let tail = torn_tail(&disk)
        .unwrap()
        .expect("the damaged tail is reported");
    assert!(tail.contains("checksum mismatch"), "{tail}");
    let e = Engine::open(&disk, quiet()).unwrap();
    let data = e.read(0, 4).unwrap();
    for b in 0..4u64 {
        assert_eq!(identify(&data[b as usize * 512..][..512], b), Ok(1));
    }
}

#[test]
fn concurrent_flushes_share_fdatasyncs() {
    let dir = tempfile::tempdir().unwrap();
    let storage = DirStorage::new(dir.path());
    create(
        &storage,
        &CreateOptions {
            block_size: 4096,
            capacity_bytes: 64 << 20,
            wal_bytes: 16 << 20,
            ..CreateOptions::default()
        },
    )
    .unwrap();
    let e = Engine::open(&storage, OpenOptions::default()).unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in 0..40u64 {
                    let lba = t * 1000 + i;
                    e.write(lba, &write_data(t * 100 + i, lba, 1, 4096), false)
                        .unwrap();
                    e.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = e.stats();
    assert_eq!(s.flushes, 320);
    assert!(
        s.log_syncs < s.flushes,
        "group commit did not share: {} syncs for {} flushes",
        s.log_syncs,
        s.flushes
    );
    for t in 0..8u64 {
        let d = e.read(t * 1000, 40).unwrap();
        for i in 0..40u64 {
            assert_eq!(
                identify(&d[i as usize * 4096..][..4096], t * 1000 + i),
                Ok(t * 100 + i)
            );
        }
    }
}

#[test]
fn a_full_log_makes_writers_wait_not_fail() {
    let dir = tempfile::tempdir().unwrap();
    let storage = DirStorage::new(dir.path());
    create(
        &storage,
        &CreateOptions {
            block_size: 4096,
            capacity_bytes: 16 << 20,
            wal_bytes: 128 * 1024,
            ..CreateOptions::default()
        },
    )
    .unwrap();
    let e = Engine::open(&storage, OpenOptions::default()).unwrap();
    for i in 0..1000u64 {
        let lba = (i * 37) % 4096;
        e.write(lba, &write_data(i + 1, lba, 1, 4096), false)
            .unwrap();
    }
    let s = e.stats();
    assert!(s.log_full_waits > 0, "the log never filled: {s:?}");
    assert!(s.flusher_runs > 0);
    let mut want = vec![0u64; 4096];
    for i in 0..1000u64 {
        want[((i * 37) % 4096) as usize] = i + 1;
    }
    let d = e.read(0, 4096).unwrap();
    for (b, w) in want.iter().enumerate() {
        assert_eq!(identify(&d[b * 4096..][..4096], b as u64), Ok(*w));
    }
}

#[test]
fn roles_gate_io_and_epochs_are_persisted_before_they_take_effect() {
    let disk = sim_volume(512, 64, 64 * 1024);
    let e = Engine::open(&disk, quiet()).unwrap();
    assert_eq!(e.access_state(), AccessState::Optimized);
    let mut rx = e.watch_access();
    e.set_role(Role::Standby, 2).unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), AccessState::Standby);
    assert!(matches!(
        e.write(0, &[0; 512], false),
        Err(Error::NotServing(AccessState::Standby))
    ));
    assert!(matches!(
        e.read(0, 1),
        Err(Error::NotServing(AccessState::Standby))
    ));
    assert!(matches!(
        e.set_role(Role::Primary, 1),
        Err(Error::StaleEpoch {
            current: 2,
            presented: 1
        })
    ));
    assert!(matches!(e.check_epoch(1), Err(Error::StaleEpoch { .. })));
    e.check_epoch(2).unwrap();
    e.set_role(Role::Stale, 3).unwrap();
    assert_eq!(e.access_state(), AccessState::Unavailable);
    // Persisted: a crash right after set_role returns keeps role and epoch.
    let disk = disk.crash(&mut SimRng::new(3));
    drop(e);
    let e = Engine::open(&disk, quiet()).unwrap();
    let st = e.role_state();
    assert_eq!((st.role, st.epoch), (Role::Stale, 3));
    e.set_role(Role::Primary, 4).unwrap();
    e.write(0, &write_data(9, 0, 1, 512), false).unwrap();
}

#[test]
fn promote_and_demote_raise_the_epoch_and_a_newer_epoch_fences_a_primary_at_once() {
    let disk = sim_volume(512, 64, 64 * 1024);
    let e = Engine::open(&disk, quiet()).unwrap();
    let epoch0 = e.role_state().epoch;
    e.demote().unwrap();
    assert_eq!(
        (e.role_state().role, e.role_state().epoch),
        (Role::Standby, epoch0 + 1)
    );
    e.promote().unwrap();
    e.promote().unwrap();
    assert_eq!(
        (e.role_state().role, e.role_state().epoch),
        (Role::Primary, epoch0 + 3),
        "epochs grow with every change"
    );
    e.write(0, &write_data(1, 0, 1, 512), true).unwrap();
    // Meeting the same or an older epoch changes nothing.
    e.observe_epoch(epoch0 + 3).unwrap();
    assert_eq!(e.access_state(), AccessState::Optimized);
    // A newer epoch (another node was promoted): this primary serves nothing from now on.
    let mut rx = e.watch_access();
    e.observe_epoch(epoch0 + 7).unwrap();
    assert_eq!(*rx.borrow_and_update(), AccessState::Unavailable);
    assert!(matches!(
        e.write(0, &[0; 512], false),
        Err(Error::NotServing(AccessState::Unavailable))
    ));
    // And it stays fenced across a crash: it persisted that it is stale under the new epoch.
    let disk = disk.crash(&mut SimRng::new(5));
    drop(e);
    let e = Engine::open(&disk, quiet()).unwrap();
    let st = e.role_state();
    assert_eq!((st.role, st.epoch), (Role::Stale, epoch0 + 7));
    assert_eq!(e.access_state(), AccessState::Unavailable);
}

#[test]
fn an_expired_lease_turns_a_primary_transitioning_and_watchers_hear_it() {
    let dir = tempfile::tempdir().unwrap();
    let storage = DirStorage::new(dir.path());
    create(
        &storage,
        &CreateOptions {
            capacity_bytes: 1 << 20,
            wal_bytes: 256 * 1024,
            ..CreateOptions::default()
        },
    )
    .unwrap();
    let e = Engine::open(&storage, OpenOptions::default()).unwrap();
    e.set_lease(Some(Instant::now() + Duration::from_millis(150)));
    let mut rx = e.watch_access();
    rx.borrow_and_update();
    e.write(0, &[1; 512], false).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rx.has_changed().unwrap() {
        assert!(
            Instant::now() < deadline,
            "no access-state notification after lease expiry"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(*rx.borrow(), AccessState::Transitioning);
    assert!(matches!(
        e.write(0, &[1; 512], false),
        Err(Error::NotServing(AccessState::Transitioning))
    ));
    e.set_lease(Some(Instant::now() + Duration::from_secs(60)));
    assert_eq!(e.access_state(), AccessState::Optimized);
    e.write(0, &[1; 512], false).unwrap();
}

fn allocated_bytes(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn trim_and_write_zeroes_punch_holes_in_the_extent() {
    let dir = tempfile::tempdir().unwrap();
    let storage = DirStorage::new(dir.path());
    create(
        &storage,
        &CreateOptions {
            block_size: 4096,
            capacity_bytes: 8 << 20,
            wal_bytes: 4 << 20,
            ..CreateOptions::default()
        },
    )
    .unwrap();
    let e = Engine::open(&storage, quiet()).unwrap();
    let extent = dir.path().join("extent");
    assert!(
        allocated_bytes(&extent) < 64 * 1024,
        "a new extent is sparse"
    );
    e.write(0, &write_data(1, 0, 512, 4096), false).unwrap();
    e.flush_once().unwrap();
    assert!(allocated_bytes(&extent) >= 2 << 20);
    e.trim(0, 256).unwrap();
    e.write_zeroes(256, 256, false).unwrap();
    // Reads see zeros before the flusher runs...
    assert!(e.read(0, 512).unwrap().iter().all(|&b| b == 0));
    e.flush_once().unwrap();
    // ...and after it, with the space given back.
    assert!(e.read(0, 512).unwrap().iter().all(|&b| b == 0));
    assert!(
        allocated_bytes(&extent) < 64 * 1024,
        "extent still holds {} bytes",
        allocated_bytes(&extent)
    );
    assert_eq!(e.stats().trimmed_blocks, 512);
}

#[test]
fn grow_is_online_and_durable() {
    let disk = sim_volume(4096, 16, 256 * 1024);
    let e = Engine::open(&disk, quiet()).unwrap();
    assert!(matches!(
        e.write(16, &[0; 4096], false),
        Err(Error::OutOfRange {
            lba: 16,
            blocks: 1,
            capacity: 16
        })
    ));
    e.grow(32).unwrap();
    e.write(31, &write_data(5, 31, 1, 4096), true).unwrap();
    assert!(matches!(e.grow(8), Err(Error::Invalid(_))));
    let disk = disk.crash(&mut SimRng::new(4));
    drop(e);
    let e = Engine::open(&disk, quiet()).unwrap();
    assert_eq!(e.capacity_blocks(), 32);
    assert_eq!(identify(&e.read(31, 1).unwrap(), 31), Ok(5));
}

#[test]
fn typed_errors_for_bad_requests() {
    let disk = sim_volume(512, 64, 64 * 1024);
    assert!(matches!(
        create(&disk, &CreateOptions::default()),
        Err(Error::Exists(_))
    ));
    assert!(matches!(
        Engine::open(&SimStorage::new(), quiet()),
        Err(Error::Exists(_))
    ));
    for (bs, cap, wal) in [
        (1024u32, 1 << 20, 1 << 20),
        (512, 1000, 1 << 20),
        (512, 0, 1 << 20),
        (4096, 1 << 20, 4096),
    ] {
        let r = create(
            &SimStorage::new(),
            &CreateOptions {
                block_size: bs,
                capacity_bytes: cap,
                wal_bytes: wal,
                ..CreateOptions::default()
            },
        );
        assert!(
            matches!(r, Err(Error::InvalidGeometry(_)) | Err(Error::TooSmall(_))),
            "{bs} {cap} {wal}: {r:?}"
        );
    }
    let e = Engine::open(&disk, quiet()).unwrap();
    assert!(matches!(
        e.write(0, &[0; 100], false),
        Err(Error::Misaligned {
            len: 100,
            block_size: 512
        })
    ));
    assert!(matches!(e.read(60, 10), Err(Error::OutOfRange { .. })));
    assert!(matches!(e.read(u64::MAX, 2), Err(Error::OutOfRange { .. })));
    assert!(matches!(e.trim(63, 2), Err(Error::OutOfRange { .. })));
    e.write(0, &write_data(1, 0, 2, 512), false).unwrap();
    match e.compare_and_write(
        0,
        &write_data(2, 0, 2, 512),
        &write_data(3, 0, 2, 512),
        false,
    ) {
        Err(Error::Miscompare { offset }) => assert_eq!(offset, 0),
        other => panic!("{other:?}"),
    }
    e.compare_and_write(
        0,
        &write_data(1, 0, 2, 512),
        &write_data(3, 0, 2, 512),
        false,
    )
    .unwrap();
    assert_eq!(identify(&e.read(1, 1).unwrap(), 1), Ok(3));
    e.close().unwrap();
    assert!(matches!(e.read(0, 1), Err(Error::Closed)));
    // Both superblock slots damaged: a typed error naming the file.
    disk.corrupt_byte("superblock", 30);
    disk.corrupt_byte("superblock", 4096 + 30);
    assert!(matches!(
        Engine::open(&disk, quiet()),
        Err(Error::CorruptSuperblock { .. })
    ));
}

#[test]
fn an_io_error_fails_the_volume_until_it_is_reopened() {
    let disk = sim_volume(512, 64, 64 * 1024);
    let e = Engine::open(&disk, quiet()).unwrap();
    disk.arm_crash_after(1);
    e.write(0, &write_data(1, 0, 1, 512), false).unwrap();
    assert!(e.flush().is_err());
    assert!(matches!(e.write(0, &[0; 512], false), Err(Error::Failed)));
    assert!(matches!(e.flush(), Err(Error::Failed)));
    let disk: Arc<dyn Storage> = Arc::new(disk.crash(&mut SimRng::new(5)));
    drop(e);
    Engine::open_shared(disk, quiet()).unwrap();
}

#[test]
fn lba_status_reports_mapped_and_deallocated_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let storage = DirStorage::new(dir.path());
    create(
        &storage,
        &CreateOptions {
            block_size: 4096,
            capacity_bytes: 8 << 20,
            wal_bytes: 8 << 20,
            ..CreateOptions::default()
        },
    )
    .unwrap();
    let e = Engine::open(&storage, quiet()).unwrap();
    assert_eq!(e.lba_status(0, 2048).unwrap(), (false, 2048));
    e.write(256, &write_data(1, 256, 256, 4096), false).unwrap();
    // Still in the log.
    assert_eq!(e.lba_status(256, 1000).unwrap(), (true, 256));
    e.flush_once().unwrap();
    // Now in the extent: the file system's allocation answers.
    assert_eq!(e.lba_status(0, 2048).unwrap(), (false, 256));
    assert_eq!(e.lba_status(256, 2048).unwrap(), (true, 256));
    assert_eq!(e.lba_status(512, 2048).unwrap(), (false, 1536));
    e.trim(256, 128).unwrap();
    assert_eq!(e.lba_status(256, 2048).unwrap(), (false, 128));
    e.save_metadata("meta-reservations", b"abc").unwrap();
    assert_eq!(
        e.load_metadata("meta-reservations").unwrap().as_deref(),
        Some(&b"abc"[..])
    );
    assert_eq!(e.load_metadata("meta-none").unwrap(), None);
    assert!(e.save_metadata("wal", b"x").is_err());
}

#[test]
fn batched_writes_merge_consecutive_blocks_keep_order_and_survive_a_crash() {
    let disk = sim_volume(512, 64, 64 * 1024);
    let e = Engine::open(&disk, quiet()).unwrap();
    let d: Vec<(u64, Vec<u8>)> = vec![
        (0, write_data(1, 0, 1, 512)),
        (1, write_data(2, 1, 1, 512)),
        (2, write_data(3, 2, 2, 512)),
        // Overwrites block 1 after it was merged into the first record.
        (1, write_data(4, 1, 1, 512)),
        (10, write_data(5, 10, 3, 512)),
        (13, write_data(6, 13, 1, 512)),
    ];
    let reqs: Vec<(u64, &[u8], bool)> = d
        .iter()
        .enumerate()
        .map(|(i, (lba, data))| (*lba, data.as_slice(), i == d.len() - 1))
        .collect();
    let results = e.write_many(&reqs);
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let want = [
        (0, 1),
        (1, 4),
        (2, 3),
        (3, 3),
        (10, 5),
        (11, 5),
        (12, 5),
        (13, 6),
    ];
    let check = |e: &Engine| {
        for (b, id) in want {
            assert_eq!(identify(&e.read(b, 1).unwrap(), b), Ok(id), "block {b}");
        }
    };
    check(&e);
    // Merged records: fewer log records than writes (the three consecutive writes at 0..4 are
    // one, the two at 10..14 another).
    let recs = records(&disk, 64 * 1024);
    assert!(
        recs.len() < d.len(),
        "{} records for {} writes",
        recs.len(),
        d.len()
    );
    // The FUA on the last request made the whole batch durable.
    let disk = disk.crash(&mut SimRng::new(6));
    drop(e);
    let e = Engine::open(&disk, quiet()).unwrap();
    check(&e);
}

#[test]
fn a_nowait_batch_is_appended_whole_or_declined_untouched() {
    let wal = 64 * 1024;
    let disk = sim_volume(512, 256, wal);
    let e = Engine::open(&disk, quiet()).unwrap();
    let d: Vec<(u64, Vec<u8>)> = (0..4u64)
        .map(|i| (i * 16, write_data(i + 1, i * 16, 8, 512)))
        .collect();
    let reqs = |fua_at: Option<usize>| -> Vec<(u64, &[u8], bool)> {
        d.iter()
            .enumerate()
            .map(|(i, (lba, data))| (*lba, data.as_slice(), Some(i) == fua_at))
            .collect()
    };
    // A FUA write needs a log sync, which waits for the disk: declined, nothing written.
    assert!(e.try_write_many_nowait(&reqs(Some(2))).is_none());
    assert!(records(&disk, wal).is_empty());
    // More than the log can take contiguously: declined, nothing written.
    let big: Vec<(u64, Vec<u8>)> = (0..20u64)
        .map(|i| (i * 8, write_data(9, i * 8, 8, 512)))
        .collect();
    let big_reqs: Vec<(u64, &[u8], bool)> =
        big.iter().map(|(l, b)| (*l, b.as_slice(), false)).collect();
    assert!(e.try_write_many_nowait(&big_reqs).is_none());
    assert!(records(&disk, wal).is_empty());
    // A batch that fits is appended, and a bad request in it gets its own error.
    let mut ok = reqs(None);
    let outside = write_data(7, 1000, 1, 512);
    ok.push((1000, outside.as_slice(), false));
    let results = e
        .try_write_many_nowait(&ok)
        .expect("a batch that fits is appended");
    assert!(results[..4].iter().all(|r| r.is_ok()), "{results:?}");
    assert!(
        matches!(results[4], Err(Error::OutOfRange { .. })),
        "{:?}",
        results[4]
    );
    assert_eq!(records(&disk, wal).len(), 4);
    for (i, (lba, _)) in d.iter().enumerate() {
        assert_eq!(identify(&e.read(*lba, 1).unwrap(), *lba), Ok(i as u64 + 1));
    }
    // Not durable until a flush; after one, it survives power loss.
    e.flush().unwrap();
    let disk = disk.crash(&mut SimRng::new(3));
    drop(e);
    let e = Engine::open(&disk, quiet()).unwrap();
    for (i, (lba, _)) in d.iter().enumerate() {
        assert_eq!(identify(&e.read(*lba, 1).unwrap(), *lba), Ok(i as u64 + 1));
    }
}
