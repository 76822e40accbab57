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
//! primary that learns of a newer epoch serves nothing.
//!
//! `TANDEM_REPL_SEEDS` sets how many seeds run (default 2000, a few seconds).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use blockstore::engine::{create, CreateOptions, Engine, OpenOptions};
use blockstore::repl::frame::{self, Frame, Record};
use blockstore::repl::primary::{PrimaryConfig, PrimaryEvent, PrimaryPeer, SyncState};
use blockstore::repl::standby::{StandbyConfig, StandbyEvent, StandbyLink};
use blockstore::replica::ShippedRecord;
use blockstore::sim::{SimRng, SimStorage};
use blockstore::testkit::{identify, write_data};
use blockstore::{AccessState, Error, Role};

const BS: usize = 512;
const BLOCKS: u64 = 48;

fn quiet() -> OpenOptions {
    OpenOptions {
        background_flusher: false,
        ..OpenOptions::default()
    }
}

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

/// Frames in flight, each through the real codec.
#[derive(Default)]
struct Wire {
    to_standby: VecDeque<Vec<u8>>,
    to_primary: VecDeque<Vec<u8>>,
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

/// What the hosts were told: for each block, the writes in order (0 = zeros), and the index of
/// the last one covered by an acknowledged flush.
#[derive(Default)]
struct Model {
    history: HashMap<u64, Vec<u64>>,
    acked: HashMap<u64, usize>,
}

impl Model {
    fn wrote(&mut self, lba: u64, id: u64) {
        self.history.entry(lba).or_insert_with(|| vec![0]).push(id);
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
    let s = Engine::open(&sd, quiet()).unwrap();
    let cfg = PrimaryConfig {
        volume_uuid: p.uuid(),
        node_id: [1; 16],
        block_size: BS as u32,
        capacity_blocks: BLOCKS,
        // Short, so that standbys fall out of sync and catch up again within a run.
        timeout: Duration::from_secs(1),
    };
    let scfg = StandbyConfig {
        volume_uuid: s.uuid(),
        node_id: [2; 16],
        block_size: BS as u32,
        capacity_blocks: BLOCKS,
    };
    let mut peer = PrimaryPeer::new(cfg, p.role_state().epoch, SyncState::InSync);
    let mut link: Option<StandbyLink> = None;
    let mut wire = Wire::default();
    let mut model = Model::default();
    let mut pending: Vec<Flush> = Vec::new();
    let mut released = 0u64;
    // The standby owes a barrier a sync: it runs at a random later point, as a real fsync
    // takes time while frames keep arriving.
    let mut sync_due = false;
    let mut next_id = 1u64;
    let mut acked_flushes = 0u64;
    let mut degraded = 0u64;
    let steps = 60 + rng.below(120);
    for _ in 0..steps {
        now += Duration::from_millis(1 + rng.below(400));
        // Connection management: the primary dials when no connection is up.
        if link.is_none() && rng.below(4) == 0 {
            wire = Wire::default();
            sync_due = false;
            peer.connected();
            let durable = s.sync_applied().unwrap();
            link = Some(StandbyLink::new(scfg, s.role_state().epoch, durable));
        }
        match rng.below(10) {
            0..=4 => {
                let lba = rng.below(BLOCKS - 2);
                let n = 1 + rng.below(2);
                let id = next_id;
                next_id += 1;
                p.write(lba, &write_data(id, lba, n, BS), false).unwrap();
                for b in lba..lba + n {
                    model.wrote(b, id);
                }
                peer.log_grew();
            }
            5 => {
                let lba = rng.below(BLOCKS);
                p.trim(lba, 1).unwrap();
                model.wrote(lba, 0);
                peer.log_grew();
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
            // The network drops the connection.
            8 if link.is_some() && rng.below(3) == 0 => {
                link = None;
                peer.disconnected();
            }
            _ => {}
        }
        pump(
            &p,
            &s,
            &mut peer,
            &mut link,
            &mut wire,
            &mut rng,
            now,
            &mut released,
            &mut sync_due,
        );
        let before = peer.sync_state();
        peer.handle_timeout(now);
        degraded +=
            u64::from(before == SyncState::InSync && peer.sync_state() != SyncState::InSync);
        pump(
            &p,
            &s,
            &mut peer,
            &mut link,
            &mut wire,
            &mut rng,
            now,
            &mut released,
            &mut sync_due,
        );
        // The primary's group commit: one log sync covers every flush begun so far.
        if pending.iter().any(|f| !f.local) && rng.below(2) == 0 {
            p.flush().unwrap();
            for f in &mut pending {
                f.local = true;
            }
        }
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
        if rng.below(60) == 0 {
            break;
        }
    }
    // The primary dies (its unsynced writes are lost); the standby is promoted if in sync.
    drop(link);
    let promoted_in_sync = peer.sync_state() == SyncState::InSync;
    let sd2 = sd.crash(&mut rng);
    drop(s);
    let s = Engine::open(&sd2, quiet()).unwrap();
    if promoted_in_sync {
        s.promote().unwrap();
        let image = s.read(0, BLOCKS).unwrap();
        model.check(&image, &format!("seed {seed}: promoted standby"));
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
    sync_due: &mut bool,
) {
    for _ in 0..64 {
        let mut progress = false;
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
                PrimaryEvent::Degrade { .. } => peer.degraded(),
                PrimaryEvent::InSync => {}
                PrimaryEvent::Fence(epoch) => p.observe_epoch(epoch).unwrap(),
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
                    StandbyEvent::Apply(recs) => s
                        .apply_replicated(
                            &recs
                                .into_iter()
                                .map(ShippedRecord::from)
                                .collect::<Vec<_>>(),
                        )
                        .unwrap(),
                    StandbyEvent::Sync => *sync_due = true,
                    other => panic!("no resync expected here: {other:?}"),
                }
            }
            if *sync_due && rng.below(2) == 0 {
                *sync_due = false;
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
                *sync_due = false;
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
    for seed in 0..seeds {
        run(seed, &mut t);
    }
    println!(
        "replication simulation: {seeds} seeds, {} failovers to an in-sync standby checked, {} acknowledged flushes, {} standbys declared out of sync",
        t.failovers, t.flushes, t.degraded
    );
    assert!(t.failovers * 4 >= seeds, "too few failovers exercised");
    assert!(t.flushes >= seeds, "too few flushes acknowledged");
    assert!(
        t.degraded * 20 >= seeds,
        "too few standbys fell out of sync"
    );
}
