//! Deterministic simulation of replication, in the spirit of raft-rs and FoundationDB: a primary
//! and a standby engine on simulated disks that lose unsynced writes on a crash, the sans-IO
//! link state machines of both sides, a simulated network that delivers, delays, drops
//! connections and partitions, and crashes of the primary at any step — under a random workload
//! of writes, trims and flushes. A flush runs as the real engine runs it: the barrier is asked
//! for first and the local log sync happens in parallel (here: at a random later step), and the
//! flush is acknowledged only once the primary's log is durable AND the standby's link released
//! it, in whichever order the two finish.
//!
//! Invariants checked after every crash: every flush acknowledged is on the standby that is
//! promoted, and on the old primary itself when it comes back (every block holds what the last
//! acknowledged flush before the crash wrote there, or something written after it); and a
//! primary that learns of a newer epoch serves nothing. Plain writes complete only once the
//! primary's peer released them as received by the standby; when the primary alone is killed
//! (half the failovers), every write completed to the host is on the promoted standby (a
//! host's flush there would acknowledge it), before and after its power loss.
//!
//! Full resync: the log is small and its records are recycled while the standby is away (the
//! retention floor follows the standby as the driver moves it, bounded by the engine), so the
//! standby gets rebuilt: the primary copies its allocated regions in tiny chunks while the
//! workload goes on writing, the standby loses power at random moments of a resync (it comes
//! back announcing it incomplete) and the primary's end-of-run crash often lands mid-copy.
//! The standby also loses power at any other moment (several times a run): it must come back
//! announcing the position its recovered log holds, and never append a record it holds again.
//! Checked: the primary never counts a standby in sync whose image is partial, a standby whose
//! resync did not complete refuses to be promoted, and in about a third of the seeds the run ends
//! with a settle phase (writes stop, the link is up) after which the standby, promoted, holds
//! exactly the primary's image.
//!
//! Snapshots: the primary takes snapshots (and deletes the oldest now and then) during the
//! workload; every snapshot a promoted standby holds must be one the primary took, at the same
//! log position, with the same contents, and a standby that caught up without a full resync
//! holds exactly the primary's snapshots.
//!
//! `TANDEM_REPL_SEEDS` sets how many seeds run (default 2000, about 27 s of CPU in a debug
//! build), `TANDEM_REPL_FIRST_SEED` the first one (to replay a failing seed alone).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use blockstore::engine::{create, CreateOptions, Engine};
use blockstore::repl::frame::{self, Frame, Record};
use blockstore::repl::primary::{PrimaryConfig, PrimaryEvent, PrimaryPeer, ResyncStep, SyncState};
use blockstore::repl::standby::{StandbyConfig, StandbyEvent, StandbyLink};
use blockstore::replica::ShippedRecord;
use blockstore::sim::{SimRng, SimStorage};
use blockstore::testkit::power_loss::quiet;
use blockstore::testkit::{identify, write_data};
use blockstore::{AccessState, Error, Role};

const BS: usize = 512;
const BLOCKS: u64 = 48;

fn disk(role: Role) -> SimStorage {
    let d = SimStorage::new();
    create(
        &d,
        &CreateOptions {
            block_size: BS as u32,
            capacity_bytes: BLOCKS * BS as u64,
            wal_bytes: 48 * 1024,
            role,
            epoch: 1,
        },
    )
    .unwrap();
    d
}

/// One connection's state: frames in flight, each through the real codec, and whether the
/// standby owes a sync it was asked for (it runs at a random later step). A new connection
/// starts from `Wire::default()`.
#[derive(Default)]
struct Wire {
    to_standby: VecDeque<Vec<u8>>,
    to_primary: VecDeque<Vec<u8>>,
    sync_due: bool,
}

fn encode(f: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode(f, &mut out);
    out
}

fn decode(bytes: &[u8]) -> Frame {
    let mut d = frame::Decoder::new();
    d.push(bytes);
    d.next_frame().expect("valid frame").expect("whole frame")
}

/// What the hosts were told: for each block, the writes in order (0 = zeros), the index of
/// the last one covered by an acknowledged flush, and the index of the last one completed
/// (a plain write the host saw complete: a flush the host sends next, on whichever node is
/// primary then, covers it).
#[derive(Default)]
struct Model {
    history: HashMap<u64, Vec<u64>>,
    acked: HashMap<u64, usize>,
    completed: HashMap<u64, usize>,
}

impl Model {
    /// A write (or trim, `id` 0) of `lba` was appended; returns its index in the block's history.
    fn wrote(&mut self, lba: u64, id: u64) -> usize {
        let h = self.history.entry(lba).or_insert_with(|| vec![0]);
        h.push(id);
        h.len() - 1
    }

    /// The write at index `n` of `lba`'s history completed to the host.
    fn write_completed(&mut self, lba: u64, n: usize) {
        let c = self.completed.entry(lba).or_insert(0);
        *c = (*c).max(n);
    }

    /// Every block holds its last completed write, or its last acknowledged flushed write, or
    /// something later: what a host's flush after a failover must find on the new primary.
    fn check_completed(&self, image: &[u8], what: &str) {
        for (lba, hist) in &self.history {
            let at = &image[*lba as usize * BS..(*lba as usize + 1) * BS];
            let id = identify(at, *lba).unwrap_or_else(|e| panic!("{what}: block {lba}: {e}"));
            let from =
                (*self.acked.get(lba).unwrap_or(&0)).max(*self.completed.get(lba).unwrap_or(&0));
            assert!(
                hist[from..].contains(&id),
                "{what}: block {lba} holds write {id}, but write {} completed to the host before (history {hist:?}): a flush on this node would acknowledge a lost write",
                hist[from]
            );
        }
    }

    fn flush_acked(&mut self, upto: &HashMap<u64, usize>) {
        for (lba, n) in upto {
            let a = self.acked.entry(*lba).or_insert(0);
            *a = (*a).max(*n);
        }
    }

    fn snapshot(&self) -> HashMap<u64, usize> {
        self.history
            .iter()
            .map(|(lba, h)| (*lba, h.len() - 1))
            .collect()
    }

    /// Every block holds its acknowledged write or a later one.
    fn check(&self, image: &[u8], what: &str) {
        for (lba, hist) in &self.history {
            let at = &image[*lba as usize * BS..(*lba as usize + 1) * BS];
            let id = identify(at, *lba).unwrap_or_else(|e| panic!("{what}: block {lba}: {e}"));
            let acked = *self.acked.get(lba).unwrap_or(&0);
            assert!(
                hist[acked..].contains(&id),
                "{what}: block {lba} holds write {id}, but the acknowledged one is {} (history {hist:?})",
                hist[acked]
            );
        }
    }
}

struct Flush {
    lsn: u64,
    upto: HashMap<u64, usize>,
    /// The primary's own log sync covering it returned.
    local: bool,
}

/// What one seed exercised.
#[derive(Default)]
struct Tally {
    failovers: u64,
    flushes: u64,
    degraded: u64,
    /// Full resyncs begun on the standby (its resync mark set).
    resyncs: u64,
    /// Full resyncs that reached in sync.
    resyncs_done: u64,
    /// Standby crashes while its resync mark was set.
    standby_crashes_mid_resync: u64,
    /// Standby crashes outside a resync.
    standby_crashes: u64,
    /// Runs whose primary crashed while a resync was in progress.
    primary_crashes_mid_resync: u64,
    /// Settle phases after which both images were compared equal.
    compared: u64,
    /// Snapshots found on a promoted standby, compared with the primary's.
    snapshots_compared: u64,
    /// Plain writes (and trims) completed to the host, each only once the standby received it
    /// (or was declared out of sync).
    writes_completed: u64,
    /// Failovers after a kill of the primary alone (the standby keeps running), where every
    /// completed write was checked on the promoted standby, before and after its power loss.
    completed_checked: u64,
}

/// The simulated standby node: its disk and its engine, which a crash replaces.
struct Standby {
    disk: SimStorage,
    engine: std::sync::Arc<Engine>,
}

impl Standby {
    /// Power loss and restart: unsynced writes are lost, torn or kept.
    /// Returns a copy of the disk as it was found (to inspect it apart).
    fn crash(&mut self, rng: &mut SimRng) -> SimStorage {
        let found = self.disk.crash(rng);
        // Nothing is pending on the disk as found: each copy of it is the same.
        let d = found.crash(&mut SimRng::new(0));
        self.engine = Engine::open(&d, quiet()).unwrap();
        self.disk = d;
        found.crash(&mut SimRng::new(0))
    }

    /// A new link from what the standby holds durably (or its incomplete resync).
    fn link(&self, cfg: StandbyConfig) -> StandbyLink {
        let epoch = self.engine.role_state().epoch;
        if self.engine.resync_incomplete() {
            StandbyLink::needing_resync(cfg, epoch)
        } else {
            StandbyLink::new(cfg, epoch, self.engine.sync_applied().unwrap())
        }
    }
}

fn run(seed: u64, tally: &mut Tally) {
    let mut rng = SimRng::new(seed);
    let t0 = Instant::now();
    let mut now = t0;
    // Both nodes hold the same volume: two copies of one freshly created disk.
    let base = disk(Role::Primary);
    let pd = base.crash(&mut SimRng::new(0));
    let sd = base.crash(&mut SimRng::new(0));
    {
        let e = Engine::open(&sd, quiet()).unwrap();
        e.set_role(Role::Standby, 1).unwrap();
        e.close().unwrap();
    }
    let p = Engine::open(&pd, quiet()).unwrap();
    let mut sb = Standby {
        engine: Engine::open(&sd, quiet()).unwrap(),
        disk: sd,
    };
    let cfg = PrimaryConfig {
        volume_uuid: p.uuid(),
        node_id: [1; 16],
        block_size: BS as u32,
        capacity_blocks: BLOCKS,
        // Short, so that standbys fall out of sync and catch up again within a run.
        timeout: Duration::from_secs(1),
    };
    let scfg = StandbyConfig {
        volume_uuid: sb.engine.uuid(),
        node_id: [2; 16],
        block_size: BS as u32,
        capacity_blocks: BLOCKS,
    };
    let mut peer = PrimaryPeer::new(cfg, p.role_state().epoch, SyncState::InSync);
    // Tiny chunks, so that writes land between them.
    peer.set_resync_chunk(4 * BS as u64);
    let mut link: Option<StandbyLink> = None;
    let mut since_connect = 0u64;
    let mut was_resyncing = false;
    // In a third of the runs the standby stays away long after a drop.
    let away = if rng.below(3) == 0 { 100 } else { 4 };
    // In a third of the runs a long outage: the standby is cut off from step `from` for `len`
    // steps while writes and checkpoints go on, so the log recycles what it needs.
    let outage = (rng.below(3) == 0).then(|| {
        let from = rng.below(20);
        from..from + 40 + rng.below(40)
    });
    let mut wire = Wire::default();
    let mut model = Model::default();
    let mut pending: Vec<Flush> = Vec::new();
    let mut released = 0u64;
    // Plain writes appended and not yet completed to the host: (last LSN, (block, index)).
    let mut writing: Vec<(u64, Vec<(u64, usize)>)> = Vec::new();
    // The standby received everything through this LSN, as far as writes go.
    let mut received = 0u64;
    let mut writes_completed = 0u64;
    // The standby owes a barrier a sync: it runs at a random later point, as a real fsync
    // takes time while frames keep arriving.
    let mut next_id = 1u64;
    let mut acked_flushes = 0u64;
    let mut degraded = 0u64;
    // Every snapshot the primary took: its position and contents.
    let mut snaps: HashMap<u64, (u64, Vec<u8>)> = HashMap::new();
    let mut any_resync = false;
    let steps = 60 + rng.below(120);
    for step in 0..steps {
        now += Duration::from_millis(1 + rng.below(400));
        let cut_off = outage.as_ref().is_some_and(|o| o.contains(&step));
        if cut_off && link.is_some() {
            link = None;
            peer.disconnected();
        }
        // Connection management: the primary dials when no connection is up.
        // The standby stays away for a while at times, so the small log recycles what it
        // needs.
        if link.is_none() && !cut_off && rng.below(away) == 0 {
            wire = Wire::default();
            peer.connected();
            link = Some(sb.link(scfg));
            since_connect = 0;
        }
        since_connect += 1;
        // The standby loses power at any moment: in the middle of a resync (it must come back
        // announcing it and be rebuilt again) or not (it must come back announcing exactly the
        // position its log holds, so nothing it holds is appended again).
        // Most often soon after a connection, while what the primary ships on reconnecting
        // is applied and not yet synced.
        let resyncing = sb.engine.resync_incomplete();
        if rng.below(if since_connect <= 3 { 6 } else { 20 }) == 0 {
            if resyncing {
                tally.standby_crashes_mid_resync += 1;
            } else {
                tally.standby_crashes += 1;
            }
            let in_sync = peer.sync_state() == SyncState::InSync;
            link = None;
            peer.disconnected();
            let found = sb.crash(&mut rng);
            // What it received and had not synced is gone: a write completed on that alone
            // is on the primary only until the standby has it again, and losing it as well
            // (a kill of the primary now) is a failure of both nodes, which only a flush
            // survives.
            model.completed.clear();
            if in_sync && !resyncing {
                // A standby the primary counts in sync holds every acknowledged flush (read
                // through a promoted copy: a standby serves no reads).
                let e = Engine::open(&found, quiet()).unwrap();
                e.promote().unwrap();
                let image = e.read(0, BLOCKS).unwrap();
                model.check(&image, &format!("seed {seed}: standby after its crash"));
            }
        }
        match rng.below(10) {
            0..=4 => {
                let lba = rng.below(BLOCKS - 2);
                let n = 1 + rng.below(2);
                let id = next_id;
                next_id += 1;
                // The engine's write path without its wait for the standby (the gate's job,
                // modelled here by `writing`): completed once the standby received it.
                p.write(lba, &write_data(id, lba, n, BS), false).unwrap();
                let blocks = (lba..lba + n).map(|b| (b, model.wrote(b, id))).collect();
                peer.log_grew();
                let lsn = p.last_lsn();
                writing.push((lsn, blocks));
                peer.need_received(lsn, now);
            }
            5 => {
                let lba = rng.below(BLOCKS);
                p.trim(lba, 1).unwrap();
                let blocks = vec![(lba, model.wrote(lba, 0))];
                peer.log_grew();
                let lsn = p.last_lsn();
                writing.push((lsn, blocks));
                peer.need_received(lsn, now);
            }
            6 | 7 => {
                // A host flush: the barrier is asked for now; the local sync runs in parallel
                // (below, at this step or a later one).
                let upto = model.snapshot();
                let last = p.last_lsn();
                pending.push(Flush {
                    lsn: last,
                    upto,
                    local: false,
                });
                peer.need_durable(last, now);
            }
            // The background flusher checkpoints (up to the retention floor).
            9 if rng.below(2) == 0 => {
                p.flush_once().unwrap();
            }
            // A snapshot (a record in the log the standby applies at the same position), or
            // now and then the deletion of the oldest one.
            9 => {
                let taken = p.list_snapshots();
                if taken.len() > 2 && rng.below(3) == 0 {
                    p.delete_snapshot(taken[0].id).unwrap();
                } else {
                    let info = p.create_snapshot(&format!("s{step}")).unwrap();
                    let mut content = vec![0u8; BLOCKS as usize * BS];
                    p.read_snapshot(info.id, 0, &mut content).unwrap();
                    snaps.insert(info.id, (info.position, content));
                }
                peer.log_grew();
            }
            // The network drops the connection.
            8 if link.is_some() && rng.below(3) == 0 => {
                link = None;
                peer.disconnected();
            }
            _ => {}
        }
        pump(
            &p,
            &sb.engine,
            &mut peer,
            &mut link,
            &mut wire,
            &mut rng,
            now,
            &mut released,
            &mut received,
        );
        let before = peer.sync_state();
        peer.handle_timeout(now);
        degraded +=
            u64::from(before == SyncState::InSync && peer.sync_state() != SyncState::InSync);
        pump(
            &p,
            &sb.engine,
            &mut peer,
            &mut link,
            &mut wire,
            &mut rng,
            now,
            &mut released,
            &mut received,
        );
        let resyncing = sb.engine.resync_incomplete();
        assert!(
            !(resyncing && peer.sync_state() == SyncState::InSync),
            "seed {seed}: the primary counts a standby in sync whose image is partial"
        );
        any_resync |= resyncing || peer.resync_progress().is_some();
        tally.resyncs += u64::from(resyncing && !was_resyncing);
        tally.resyncs_done +=
            u64::from(was_resyncing && !resyncing && peer.sync_state() == SyncState::InSync);
        was_resyncing = resyncing;
        // The primary's group commit: one log sync covers every flush begun so far.
        if pending.iter().any(|f| !f.local) && rng.below(2) == 0 {
            p.flush().unwrap();
            for f in &mut pending {
                f.local = true;
            }
        }
        // Plain writes the standby received (or that go on without it) complete.
        writing.retain(|(lsn, blocks)| {
            if *lsn <= received.max(released) {
                for &(b, n) in blocks {
                    model.write_completed(b, n);
                }
                writes_completed += 1;
                false
            } else {
                true
            }
        });
        // Flushes durable here whose records the standby released are acknowledged.
        pending.retain(|f| {
            if f.local && f.lsn <= released {
                model.flush_acked(&f.upto);
                acked_flushes += 1;
                false
            } else {
                true
            }
        });
        let outage_over = outage.as_ref().is_none_or(|o| step >= o.end);
        if outage_over && rng.below(60) == 0 {
            break;
        }
    }
    // A third of the runs settle: writes stop, the link comes up, and once the standby is in
    // sync through the primary's last record both images must be equal.
    let settle = rng.below(3) == 0;
    let mut settled = false;
    if settle {
        // One last write and flush, so that the standby must acknowledge a real record (a
        // standby in sync that reconnected is not asked again for what it already holds).
        let id = next_id;
        p.write(0, &write_data(id, 0, 1, BS), false).unwrap();
        model.wrote(0, id);
        p.flush().unwrap();
        let upto = model.snapshot();
        for _ in 0..400 {
            now += Duration::from_millis(5);
            if link.is_none() {
                wire = Wire::default();
                peer.connected();
                link = Some(sb.link(scfg));
            }
            let last = p.last_lsn();
            peer.log_grew();
            peer.need_durable(last, now);
            pump(
                &p,
                &sb.engine,
                &mut peer,
                &mut link,
                &mut wire,
                &mut rng,
                now,
                &mut released,
                &mut received,
            );
            any_resync |= sb.engine.resync_incomplete() || peer.resync_progress().is_some();
            if peer.sync_state() == SyncState::InSync
                && peer.durable_lsn() >= last
                && released >= last
            {
                model.flush_acked(&upto);
                settled = true;
                break;
            }
        }
        assert!(
            settled,
            "seed {seed}: the standby never caught up once writes stopped: {:?} durable {} last {} released {} resync {:?} link {} standby resyncing {}",
            peer.sync_state(),
            peer.durable_lsn(),
            p.last_lsn(),
            released,
            peer.resync_progress(),
            link.is_some(),
            sb.engine.resync_incomplete()
        );
    }
    tally.primary_crashes_mid_resync += u64::from(peer.resync_progress().is_some());
    // The primary dies (its unsynced writes are lost); the standby is promoted if in sync.
    // In half the runs the primary alone is killed (kill -9) and the standby, still running,
    // is promoted as it is: every write completed to the host must be there (a host's flush
    // fails over to it and succeeds), and stay there through its power loss right after the
    // promotion (the promotion makes what it received durable). In the others the standby
    // loses power too, and only acknowledged flushes count.
    drop(link);
    let promoted_in_sync = peer.sync_state() == SyncState::InSync;
    let killed_alone = promoted_in_sync && rng.below(2) == 0;
    if killed_alone {
        sb.engine.promote().unwrap();
        let image = sb.engine.read(0, BLOCKS).unwrap();
        model.check_completed(
            &image,
            &format!("seed {seed}: standby promoted after a kill of the primary"),
        );
    }
    let primary_image = p.read(0, BLOCKS).unwrap();
    let primary_snaps: Vec<(u64, u64)> = p
        .list_snapshots()
        .iter()
        .map(|i| (i.id, i.position))
        .collect();
    sb.crash(&mut rng);
    let s = sb.engine.clone();
    if s.resync_incomplete() {
        assert!(
            !promoted_in_sync,
            "seed {seed}: in sync with a partial image"
        );
        assert!(
            s.promote().is_err(),
            "seed {seed}: a standby mid-resync was promoted"
        );
    }
    if promoted_in_sync {
        let image = if killed_alone {
            let image = s.read(0, BLOCKS).unwrap();
            model.check_completed(
                &image,
                &format!("seed {seed}: promoted standby after its power loss"),
            );
            tally.completed_checked += 1;
            image
        } else {
            s.promote().unwrap();
            s.read(0, BLOCKS).unwrap()
        };
        model.check(&image, &format!("seed {seed}: promoted standby"));
        // Every snapshot on the standby is one the primary took, at the same position, with
        // the same contents; settled without a resync, the standby has exactly the primary's.
        let standby_snaps: Vec<(u64, u64)> = s
            .list_snapshots()
            .iter()
            .map(|i| (i.id, i.position))
            .collect();
        for &(id, position) in &standby_snaps {
            let (want_pos, want) = snaps
                .get(&id)
                .unwrap_or_else(|| panic!("seed {seed}: standby snapshot {id} never taken"));
            assert_eq!(position, *want_pos, "seed {seed}: snapshot {id} position");
            let mut got = vec![0u8; BLOCKS as usize * BS];
            s.read_snapshot(id, 0, &mut got).unwrap();
            assert!(
                &got == want,
                "seed {seed}: snapshot {id} differs on the standby"
            );
            tally.snapshots_compared += 1;
        }
        if settled {
            assert!(
                image == primary_image,
                "seed {seed}: after catching up the standby differs from the primary"
            );
            if !any_resync {
                assert_eq!(
                    standby_snaps, primary_snaps,
                    "seed {seed}: snapshots of the caught-up standby"
                );
            }
            tally.compared += 1;
        }
    }
    // The old primary, back, holds every acknowledged flush itself; then it meets the new epoch
    // and serves nothing.
    let pd2 = pd.crash(&mut rng);
    drop(p);
    let p = Engine::open(&pd2, quiet()).unwrap();
    let image = p.read(0, BLOCKS).unwrap();
    model.check(&image, &format!("seed {seed}: old primary after its crash"));
    if promoted_in_sync {
        p.observe_epoch(s.role_state().epoch).unwrap();
        assert_eq!(p.access_state(), AccessState::Unavailable);
        assert!(matches!(
            p.write(0, &[0; BS], false),
            Err(Error::NotServing(_))
        ));
    }
    tally.failovers += u64::from(promoted_in_sync);
    tally.flushes += acked_flushes;
    tally.degraded += degraded;
    tally.writes_completed += writes_completed;
}

#[allow(clippy::too_many_arguments)]
fn pump(
    p: &Engine,
    s: &Engine,
    peer: &mut PrimaryPeer,
    link: &mut Option<StandbyLink>,
    wire: &mut Wire,
    rng: &mut SimRng,
    now: Instant,
    released: &mut u64,
    received: &mut u64,
) {
    // How many chunks the copy may read during this call: writes land between them.
    let mut copy_budget = rng.below(2);
    for _ in 0..64 {
        let mut progress = false;
        while copy_budget > 0 {
            match peer.next_resync_step() {
                ResyncStep::Read { lba, blocks } => {
                    let data = p.read(lba, u64::from(blocks)).unwrap();
                    peer.resync_extent(lba, blocks, data.into());
                }
                ResyncStep::Finish => peer.resync_copied(p.last_lsn()),
                ResyncStep::Idle => break,
            }
            copy_budget -= 1;
            progress = true;
        }
        while let Some(f) = peer.poll_frame() {
            if link.is_some() {
                wire.to_standby.push_back(encode(&f));
            }
            progress = true;
        }
        while let Some(ev) = peer.poll_event() {
            progress = true;
            match ev {
                PrimaryEvent::NeedRecords { after } => match p.log_pos_after(after) {
                    Ok(pos) => {
                        let (recs, next) = p.read_log(pos, 16 << 10).unwrap();
                        let at_head = p.read_log(next, 1).unwrap().0.is_empty();
                        let recs: Vec<_> = recs.into_iter().map(Record::from).collect();
                        peer.ship(recs, next.lsn - 1, at_head, now);
                    }
                    Err(Error::LogRecycled { .. }) => peer.resync_needed(),
                    Err(e) => panic!("{e}"),
                },
                PrimaryEvent::Durable(lsn) => *released = (*released).max(lsn),
                PrimaryEvent::Received(lsn) => *received = (*received).max(lsn),
                PrimaryEvent::Degrade { .. } => peer.degraded(),
                PrimaryEvent::InSync => {}
                PrimaryEvent::Fence(epoch) => p.observe_epoch(epoch).unwrap(),
                PrimaryEvent::StartResync => {
                    // The copy starts at the log's last LSN, held from there on.
                    let pos = p.log_pos_after(p.last_lsn()).unwrap();
                    p.set_retention(Some(pos));
                    peer.resync_started(pos.lsn - 1, p.resync_plan().unwrap());
                }
            }
        }
        // The retention floor follows the standby, as the driver moves it.
        if let Some(keep) = peer.retention_lsn() {
            if let Ok(pos) = p.log_pos_after(keep) {
                p.set_retention(Some(pos));
            }
        }
        if let Some(l) = link.as_mut() {
            // The network delivers some of what is in flight, in order.
            for _ in 0..rng.below(4) {
                if let Some(b) = wire.to_standby.pop_front() {
                    l.receive(decode(&b));
                    progress = true;
                }
            }
            while let Some(ev) = l.poll_event() {
                progress = true;
                match ev {
                    StandbyEvent::AdoptEpoch(e) => s.observe_epoch(e).unwrap(),
                    StandbyEvent::Grow(blocks) => s.follow_capacity(blocks).unwrap(),
                    StandbyEvent::Apply(recs) => {
                        let last = recs.last().map_or(0, |r| r.lsn);
                        s.apply_replicated(
                            &recs
                                .into_iter()
                                .map(ShippedRecord::from)
                                .collect::<Vec<_>>(),
                        )
                        .unwrap();
                        // In its log, not synced: acknowledged as received at once.
                        l.applied(last);
                    }
                    StandbyEvent::Sync => wire.sync_due = true,
                    StandbyEvent::ResyncBegin { .. } => s.begin_resync().unwrap(),
                    StandbyEvent::ResyncExtent { lba, blocks, data } => s
                        .apply_resync_extent(lba, u64::from(blocks), data.as_deref())
                        .unwrap(),
                    StandbyEvent::ResyncEnd { start_lsn, .. } => {
                        s.resync_copied(start_lsn).unwrap()
                    }
                    StandbyEvent::ResyncComplete => {
                        s.finish_resync().unwrap();
                    }
                }
            }
            // The standby's sync runs at this step or a later one (deferred at random).
            if wire.sync_due && rng.below(4) != 0 {
                wire.sync_due = false;
                let d = s.sync_applied().unwrap();
                l.synced(d);
                progress = true;
            }
            while let Some(f) = l.poll_frame() {
                wire.to_primary.push_back(encode(&f));
                progress = true;
            }
            if l.close_reason().is_some() {
                *link = None;
                wire.sync_due = false;
                peer.disconnected();
            }
            for _ in 0..rng.below(4) {
                if let Some(b) = wire.to_primary.pop_front() {
                    peer.receive(decode(&b), now);
                    progress = true;
                }
            }
        }
        if !progress {
            break;
        }
    }
}

#[test]
fn every_acknowledged_flush_survives_a_failover() {
    let seeds: u64 = std::env::var("TANDEM_REPL_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut t = Tally::default();
    let first: u64 = std::env::var("TANDEM_REPL_FIRST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    for seed in first..first + seeds {
        run(seed, &mut t);
    }
    println!(
        "replication simulation: {seeds} seeds, {} failovers to an in-sync standby checked ({} of them after a kill of the primary alone, with every completed write checked), {} acknowledged flushes, {} completed plain writes, {} standbys declared out of sync, {} standby crashes outside a resync; full resyncs: {} begun, {} completed, {} standby crashes and {} primary crashes during one; {} settled images compared equal; {} snapshots on promoted standbys compared with the primary's",
        t.failovers, t.completed_checked, t.flushes, t.writes_completed, t.degraded, t.standby_crashes, t.resyncs, t.resyncs_done,
        t.standby_crashes_mid_resync, t.primary_crashes_mid_resync, t.compared,
        t.snapshots_compared
    );
    assert!(
        t.completed_checked * 8 >= seeds,
        "too few failovers after a kill of the primary alone"
    );
    assert!(
        t.writes_completed >= seeds,
        "too few plain writes completed"
    );
    assert!(
        t.standby_crashes >= seeds,
        "too few standby crashes outside a resync"
    );
    assert!(t.failovers * 4 >= seeds, "too few failovers exercised");
    assert!(t.flushes >= seeds, "too few flushes acknowledged");
    assert!(
        t.degraded * 20 >= seeds,
        "too few standbys fell out of sync"
    );
    assert!(t.resyncs * 8 >= seeds, "too few full resyncs");
    assert!(
        t.resyncs_done * 20 >= seeds,
        "too few full resyncs completed"
    );
    assert!(
        t.standby_crashes_mid_resync * 50 >= seeds,
        "too few standby crashes mid-resync"
    );
    assert!(
        t.primary_crashes_mid_resync * 50 >= seeds,
        "too few primary crashes mid-resync"
    );
    assert!(t.compared * 5 >= seeds, "too few settled images compared");
    assert!(
        t.snapshots_compared >= seeds,
        "too few snapshots compared on promoted standbys"
    );
}
