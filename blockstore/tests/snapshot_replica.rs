//! Snapshots on a replicated volume: the primary's snapshot and delete records are shipped like
//! writes and applied by the standby at the same log position; a rollback reaches the standby
//! as ordinary writes; re-shipped records change nothing; a standby that loses power while
//! applying a snapshot record ends with the snapshot exactly when its applied position says
//! it holds the record.

use blockstore::engine::Engine;
use blockstore::replica::{LogPos, ShippedKind};
use blockstore::sim::SimStorage;
use blockstore::testkit::power_loss::{at_every_io_operation_of_an_apply, quiet, sim_volume};
use blockstore::testkit::write_data;
use blockstore::{Role, SnapshotInfo};

const BS: usize = 512;
const BLOCKS: u64 = 128;

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

fn snapshot(e: &Engine, id: u64) -> Vec<u8> {
    let mut buf = vec![0u8; BLOCKS as usize * BS];
    e.read_snapshot(id, 0, &mut buf).unwrap();
    buf
}

/// What must agree between the nodes: id, name, position (not the local creation time).
fn same(a: &[SnapshotInfo]) -> Vec<(u64, String, u64, u64)> {
    a.iter()
        .map(|s| (s.id, s.name.clone(), s.position, s.capacity_blocks))
        .collect()
}

fn writes(e: &Engine, seed: u64) {
    for i in 0..12 {
        let lba = (seed * 13 + i * 7) % (BLOCKS - 8);
        e.write(lba, &write_data(seed * 100 + i, lba, 5, BS), false)
            .unwrap();
    }
    e.trim((seed * 5) % BLOCKS, 3).unwrap();
}

#[test]
fn snapshots_deletes_and_rollbacks_reach_the_standby_at_the_same_position() {
    let (pd, sd) = (volume(Role::Primary), volume(Role::Standby));
    let p = Engine::open(&pd, quiet()).unwrap();
    let s = Engine::open(&sd, quiet()).unwrap();
    let mut pos = p.log_pos_after(0).unwrap();
    p.set_retention(Some(pos));
    writes(&p, 1);
    let a = p.create_snapshot("a").unwrap();
    writes(&p, 2);
    // The snapshot record travels in the stream, between the writes around it.
    let (recs, _) = p.read_log(pos, usize::MAX).unwrap();
    let at = recs
        .iter()
        .position(|r| r.kind == ShippedKind::Snapshot)
        .expect("a snapshot record in the log");
    assert_eq!(recs[at].lsn, a.position);
    assert_eq!(recs[at].data, b"a");
    assert!(at > 0 && at + 1 < recs.len());
    pos = ship(&p, &s, pos);
    let resend = pos;
    p.set_retention(Some(resend));
    p.flush_once().unwrap();
    let b = p.create_snapshot("b").unwrap();
    writes(&p, 3);
    p.flush_once().unwrap();
    pos = ship(&p, &s, pos);
    assert_eq!(same(&s.list_snapshots()), same(&p.list_snapshots()));
    s.flush_once().unwrap();
    for id in [a.id, b.id] {
        assert_eq!(snapshot(&s, id), snapshot(&p, id), "snapshot {id}");
    }
    // Shipped again (a reconnect from an older position): nothing changes.
    let (again, _) = p.read_log(resend, usize::MAX).unwrap();
    assert!(again.iter().any(|r| r.kind == ShippedKind::Snapshot));
    s.apply_replicated(&again).unwrap();
    assert_eq!(same(&s.list_snapshots()), same(&p.list_snapshots()));
    // A rollback is writes; a delete is a record.
    p.rollback_snapshot(a.id).unwrap();
    p.delete_snapshot(b.id).unwrap();
    pos = ship(&p, &s, pos);
    assert_eq!(same(&s.list_snapshots()), same(&p.list_snapshots()));
    assert_eq!(s.list_snapshots().len(), 1);
    assert_eq!(snapshot(&s, a.id), snapshot(&p, a.id));
    let _ = pos;
    // Compare the live images: promote the standby's copy to read it.
    s.set_role(Role::Primary, 9).unwrap();
    assert_eq!(s.read(0, BLOCKS).unwrap(), p.read(0, BLOCKS).unwrap());
    assert_eq!(p.read(0, BLOCKS).unwrap(), snapshot(&p, a.id));
}

#[test]
fn a_standby_losing_power_while_applying_a_snapshot_record_recovers_consistently() {
    let pd = volume(Role::Primary);
    let p = Engine::open(&pd, quiet()).unwrap();
    let start = p.log_pos_after(0).unwrap();
    p.set_retention(Some(start));
    writes(&p, 1);
    let a = p.create_snapshot("a").unwrap();
    writes(&p, 2);
    p.flush_once().unwrap();
    let (recs, _) = p.read_log(start, usize::MAX).unwrap();
    let want = snapshot(&p, a.id);
    let total = at_every_io_operation_of_an_apply(
        &recs,
        || volume(Role::Standby),
        |crash_at, s| {
            let applied = s.applied_lsn();
            let has = !s.list_snapshots().is_empty();
            assert_eq!(
                has,
                applied >= a.position,
                "crash point {crash_at}: applied through {applied}, snapshot at {}",
                a.position
            );
            // The primary re-ships from the standby's position: both end the same.
            let from = p.log_pos_after(applied).unwrap();
            ship(&p, &s, from);
            assert_eq!(same(&s.list_snapshots()), same(&p.list_snapshots()));
            s.flush_once().unwrap();
            assert_eq!(snapshot(&s, a.id), want, "crash point {crash_at}");
        },
    );
    println!("verified {total} standby power-loss points");
}
