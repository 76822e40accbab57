//! Snapshots and clones on the engine: what each snapshot reads, delete and rollback, clones
//! that diverge from their origin, read-only views, reopening, and the space they take.

use std::sync::Arc;

use blockstore::clone::create_clone;
use blockstore::engine::{create, CreateOptions, Engine, OpenOptions};
use blockstore::sim::SimStorage;
use blockstore::testkit::power_loss::quiet;
use blockstore::testkit::{identify, write_data};
use blockstore::{CloneOptions, DirStorage, Error, Role, Storage};

const BS: usize = 512;
const BLOCKS: u64 = 64;

fn volume(disk: &SimStorage) -> Arc<Engine> {
    create(
        disk,
        &CreateOptions {
            block_size: BS as u32,
            capacity_bytes: BLOCKS * BS as u64,
            wal_bytes: 16 * 1024,
            role: Role::Primary,
            epoch: 1,
        },
    )
    .unwrap();
    Engine::open(disk, quiet()).unwrap()
}

/// The write id each block of `data` holds.
fn ids(data: &[u8], lba: u64) -> Vec<u64> {
    data.chunks(BS)
        .enumerate()
        .map(|(i, b)| identify(b, lba + i as u64).unwrap())
        .collect()
}

fn snapshot_ids(e: &Engine, id: u64) -> Vec<u64> {
    let mut buf = vec![0u8; BLOCKS as usize * BS];
    e.read_snapshot(id, 0, &mut buf).unwrap();
    ids(&buf, 0)
}

fn live_ids(e: &Engine) -> Vec<u64> {
    ids(&e.read(0, BLOCKS).unwrap(), 0)
}

#[test]
fn each_snapshot_reads_the_volume_as_it_was_across_checkpoints_deletes_and_reopens() {
    let disk = SimStorage::new();
    let e = volume(&disk);
    e.write(0, &write_data(1, 0, 16, BS), false).unwrap();
    let s1 = e.create_snapshot("one").unwrap();
    let want1 = live_ids(&e);
    // Changes after the snapshot, some still only in the log when the next one is taken.
    e.write(4, &write_data(2, 4, 8, BS), false).unwrap();
    e.trim(0, 2).unwrap();
    let s2 = e.create_snapshot("two").unwrap();
    let want2 = live_ids(&e);
    e.write(6, &write_data(3, 6, 20, BS), false).unwrap();
    e.flush_once().unwrap();
    e.write(30, &write_data(4, 30, 4, BS), false).unwrap();
    let s3 = e.create_snapshot("three").unwrap();
    let want3 = live_ids(&e);
    e.write(0, &write_data(5, 0, 40, BS), false).unwrap();
    e.flush_once().unwrap();
    assert_eq!(snapshot_ids(&e, s1.id), want1);
    assert_eq!(snapshot_ids(&e, s2.id), want2);
    assert_eq!(snapshot_ids(&e, s3.id), want3);
    assert_ne!(live_ids(&e), want3);
    let names: Vec<_> = e.list_snapshots().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["one", "two", "three"]);
    // Positions follow the log; names are unique.
    assert!(s1.position < s2.position && s2.position < s3.position);
    assert!(matches!(e.create_snapshot("two"), Err(Error::Exists(_))));
    // Deleting the middle one keeps what the older one read through it.
    e.delete_snapshot(s2.id).unwrap();
    assert_eq!(snapshot_ids(&e, s1.id), want1);
    assert_eq!(snapshot_ids(&e, s3.id), want3);
    assert!(matches!(
        e.read_snapshot(s2.id, 0, &mut [0u8; BS]),
        Err(Error::NotFound(_))
    ));
    assert!(!disk.exists("snap-2.delta") && !disk.exists("snap-2.map"));
    // Everything survives a reopen.
    let live = live_ids(&e);
    e.close().unwrap();
    drop(e);
    let e = Engine::open(&disk, quiet()).unwrap();
    assert_eq!(snapshot_ids(&e, s1.id), want1);
    assert_eq!(snapshot_ids(&e, s3.id), want3);
    assert_eq!(live_ids(&e), live);
    // Ids are never reused.
    assert_eq!(e.create_snapshot("four").unwrap().id, 4);
}

#[test]
fn rollback_restores_the_snapshot_and_keeps_newer_snapshots() {
    let disk = SimStorage::new();
    let e = volume(&disk);
    e.write(0, &write_data(1, 0, 32, BS), false).unwrap();
    let s1 = e.create_snapshot("base").unwrap();
    let want1 = live_ids(&e);
    e.write(8, &write_data(2, 8, 30, BS), false).unwrap();
    e.trim(0, 4).unwrap();
    e.flush_once().unwrap();
    let s2 = e.create_snapshot("later").unwrap();
    let want2 = live_ids(&e);
    e.write(40, &write_data(3, 40, 10, BS), false).unwrap();
    e.rollback_snapshot(s1.id).unwrap();
    assert_eq!(live_ids(&e), want1);
    assert!(!e.rollback_pending());
    assert_eq!(snapshot_ids(&e, s2.id), want2);
    e.flush_once().unwrap();
    assert_eq!(live_ids(&e), want1);
    assert_eq!(snapshot_ids(&e, s2.id), want2);
    // And forward again.
    e.rollback_snapshot(s2.id).unwrap();
    assert_eq!(live_ids(&e), want2);
    assert_eq!(snapshot_ids(&e, s1.id), want1);
}

#[test]
fn a_rollback_to_a_snapshot_of_a_smaller_volume_zeroes_what_grew() {
    let disk = SimStorage::new();
    let e = volume(&disk);
    e.write(0, &write_data(1, 0, 8, BS), false).unwrap();
    let s = e.create_snapshot("small").unwrap();
    e.grow(BLOCKS + 16).unwrap();
    e.write(BLOCKS, &write_data(2, BLOCKS, 16, BS), false)
        .unwrap();
    e.rollback_snapshot(s.id).unwrap();
    let all = ids(&e.read(0, BLOCKS + 16).unwrap(), 0);
    assert!(all[..8].iter().all(|&i| i == 1));
    assert!(all[8..].iter().all(|&i| i == 0));
    assert_eq!(e.capacity_blocks(), BLOCKS + 16);
}

#[test]
fn clones_diverge_without_touching_the_origin_and_read_only_views_refuse_writes() {
    let odisk = SimStorage::new();
    let origin = volume(&odisk);
    origin.write(0, &write_data(1, 0, 40, BS), false).unwrap();
    let s = origin.create_snapshot("gold").unwrap();
    let snap = live_ids(&origin);
    let cdisk = SimStorage::new();
    create_clone(
        &cdisk,
        &origin.snapshot_view(s.id).unwrap(),
        &CloneOptions::writable(16 * 1024),
    )
    .unwrap();
    // Opening a clone needs its origin.
    assert!(matches!(
        Engine::open(&cdisk, quiet()),
        Err(Error::Invalid(_))
    ));
    let c = Engine::open_clone(
        Arc::new(cdisk.clone()),
        quiet(),
        origin.snapshot_view(s.id).unwrap(),
    )
    .unwrap();
    assert_eq!(live_ids(&c), snap);
    assert_ne!(c.uuid(), origin.uuid());
    // The clone's writes, trims, checkpoints and the origin's own writes stay apart.
    c.write(4, &write_data(10, 4, 8, BS), false).unwrap();
    c.trim(20, 4).unwrap();
    origin.write(30, &write_data(11, 30, 8, BS), false).unwrap();
    c.flush_once().unwrap();
    origin.flush_once().unwrap();
    let mut want_clone = snap.clone();
    want_clone[4..12].fill(10);
    want_clone[20..24].fill(0);
    assert_eq!(live_ids(&c), want_clone);
    assert_eq!(snapshot_ids(&origin, s.id), snap);
    let mut want_origin = snap.clone();
    want_origin[30..38].fill(11);
    assert_eq!(live_ids(&origin), want_origin);
    // Unwritten blocks of a clone report as mapped (they hold the origin's data).
    assert!(c.lba_status(0, 4).unwrap().0);
    // A snapshot with a clone is not deleted.
    assert!(matches!(origin.delete_snapshot(s.id), Err(Error::Busy(_))));
    // A snapshot of the clone, then more clone writes: the clone's snapshot keeps its state.
    let cs = c.create_snapshot("clone-snap").unwrap();
    c.write(0, &write_data(12, 0, 30, BS), false).unwrap();
    c.flush_once().unwrap();
    assert_eq!(snapshot_ids(&c, cs.id), want_clone);
    // Reopened, the clone reads the same.
    let now = live_ids(&c);
    c.close().unwrap();
    drop(c);
    let c = Engine::open_clone(
        Arc::new(cdisk.clone()),
        quiet(),
        origin.snapshot_view(s.id).unwrap(),
    )
    .unwrap();
    assert_eq!(live_ids(&c), now);
    c.close().unwrap();
    drop(c);
    // A read-only view of the snapshot: reads it, refuses every kind of write.
    let vdisk = SimStorage::new();
    create_clone(
        &vdisk,
        &origin.snapshot_view(s.id).unwrap(),
        &CloneOptions::read_only_view(),
    )
    .unwrap();
    let v = Engine::open_clone(
        Arc::new(vdisk.clone()),
        quiet(),
        origin.snapshot_view(s.id).unwrap(),
    )
    .unwrap();
    assert!(v.read_only());
    assert_eq!(live_ids(&v), snap);
    assert!(matches!(
        v.write(0, &write_data(13, 0, 1, BS), false),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(v.trim(0, 1), Err(Error::ReadOnly)));
    assert!(matches!(
        v.write_many(&[(0, &write_data(14, 0, 1, BS)[..], false)])[0],
        Err(Error::ReadOnly)
    ));
    drop(v);
    // With both clones gone the snapshot can be deleted.
    origin.clone_deleted(s.id).unwrap();
    assert!(matches!(origin.delete_snapshot(s.id), Err(Error::Busy(_))));
    origin.clone_deleted(s.id).unwrap();
    origin.delete_snapshot(s.id).unwrap();
    assert!(origin.list_snapshots().is_empty());
}

#[test]
fn a_standby_refuses_snapshot_operations_from_anyone_but_its_primary() {
    let disk = SimStorage::new();
    create(
        &disk,
        &CreateOptions {
            block_size: BS as u32,
            capacity_bytes: BLOCKS * BS as u64,
            wal_bytes: 16 * 1024,
            role: Role::Standby,
            epoch: 1,
        },
    )
    .unwrap();
    let e = Engine::open(&disk, quiet()).unwrap();
    assert!(matches!(e.create_snapshot("x"), Err(Error::NotServing(_))));
    assert!(matches!(e.rollback_snapshot(1), Err(Error::NotServing(_))));
    assert!(matches!(e.create_snapshot(""), Err(Error::Invalid(_))));
}

/// Apparent allocation (`st_blocks`) of every file in a directory, in bytes.
fn allocated(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|f| f.unwrap().metadata().unwrap().blocks() * 512)
        .sum()
}

#[test]
fn ten_snapshots_of_a_1_gib_volume_cost_the_changed_blocks_only() {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    // A tmpfs: allocation (st_blocks) as on any file system with sparse files and hole
    // punching, without waiting for a disk to write the 1 GiB of data.
    let fs = blockstore::tmpfs::Tmpfs::mount(1280 * MIB);
    let disk = DirStorage::new(fs.dir.join("vol"));
    create(
        &disk,
        &CreateOptions {
            block_size: 4096,
            capacity_bytes: GIB,
            wal_bytes: 8 * MIB,
            role: Role::Primary,
            epoch: 1,
        },
    )
    .unwrap();
    let e = Engine::open(&disk, quiet()).unwrap();
    // A full volume: 1 GiB of data.
    let chunk: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8 + 1).collect();
    for i in 0..GIB / MIB {
        e.write(i * MIB / 4096, &chunk, false).unwrap();
        if i % 4 == 3 {
            e.flush_once().unwrap();
        }
    }
    e.flush().unwrap();
    e.flush_once().unwrap();
    let before = allocated(&fs.dir.join("vol"));
    // Ten rounds: a snapshot, then 1 MiB of changes spread over the volume.
    let mut snaps = Vec::new();
    for round in 0..10u64 {
        snaps.push(e.create_snapshot(&format!("s{round}")).unwrap());
        for k in 0..16u64 {
            let lba = (round * 16 + k) * (GIB / 4096 / 160);
            let data = write_data(round + 100, lba, 16, 4096);
            e.write(lba, &data, false).unwrap();
        }
    }
    e.flush().unwrap();
    e.flush_once().unwrap();
    let after = allocated(&fs.dir.join("vol"));
    let extra = after - before;
    println!(
        "1 GiB volume: {} MiB allocated before, {} MiB after 10 snapshots of 1 MiB of changes \
         each: {:.2} MiB more",
        before / MIB,
        after / MIB,
        extra as f64 / MIB as f64
    );
    let preserved: u64 = e.list_snapshots().iter().map(|s| s.delta_blocks).sum();
    assert_eq!(preserved, 10 * 256, "each snapshot preserved its 1 MiB");
    assert!(
        (10 * MIB..12 * MIB).contains(&extra),
        "10 snapshots of 1 MiB of changes took {extra} bytes more"
    );
    // The first snapshot still reads the original data where round 0 changed it.
    let lba = 0;
    let mut buf = vec![0u8; 4096];
    e.read_snapshot(snaps[0].id, lba, &mut buf).unwrap();
    assert_eq!(&buf[..], &chunk[..4096]);
    e.close().unwrap();
}

#[test]
fn a_rollback_larger_than_the_log_cut_off_by_power_loss_is_completed_at_open() {
    use blockstore::sim::SimRng;
    let bg = OpenOptions::default();
    let mut completed = 0;
    for crash_at in [3u64, 8, 15, 30, 60] {
        let disk = SimStorage::new();
        let e = volume(&disk);
        e.write(0, &write_data(1, 0, BLOCKS, BS), false).unwrap();
        let s = e.create_snapshot("base").unwrap();
        let want = live_ids(&e);
        // More changed blocks than the 16 KiB log holds: the rollback waits for checkpoints.
        for i in 0..BLOCKS / 8 {
            e.write(i * 8, &write_data(2 + i, i * 8, 8, BS), false)
                .unwrap();
            e.flush_once().unwrap();
        }
        let before = live_ids(&e);
        e.close().unwrap();
        drop(e);
        let e = Engine::open(&disk, bg.clone()).unwrap();
        disk.arm_crash_after(crash_at);
        let done = e.rollback_snapshot(s.id).is_ok();
        drop(e);
        let after = disk.crash(&mut SimRng::new(crash_at));
        let e = Engine::open(&after, bg.clone()).unwrap();
        let got = live_ids(&e);
        assert!(!e.rollback_pending(), "crash point {crash_at}: mark left");
        assert!(
            got == want || (!done && got == before),
            "crash point {crash_at}: neither the old state nor the snapshot"
        );
        assert_eq!(snapshot_ids(&e, s.id), want);
        if !done && got == want {
            completed += 1;
        }
    }
    println!("{completed} interrupted rollbacks completed at open");
    assert!(completed > 0, "no crash point fell inside a rollback");
}

#[test]
fn a_snapshot_under_concurrent_writers_holds_every_write_acknowledged_before_and_none_begun_after()
{
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const WRITERS: u64 = 4;
    let disk = SimStorage::new();
    create(
        &disk,
        &CreateOptions {
            block_size: BS as u32,
            capacity_bytes: BLOCKS * BS as u64,
            wal_bytes: 64 * 1024,
            role: Role::Primary,
            epoch: 1,
        },
    )
    .unwrap();
    let e = Engine::open(&disk, OpenOptions::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Per writer (each owns one block): the last write begun and the last acknowledged.
    let begun: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (e, stop, begun, acked) = (e.clone(), stop.clone(), begun.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut seq = 0;
                while !stop.load(Ordering::SeqCst) {
                    seq += 1;
                    begun[w as usize].store(seq, Ordering::SeqCst);
                    e.write(w, &write_data(seq, w, 1, BS), seq % 7 == 0)
                        .unwrap();
                    acked[w as usize].store(seq, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let mut checked = 0;
    for round in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(3));
        let before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        let s = e.create_snapshot(&format!("r{round}")).unwrap();
        let after: Vec<u64> = begun.iter().map(|b| b.load(Ordering::SeqCst)).collect();
        let got = snapshot_ids(&e, s.id);
        for w in 0..WRITERS as usize {
            assert!(
                before[w] <= got[w] && got[w] <= after[w],
                "round {round} writer {w}: snapshot holds write {}, acknowledged before: {}, \
                 begun by the end: {}",
                got[w],
                before[w],
                after[w]
            );
            checked += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    assert!(acked.iter().all(|a| a.load(Ordering::SeqCst) > 20));
    println!("{checked} writer positions checked against 20 snapshots");
}
