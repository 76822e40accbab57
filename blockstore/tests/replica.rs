//! The engine's side of replication: a primary's log read for shipping and applied on a
//! standby gives the same image; records a standby needs are retained; flushes wait for the
//! replication gate; a standby's applied position survives a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use blockstore::engine::Engine;
use blockstore::replica::{LogPos, ReplicaGate};
use blockstore::sim::{SimRng, SimStorage};
use blockstore::storage::BlockFile;
use blockstore::testkit::power_loss::{quiet, sim_volume};
use blockstore::testkit::{identify, write_data};
use blockstore::{Error, Role, Storage};

const BS: usize = 512;
const BLOCKS: u64 = 256;

fn volume(role: Role, wal: u64) -> SimStorage {
    sim_volume(BS, BLOCKS, wal, role)
}

fn image(e: &Engine) -> Vec<u8> {
    // A standby refuses host reads: read through a primary view of the same image.
    e.read(0, BLOCKS).unwrap()
}

/// A mixed workload with enough data to wrap a small log several times.
fn workload(e: &Engine, rounds: u64) {
    for i in 0..rounds {
        let lba = (i * 7) % (BLOCKS - 4);
        e.write(lba, &write_data(i + 1, lba, 3, BS), false).unwrap();
        if i % 5 == 0 {
            e.trim((i * 3) % BLOCKS, 1).unwrap();
        }
        if i % 7 == 0 {
            e.write_zeroes((i * 11) % BLOCKS, 2, false).unwrap();
        }
    }
}

/// Ships everything from `pos` to the standby, returning the new position.
fn ship(p: &Engine, s: &Engine, mut pos: LogPos) -> LogPos {
    loop {
        let (recs, next) = p.read_log(pos, 64 << 10).unwrap();
        if recs.is_empty() {
            return next;
        }
        s.apply_replicated(&recs).unwrap();
        pos = next;
    }
}

#[test]
fn a_shipped_log_applied_on_a_standby_gives_the_same_image() {
    let pd = volume(Role::Primary, 64 * 1024);
    let sd = volume(Role::Standby, 32 * 1024);
    let p = Engine::open(&pd, quiet()).unwrap();
    let s = Engine::open(&sd, quiet()).unwrap();
    p.set_retention(Some(p.log_pos_after(0).unwrap()));
    let mut pos = p.log_pos_after(0).unwrap();
    for round in 0..6 {
        workload(&p, 20 + round);
        pos = ship(&p, &s, pos);
        // Nothing the standby has not got is freed: retention follows its position.
        p.set_retention(Some(pos));
        p.flush_once().unwrap();
    }
    let last = pos.lsn - 1;
    assert_eq!(s.sync_applied().unwrap(), last);
    // Compare the images: promote the standby's copy to read it.
    s.set_role(Role::Primary, 9).unwrap();
    assert_eq!(image(&p), image(&s));
}

#[test]
fn records_a_standby_needs_are_kept_and_others_recycled() {
    let pd = volume(Role::Primary, 64 * 1024);
    let p = Engine::open(&pd, quiet()).unwrap();
    workload(&p, 10);
    let start = p.log_pos_after(0).unwrap();
    p.set_retention(Some(start));
    p.flush_once().unwrap();
    let (recs, _) = p.read_log(start, usize::MAX).unwrap();
    assert!(!recs.is_empty(), "retained records are still readable");
    assert_eq!(p.log_pos_after(0).unwrap(), start);
    // Without a floor the checkpoint frees them: the standby would need a full resync.
    p.set_retention(None);
    workload(&p, 1);
    p.flush_once().unwrap();
    assert!(matches!(
        p.read_log(start, usize::MAX),
        Err(Error::LogRecycled { .. })
    ));
    assert!(matches!(p.log_pos_after(0), Err(Error::LogRecycled { .. })));
}

#[test]
fn retention_never_stops_the_primary_writing() {
    // A floor that would hold more than half the log is dropped by the checkpoint.
    let pd = volume(Role::Primary, 32 * 1024);
    let p = Engine::open(&pd, quiet()).unwrap();
    p.set_retention(Some(p.log_pos_after(0).unwrap()));
    workload(&p, 400);
    p.flush().unwrap();
}

#[derive(Debug, Default)]
struct Gate {
    asked: Mutex<Vec<u64>>,
    fail: bool,
}

impl ReplicaGate for Gate {
    fn request(&self, lsn: u64) -> blockstore::Result<()> {
        self.asked.lock().unwrap().push(lsn);
        if self.fail {
            return Err(Error::Invalid("fenced".into()));
        }
        Ok(())
    }

    fn wait_durable(&self, lsn: u64) -> blockstore::Result<()> {
        assert!(
            self.asked.lock().unwrap().contains(&lsn),
            "the flush asked for {lsn} first"
        );
        if self.fail {
            return Err(Error::Invalid("fenced".into()));
        }
        Ok(())
    }

    /// Plain writes: the standby received them at once (these tests are about flushes).
    fn wait_received(&self, _lsn: u64) -> blockstore::Result<()> {
        Ok(())
    }
}

#[test]
fn flushes_and_fua_writes_wait_for_the_standbys() {
    let pd = volume(Role::Primary, 64 * 1024);
    let p = Engine::open(&pd, quiet()).unwrap();
    let gate = Arc::new(Gate::default());
    p.set_replica_gate(Some(gate.clone()));
    p.write(0, &write_data(1, 0, 1, BS), false).unwrap();
    assert!(
        gate.asked.lock().unwrap().is_empty(),
        "a plain write waits for nobody"
    );
    p.flush().unwrap();
    p.write(1, &write_data(2, 1, 1, BS), true).unwrap();
    let asked = gate.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(
        asked[0] < asked[1],
        "each waits for its own last record: {asked:?}"
    );
    let failing = Arc::new(Gate {
        fail: true,
        ..Gate::default()
    });
    p.set_replica_gate(Some(failing));
    assert!(
        p.flush().is_err(),
        "a flush the standbys could not cover fails"
    );
    p.set_replica_gate(None);
    p.flush().unwrap();
}

#[test]
fn a_standby_keeps_its_applied_position_across_a_crash() {
    let pd = volume(Role::Primary, 64 * 1024);
    let sd = volume(Role::Standby, 64 * 1024);
    let p = Engine::open(&pd, quiet()).unwrap();
    let s = Engine::open(&sd, quiet()).unwrap();
    workload(&p, 15);
    let pos = ship(&p, &s, p.log_pos_after(0).unwrap());
    let durable = s.sync_applied().unwrap();
    assert_eq!(durable, pos.lsn - 1);
    assert!(
        matches!(s.write(0, &[0; BS], false), Err(Error::NotServing(_))),
        "a standby refuses host writes"
    );
    assert!(
        p.apply_replicated(&[]).is_err(),
        "a primary applies nothing"
    );
    s.flush_once().unwrap();
    let sd = sd.crash(&mut SimRng::new(7));
    drop(s);
    let s = Engine::open(&sd, quiet()).unwrap();
    assert_eq!(s.applied_lsn(), durable);
}

/// A full resync at the engine level: the plan names only written regions (from the index and
/// the extent's holes); a standby marked mid-resync stays marked across a crash and refuses to
/// be promoted; once the copy and the log from its start are applied, the mark is cleared and
/// the promoted standby holds the primary's image.
#[test]
fn a_full_resync_copies_written_regions_and_a_partial_copy_cannot_be_promoted() {
    let pd = volume(Role::Primary, 64 * 1024);
    let p = Engine::open(&pd, quiet()).unwrap();
    p.write(10, &write_data(1, 10, 4, BS), false).unwrap();
    p.write(200, &write_data(2, 200, 2, BS), false).unwrap();
    p.flush_once().unwrap(); // into the extent: its holes answer for the rest
    p.write(100, &write_data(3, 100, 1, BS), false).unwrap(); // only in the log's index
    let plan = p.resync_plan().unwrap();
    let mapped: Vec<(u64, u64)> = plan
        .iter()
        .filter(|r| r.mapped)
        .map(|r| (r.lba, r.blocks))
        .collect();
    assert_eq!(mapped, vec![(10, 4), (100, 1), (200, 2)]);
    assert_eq!(
        plan.iter().map(|r| r.blocks).sum::<u64>(),
        BLOCKS,
        "the runs cover the volume once"
    );
    let start = p.last_lsn();

    // The standby holds something else, and crashes in the middle of the copy.
    let sd = volume(Role::Standby, 64 * 1024);
    let s = Engine::open(&sd, quiet()).unwrap();
    s.begin_resync().unwrap();
    let first = plan[0];
    s.apply_resync_extent(first.lba, first.blocks, None)
        .unwrap();
    let sd = sd.crash(&mut SimRng::new(3));
    drop(s);
    let s = Engine::open(&sd, quiet()).unwrap();
    assert!(s.resync_incomplete(), "the mark survives the crash");
    assert!(s.promote().is_err(), "a partial image is not promotable");

    // The whole resync: regions, then the log written meanwhile from the start.
    s.begin_resync().unwrap();
    p.write(11, &write_data(4, 11, 1, BS), false).unwrap(); // lands during the copy
    for r in &plan {
        let data = r.mapped.then(|| p.read(r.lba, r.blocks).unwrap());
        s.apply_resync_extent(r.lba, r.blocks, data.as_deref())
            .unwrap();
    }
    s.resync_copied(start).unwrap();
    let pos = p.log_pos_after(start).unwrap();
    ship(&p, &s, pos);
    assert!(s.resync_incomplete(), "not whole before finish_resync");
    assert_eq!(s.finish_resync().unwrap(), p.last_lsn());
    assert!(!s.resync_incomplete());
    s.promote().unwrap();
    assert_eq!(image(&s), image(&p));
}

/// A standby that crashes announces what its recovered log holds, not the older position of
/// its last checkpoint (the records carry the primary's LSN); records it holds already are not
/// applied again; and after its position was set anew (a handover), origins from before no
/// longer count.
#[test]
fn a_restarted_standby_announces_what_its_log_holds_and_ignores_records_it_has() {
    let pd = volume(Role::Primary, 256 * 1024);
    let sd = volume(Role::Standby, 256 * 1024);
    let p = Engine::open(&pd, quiet()).unwrap();
    let s = Engine::open(&sd, quiet()).unwrap();
    workload(&p, 4);
    let pos = ship(&p, &s, p.log_pos_after(0).unwrap());
    s.flush_once().unwrap();
    let checkpointed = s.applied_lsn();
    // More records after the checkpoint, durable in the log only.
    workload(&p, 6);
    let start = p.log_pos_after(checkpointed).unwrap();
    assert_eq!(start, pos);
    ship(&p, &s, pos);
    let durable = s.sync_applied().unwrap();
    assert!(durable > checkpointed);
    let sd = sd.crash(&mut SimRng::new(3));
    drop(s);
    let s = Engine::open(&sd, quiet()).unwrap();
    assert_eq!(s.applied_lsn(), durable, "the position the log holds");
    // The primary ships again from an older position: nothing is appended twice.
    let before = s.last_lsn();
    let (again, _) = p.read_log(start, usize::MAX).unwrap();
    assert!(!again.is_empty());
    s.apply_replicated(&again).unwrap();
    assert_eq!(
        s.last_lsn(),
        before,
        "records held already are not applied again"
    );
    // What was applied equals the primary's image.
    s.promote().unwrap();
    assert_eq!(image(&s), image(&p));
    s.demote().unwrap();
    // A handover sets the position anew in another primary's numbering: the origins already
    // in the log no longer count after a crash.
    s.set_applied_position(2).unwrap();
    let sd = sd.crash(&mut SimRng::new(4));
    drop(s);
    let s = Engine::open(&sd, quiet()).unwrap();
    assert_eq!(s.applied_lsn(), 2);
}

/// A standby link that releases flushes only when the test says so, and notes whether it was
/// asked before the local log sync began.
#[derive(Debug, Default)]
struct HeldGate {
    st: Mutex<(u64, u64)>,
    cv: Condvar,
}

impl HeldGate {
    fn release(&self, lsn: u64) {
        self.st.lock().unwrap().1 = lsn;
        self.cv.notify_all();
    }

    fn asked(&self) -> u64 {
        self.st.lock().unwrap().0
    }
}

impl ReplicaGate for HeldGate {
    fn request(&self, lsn: u64) -> blockstore::Result<()> {
        let mut st = self.st.lock().unwrap();
        st.0 = st.0.max(lsn);
        Ok(())
    }

    fn wait_durable(&self, lsn: u64) -> blockstore::Result<()> {
        let st = self.st.lock().unwrap();
        let (st, _) = self
            .cv
            .wait_timeout_while(st, Duration::from_secs(10), |st| st.1 < lsn)
            .unwrap();
        assert!(st.1 >= lsn, "never released");
        Ok(())
    }

    /// Plain writes: the standby received them at once (these tests are about flushes).
    fn wait_received(&self, _lsn: u64) -> blockstore::Result<()> {
        Ok(())
    }
}

/// Storage whose log sync notes whether the gate had been asked when it began.
struct Watched {
    disk: SimStorage,
    gate: Arc<HeldGate>,
    asked_at_sync: Arc<Mutex<Vec<u64>>>,
}

struct WatchedLog {
    file: Arc<dyn BlockFile>,
    gate: Arc<HeldGate>,
    asked_at_sync: Arc<Mutex<Vec<u64>>>,
}

impl BlockFile for WatchedLog {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.file.write_at(buf, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.asked_at_sync.lock().unwrap().push(self.gate.asked());
        self.file.sync_data()
    }
    fn size(&self) -> std::io::Result<u64> {
        self.file.size()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }
    fn punch_hole(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.file.punch_hole(offset, len)
    }
}

impl Storage for Watched {
    fn open(&self, name: &str) -> std::io::Result<Arc<dyn BlockFile>> {
        let file = self.disk.open(name)?;
        if name != "wal" {
            return Ok(file);
        }
        Ok(Arc::new(WatchedLog {
            file,
            gate: self.gate.clone(),
            asked_at_sync: self.asked_at_sync.clone(),
        }))
    }
    fn create(&self, name: &str) -> std::io::Result<Arc<dyn BlockFile>> {
        self.disk.create(name)
    }
    fn exists(&self, name: &str) -> bool {
        self.disk.exists(name)
    }
    fn sync_dir(&self) -> std::io::Result<()> {
        self.disk.sync_dir()
    }
    fn describe(&self, name: &str) -> std::path::PathBuf {
        self.disk.describe(name)
    }
    fn replace(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.disk.replace(name, bytes)
    }
    fn read_all(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        self.disk.read_all(name)
    }
}

#[test]
fn a_flush_asks_the_standbys_before_its_local_sync_and_completes_only_when_both_are_durable() {
    let disk = volume(Role::Primary, 64 * 1024);
    let gate = Arc::new(HeldGate::default());
    let asked_at_sync = Arc::new(Mutex::new(Vec::new()));
    let storage = Arc::new(Watched {
        disk: disk.clone(),
        gate: gate.clone(),
        asked_at_sync: asked_at_sync.clone(),
    });
    let p = Engine::open_shared(storage, quiet()).unwrap();
    p.set_replica_gate(Some(gate.clone()));
    // Eight records, each in its own append.
    for lba in 0..8 {
        p.write(lba, &write_data(lba + 1, lba, 1, BS), false)
            .unwrap();
    }
    let last = p.last_lsn();
    asked_at_sync.lock().unwrap().clear();
    let done = Arc::new(AtomicBool::new(false));
    let flusher = {
        let (p, done) = (p.clone(), done.clone());
        std::thread::spawn(move || {
            p.flush().unwrap();
            done.store(true, Ordering::SeqCst);
        })
    };
    // The barrier is asked for while (before) the local log syncs: the two run in parallel.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while asked_at_sync.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the log never synced");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        asked_at_sync.lock().unwrap()[0],
        last,
        "the standbys were asked for the flush's records before the local sync began"
    );
    // The local log is durable, yet the flush waits for the standbys.
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !done.load(Ordering::SeqCst),
        "acknowledged before the standbys"
    );
    gate.release(last);
    flusher.join().unwrap();
    assert!(done.load(Ordering::SeqCst));
    // And what it acknowledged is durable here: a power loss keeps every record.
    let after = disk.crash(&mut SimRng::new(3));
    drop(p);
    let p = Engine::open(&after, quiet()).unwrap();
    let img = p.read(0, 8).unwrap();
    for lba in 0..8u64 {
        let at = &img[lba as usize * BS..(lba as usize + 1) * BS];
        assert_eq!(identify(at, lba).unwrap(), lba + 1, "block {lba} lost");
    }
}

/// A gate that answers after `delay` (a standby or etcd that takes its time).
#[derive(Debug)]
struct SlowGate {
    delay: Duration,
}

impl ReplicaGate for SlowGate {
    fn request(&self, _lsn: u64) -> blockstore::Result<()> {
        Ok(())
    }

    fn wait_durable(&self, _lsn: u64) -> blockstore::Result<()> {
        std::thread::sleep(self.delay);
        Ok(())
    }

    /// Plain writes: the standby received them at once (these tests are about flushes).
    fn wait_received(&self, _lsn: u64) -> blockstore::Result<()> {
        Ok(())
    }
}

#[test]
fn a_flush_that_waited_past_the_lease_is_not_acknowledged() {
    let pd = volume(Role::Primary, 64 * 1024);
    let p = Engine::open(&pd, quiet()).unwrap();
    p.set_replica_gate(Some(Arc::new(SlowGate {
        delay: Duration::from_millis(200),
    })));
    p.set_lease(Some(std::time::Instant::now() + Duration::from_secs(60)));
    p.write(0, &write_data(1, 0, 1, BS), false).unwrap();
    p.flush().unwrap();
    p.write(1, &write_data(2, 1, 1, BS), false).unwrap();
    // The lease ends while the flush waits for the standby: the self-fence wins.
    p.set_lease(Some(std::time::Instant::now() + Duration::from_millis(50)));
    assert!(matches!(
        p.flush(),
        Err(Error::NotServing(blockstore::AccessState::Transitioning))
    ));
}
