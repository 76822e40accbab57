//! Online grow on a replicated volume: the primary's grow record is shipped in order with the
//! writes and applied by the standby at the same log position, so the writes beyond the old
//! end that follow it apply cleanly; a re-shipped record changes nothing; a primary or a
//! standby that loses power at any I/O operation of a grow recovers a volume that is never
//! smaller than what was acknowledged, with every acknowledged write.

use blockstore::engine::Engine;
use blockstore::replica::{LogPos, ShippedKind, ShippedRecord};
use blockstore::sim::{SimRng, SimStorage};
use blockstore::testkit::power_loss::{at_every_io_operation_of_an_apply, quiet, sim_volume};
use blockstore::testkit::write_data;
use blockstore::Role;

const BS: usize = 512;
const BLOCKS: u64 = 128;
const GROWN: u64 = 320;

fn volume(role: Role) -> SimStorage {
    sim_volume(BS, BLOCKS, 512 * 1024, role)
}

/// Ships everything from `pos` in small batches, returning the new position.
fn ship(p: &Engine, s: &Engine, mut pos: LogPos) -> LogPos {
    loop {
        let (recs, next) = p.read_log(pos, 2048).unwrap();
        if recs.is_empty() {
            return next;
        }
        s.apply_replicated(&recs).unwrap();
        pos = next;
    }
}

/// Writes below the old end, then the grow, then writes reaching the new end.
fn workload(p: &Engine) {
    for i in 0..6 {
        let lba = (i * 19) % (BLOCKS - 4);
        p.write(lba, &write_data(i, lba, 4, BS), false).unwrap();
    }
    p.grow(GROWN).unwrap();
    for i in 0..6 {
        let lba = BLOCKS - 2 + i * 31;
        p.write(lba, &write_data(100 + i, lba, 5, BS), false)
            .unwrap();
    }
    p.trim(GROWN - 3, 3).unwrap();
    p.flush().unwrap();
}

fn image(e: &Engine) -> Vec<u8> {
    e.read(0, e.capacity_blocks()).unwrap()
}

#[test]
fn a_grow_reaches_the_standby_at_its_position_and_later_writes_apply() {
    let (pd, sd) = (volume(Role::Primary), volume(Role::Standby));
    let p = Engine::open(&pd, quiet()).unwrap();
    let s = Engine::open(&sd, quiet()).unwrap();
    let start = p.log_pos_after(0).unwrap();
    p.set_retention(Some(start));
    workload(&p);
    assert_eq!(p.capacity_blocks(), GROWN);
    // The grow record travels in the stream between the writes around it, and writes beyond
    // the old end come only after it.
    let (recs, _) = p.read_log(start, usize::MAX).unwrap();
    let at = recs
        .iter()
        .position(|r| r.kind == ShippedKind::Grow)
        .expect("a grow record in the log");
    assert_eq!((recs[at].lba, recs[at].blocks), (GROWN, 0));
    assert!(recs[at].data.is_empty());
    assert!(at > 0 && at + 1 < recs.len());
    let beyond = |r: &ShippedRecord| r.kind == ShippedKind::Write && r.lba + 5 > BLOCKS;
    assert!(recs[..at].iter().all(|r| !beyond(r)));
    assert!(recs[at..].iter().any(beyond));
    // Without the grow record, a standby refuses those writes: the record is what makes them
    // fit (the check this test relies on is real).
    {
        let other = volume(Role::Standby);
        let o = Engine::open(&other, quiet()).unwrap();
        let skipped: Vec<ShippedRecord> = recs
            .iter()
            .filter(|r| r.kind != ShippedKind::Grow)
            .cloned()
            .collect();
        assert!(o.apply_replicated(&skipped).is_err());
    }
    // A standby refuses to grow by itself, and a primary to shrink by growing.
    assert!(s.grow(GROWN * 2).is_err());
    assert!(p.grow(BLOCKS).is_err());
    let pos = ship(&p, &s, start);
    assert_eq!(s.capacity_blocks(), GROWN);
    // Shipped again (a reconnect from an older position): nothing changes.
    s.apply_replicated(&recs).unwrap();
    assert_eq!(s.capacity_blocks(), GROWN);
    // After a restart of the standby the size is its own (superblock and log agree).
    s.sync_applied().unwrap();
    drop(s);
    let s = Engine::open(&sd, quiet()).unwrap();
    assert_eq!(s.capacity_blocks(), GROWN);
    assert_eq!(s.applied_lsn(), pos.lsn - 1);
    // Promoted, it serves the primary's image, new end included.
    s.set_role(Role::Primary, 9).unwrap();
    assert_eq!(image(&s), image(&p));
    // And it grows further as a primary.
    s.grow(GROWN + 8).unwrap();
    assert_eq!(s.capacity_blocks(), GROWN + 8);
}

#[test]
fn a_standby_that_took_the_size_from_the_hello_ignores_the_record_later() {
    let (pd, sd) = (volume(Role::Primary), volume(Role::Standby));
    let p = Engine::open(&pd, quiet()).unwrap();
    let s = Engine::open(&sd, quiet()).unwrap();
    let start = p.log_pos_after(0).unwrap();
    p.set_retention(Some(start));
    workload(&p);
    // Grown first to a larger size than the record names (the primary's Hello after a
    // second grow): the record does not shrink it.
    s.follow_capacity(GROWN + 64).unwrap();
    ship(&p, &s, start);
    assert_eq!(s.capacity_blocks(), GROWN + 64);
    assert!(p.follow_capacity(GROWN + 64).is_err());
    s.set_role(Role::Primary, 9).unwrap();
    assert_eq!(s.read(0, GROWN).unwrap(), image(&p));
}

#[test]
fn a_primary_losing_power_at_every_io_of_a_grow_keeps_what_it_acknowledged() {
    let setup = |d: &SimStorage| -> std::sync::Arc<Engine> {
        let p = Engine::open(d, quiet()).unwrap();
        p.write(3, &write_data(1, 3, 2, BS), true).unwrap();
        p
    };
    let run = |p: &Engine| -> (bool, bool) {
        let grown = p.grow(GROWN).is_ok();
        let lba = GROWN - 4;
        let wrote =
            grown && p.write(lba, &write_data(2, lba, 4, BS), false).is_ok() && p.flush().is_ok();
        (grown, wrote)
    };
    let total = {
        let d = volume(Role::Primary);
        let p = setup(&d);
        let before = d.ops_done();
        assert_eq!(run(&p), (true, true));
        d.ops_done() - before
    };
    for crash_at in 0..total {
        let d = volume(Role::Primary);
        let p = setup(&d);
        d.arm_crash_after(crash_at);
        let (grown, wrote) = run(&p);
        drop(p);
        let after = d.crash(&mut SimRng::new(crash_at));
        let p = Engine::open(&after, quiet())
            .unwrap_or_else(|e| panic!("crash point {crash_at}: recovery: {e}"));
        let cap = p.capacity_blocks();
        assert!(
            cap == BLOCKS || cap == GROWN,
            "crash point {crash_at}: {cap} blocks"
        );
        if grown {
            assert_eq!(
                cap, GROWN,
                "crash point {crash_at}: an acknowledged grow lost"
            );
        }
        if wrote {
            let lba = GROWN - 4;
            assert_eq!(
                p.read(lba, 4).unwrap(),
                write_data(2, lba, 4, BS),
                "crash point {crash_at}"
            );
        }
        if cap == GROWN {
            // The new blocks read as zeros where nothing was written.
            assert!(p.read(BLOCKS, 8).unwrap().iter().all(|&b| b == 0));
        }
    }
    println!("verified {total} primary power-loss points");
}

#[test]
fn a_standby_losing_power_while_applying_a_grow_record_recovers_consistently() {
    let pd = volume(Role::Primary);
    let p = Engine::open(&pd, quiet()).unwrap();
    let start = p.log_pos_after(0).unwrap();
    p.set_retention(Some(start));
    workload(&p);
    let (recs, _) = p.read_log(start, usize::MAX).unwrap();
    let grow_lsn = recs
        .iter()
        .find(|r| r.kind == ShippedKind::Grow)
        .expect("a grow record")
        .lsn;
    let want = image(&p);
    let total = at_every_io_operation_of_an_apply(
        &recs,
        || volume(Role::Standby),
        |crash_at, s| {
            let applied = s.applied_lsn();
            let cap = s.capacity_blocks();
            assert!(
                cap == BLOCKS || cap == GROWN,
                "crash point {crash_at}: {cap} blocks"
            );
            if applied >= grow_lsn {
                assert_eq!(
                    cap, GROWN,
                    "crash point {crash_at}: applied through {applied}, grow at {grow_lsn}"
                );
            }
            // The primary re-ships from the standby's position: both end the same.
            let from = p.log_pos_after(applied).unwrap();
            ship(&p, &s, from);
            assert_eq!(s.capacity_blocks(), GROWN, "crash point {crash_at}");
            s.set_role(Role::Primary, 9).unwrap();
            assert_eq!(image(&s), want, "crash point {crash_at}");
        },
    );
    println!("verified {total} standby power-loss points");
}
